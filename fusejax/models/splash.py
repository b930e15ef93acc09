"""Splash attention (the Pallas TPU flash-attention kernel) for the decoder: `RuntimeOptions(attention="splash")`.

Same semantics as the XLA path in transformer.py (causal, within a segment, optional sliding window, Gemma-2's
logit soft-cap and scale), without ever materialising [T, S] scores: per-device attention memory drops from
O(heads * T^2) float32 to the blocks in VMEM.

How it maps onto the kernel:
- the kernel takes one example [heads, T, H] and native GQA (query heads a multiple of kv heads); we vmap it over
  the batch and run it under `jax.shard_map` with the batch on the mesh's batch axes and heads on `tensor`;
- it has no scale argument: q is multiplied by the scale first (Gemma-2: query_pre_attn_scalar ** -0.5);
- masks are static, the layer scan's window is traced: a layer that may slide selects a local or a global kernel
  with `lax.cond` (Gemma-2 alternates them). The window W allows keys t-W < s <= t, i.e. `LocalMask((W - 1, 0))`
  (its left bound is inclusive);
- when the `tensor` axis does not divide the kv heads, kv heads are repeated until it does (a shard of query heads
  must see exactly its own kv heads; replicated kv with sharded q gives wrong results);
- segment ids: tokens attend within their segment; padding (segment 0) attends to padding, so no row is empty
  (an all-masked row would give NaN).

Off TPU (tests, CPU) the kernel runs in Pallas' interpret mode: slow, but the same code and numerics.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
from jax.sharding import PartitionSpec as P

from fusejax.sharding import logical_to_spec

BLOCK_CHOICES = (1024, 512, 256, 128)


class SplashMask(NamedTuple):
    """What the splash path gets instead of a dense [B,T,S] mask: the kernel builds its masks itself."""

    segment_ids: jax.Array  # [B,T] int; tokens attend within their segment
    window: jax.Array | int  # this layer's sliding window, 0 = full attention (traced in the layer scan)


def block_size(T: int, largest: int = 512) -> int:
    """The kernel's block size for sequence length T: the largest of 1024/512/256/128 not above `largest` dividing T.

    Sequences shorter than 128 use one block of T (fine for the kernel: a block may span a whole dimension).
    """
    for b in BLOCK_CHOICES:
        if b <= largest and T % b == 0:
            return b
    if T < 128:
        return T
    raise ValueError(f"model.attention=splash: sequence length {T} is not a multiple of 128; set data.max_length "
                     "to a multiple of 128 or use model.attention=xla")


def _kernel(T: int, heads: int, window: int, softcap: float | None, block: int, interpret: bool):
    """A splash kernel for one example: q [heads,T,H], k/v [kv_heads,T,H]; window 0 = full causal attention.

    Built at trace time and not cached: its mask-info arrays become constants of the trace that builds it."""
    if window:
        mask = sm.LocalMask((T, T), window_size=(window - 1, 0), offset=0)  # keys t-W < s <= t
    else:
        mask = sm.CausalMask((T, T))
    blocks = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                           block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    return sk.make_splash_mha(sm.MultiHeadMask([mask] * heads), block_sizes=blocks, head_shards=1, q_seq_shards=1,
                              attn_logits_soft_cap=softcap, interpret=interpret)


def _on_tpu() -> bool:
    """Whether this trace targets TPUs: the mesh's devices (TPU topologies compile on a CPU host), else the backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else mesh.abstract_device
    if device is not None:
        return device.platform == "tpu"
    return jax.default_backend() == "tpu"


def _local_attention(q, k, v, segment_ids, *, window: int, softcap, block: int, interpret: bool):
    """One device's share: q [b,T,n,H], k/v [b,T,k,H], segment_ids [b,T] -> [b,T,n,H]."""
    T, n = q.shape[1], q.shape[2]
    kernel = _kernel(T, n, window, softcap, block, interpret)
    heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  [b,T,h,H] <-> [b,h,T,H]
    one = lambda q1, k1, v1, s1: kernel(q1, k1, v1, sk.SegmentIds(q=s1, kv=s1))  # noqa: E731
    out = jax.vmap(one)(heads_first(q), heads_first(k), heads_first(v), segment_ids)
    return heads_first(out)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, window: jax.Array | int, *,
                     scale: float, softcap: float | None, sliding_window: int | None, block: int = 512,
                     interpret: bool | None = None) -> jax.Array:
    """Causal attention within segments, optionally windowed, with the splash kernel.

    q [B,T,N,H], k/v [B,T,K,H] (N a multiple of K), segment_ids [B,T] int, window: this layer's window (0 = full;
    may be traced, e.g. the layer scan's) -> [B,T,N,H] in q's dtype. `sliding_window` is the model's window, the
    only non-zero value `window` can take. Runs under the mesh set with `jax.set_mesh` (if any).
    """
    B, T, N, H = q.shape
    K = k.shape[2]
    if k.shape[1] != T:
        raise ValueError(f"splash attention: keys ({k.shape[1]}) and queries ({T}) must have the same length")
    blk = block_size(T, block)
    if interpret is None:
        interpret = not _on_tpu()
    q = (q.astype(jnp.float32) * scale).astype(q.dtype)  # the kernel has no scale argument
    segment_ids = segment_ids.astype(jnp.int32)

    mesh = jax.sharding.get_abstract_mesh()
    sharded = not mesh.empty and mesh.size > 1
    if sharded:
        batch_axes = logical_to_spec(("batch",), (B,), mesh)[0]
        head_axes = logical_to_spec(("act_heads",), (N,), mesh)[0]
        if head_axes is not None:
            tp = math.prod(mesh.shape[a] for a in ((head_axes,) if isinstance(head_axes, str) else head_axes))
            if K % tp:
                # Repeat kv heads until the tensor axis divides them, keeping q head n -> kv head n // G.
                G = N // K
                rep = tp // math.gcd(K, tp)
                rep = rep if G % rep == 0 else G
                k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
        qspec, sspec = P(batch_axes, None, head_axes, None), P(batch_axes, None)

    def attend(w: int):
        fn = functools.partial(_local_attention, window=w, softcap=softcap, block=blk, interpret=interpret)
        if sharded:
            fn = jax.shard_map(fn, in_specs=(qspec, qspec, qspec, sspec), out_specs=qspec, check_vma=False)
        return fn

    if not sliding_window or sliding_window >= T:
        # A window of at least T keys never excludes a causal key: every layer is global.
        return attend(0)(q, k, v, segment_ids)
    if isinstance(window, (int, np.integer)):
        return attend(window)(q, k, v, segment_ids)
    return jax.lax.cond(window == 0, attend(0), attend(sliding_window), q, k, v, segment_ids)
