"""The one decoder-only transformer. Llama-3.x, Qwen-2.5 and Gemma-2 are configurations of it (see families/).

Dimension letters in einsum strings and shape comments:
  B batch, T query positions, S key positions, D hidden size, V vocabulary, F MLP width,
  N query heads, K key/value heads, G query heads per kv head (N = K * G), H head dim, L layers,
  X tokens of a flattened [B*T] batch. Projections run on flattened tokens: XLA:CPU's backward pass of a matmul
  with two free batch dims measured 3x slower than with one, and the reshape is free on TPU.

Layer weights are stored stacked with a leading L axis whether or not the layers are scanned, so checkpoints do not
depend on the `scan_layers` option.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusejax.models.config import ModelConfig, RopeScaling, RuntimeOptions
from fusejax.models.splash import SplashMask, splash_attention
from fusejax.models.xla_attention import dot_product_attention
from fusejax.sharding import constrain


def _init_param(rngs: nnx.Rngs, shape, axes, dtype, std: float | None) -> nnx.Param:
    """A parameter with its logical axis names; std None means a norm weight (initialised to zero or one later)."""
    if std is None:
        value = jnp.zeros(shape, dtype)
    else:
        value = (std * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, logical_axes=tuple(axes))


def _stacked(stack: int | None, shape, axes):
    if stack is None:
        return tuple(shape), tuple(axes)
    return (stack, *shape), ("layers", *axes)


class RMSNorm(nnx.Module):
    """RMSNorm in float32; Gemma-2 scales by (1 + w), others by w."""

    def __init__(self, dim: int, *, eps: float, plus_one: bool, dtype, stack: int | None = None):
        shape, axes = _stacked(stack, (dim,), ("norm",))
        init = jnp.zeros if plus_one else jnp.ones
        self.weight = nnx.Param(init(shape, dtype), logical_axes=axes)
        self.eps = eps
        self.plus_one = plus_one

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        w = self.weight[...].astype(jnp.float32)
        if self.plus_one:
            w = 1.0 + w
        return (y * w).astype(x.dtype)


class Proj(nnx.Module):
    """A projection weight (and optional bias) with named axes; the einsum lives in the caller."""

    def __init__(self, shape, axes, *, in_dims=1, bias_dims=0, dtype, stack: int | None, rngs: nnx.Rngs):
        fan_in = math.prod(shape[:in_dims])
        kshape, kaxes = _stacked(stack, shape, axes)
        self.kernel = _init_param(rngs, kshape, kaxes, dtype, std=fan_in**-0.5)
        if bias_dims:
            bshape, baxes = _stacked(stack, shape[-bias_dims:], axes[-bias_dims:])
            self.bias = nnx.Param(jnp.zeros(bshape, dtype), logical_axes=baxes)
        else:
            self.bias = None


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, opts: RuntimeOptions, *, stack: int | None, rngs: nnx.Rngs):
        D, N, K, H = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        dt = jnp.dtype(opts.param_dtype)
        nb = 2 if cfg.qkv_bias else 0
        self.q_proj = Proj((D, N, H), ("embed", "q_heads", "head_dim"), bias_dims=nb, dtype=dt, stack=stack, rngs=rngs)
        self.k_proj = Proj((D, K, H), ("embed", "kv_heads", "head_dim"), bias_dims=nb, dtype=dt, stack=stack, rngs=rngs)
        self.v_proj = Proj((D, K, H), ("embed", "kv_heads", "head_dim"), bias_dims=nb, dtype=dt, stack=stack, rngs=rngs)
        self.o_proj = Proj((N, H, D), ("q_heads", "head_dim", "embed"), in_dims=2, dtype=dt, stack=stack, rngs=rngs)
        self.num_kv_heads = K
        self.head_dim = H
        self.scale = cfg.attention_scale
        self.softcap = cfg.attn_logit_softcap
        self.cdtype = jnp.dtype(opts.compute_dtype)
        self.query_chunk = opts.attention_query_chunk
        self.attention = opts.attention
        self.splash_block = opts.splash_block
        self.sliding_window = cfg.sliding_window

    def _project(self, proj: Proj, x: jax.Array, eq: str) -> jax.Array:
        y = jnp.einsum(eq, x, proj.kernel[...].astype(self.cdtype))  # x [X,D] -> [X,heads,H]
        if proj.bias is not None:
            y = y + proj.bias[...].astype(self.cdtype)
        return y

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B,T,D]; cos, sin [B,T,H] float32; mask [B,T,S] bool (True = may attend), or with attention=splash
        a SplashMask (the kernel builds its masks from segment ids and the layer's window)."""
        B, T, D = x.shape
        xf = x.reshape(B * T, D)
        q = self._project(self.q_proj, xf, "XD,DNH->XNH").reshape(B, T, -1, self.head_dim)
        k = self._project(self.k_proj, xf, "XD,DKH->XKH").reshape(B, T, -1, self.head_dim)
        v = self._project(self.v_proj, xf, "XD,DKH->XKH").reshape(B, T, -1, self.head_dim)
        q = constrain(apply_rope(q, cos, sin), ("batch", "seq", "act_heads", None))
        k = constrain(apply_rope(k, cos, sin), ("batch", "seq", "act_heads", None))
        if self.attention == "splash":  # mask is a SplashMask (segment ids, this layer's window)
            out = splash_attention(q, k, v, mask.segment_ids, mask.window, scale=self.scale, softcap=self.softcap,
                                   sliding_window=self.sliding_window, block=self.splash_block)  # [B,T,N,H]
            out = jnp.einsum("XNH,NHD->XD", out.reshape(B * T, -1, self.head_dim),
                             self.o_proj.kernel[...].astype(self.cdtype))
            return out.reshape(B, T, D)
        K = self.num_kv_heads
        q = q.reshape(B, T, K, q.shape[2] // K, q.shape[3])  # [B,T,K,G,H]
        C = self.query_chunk
        if C and T > C and T % C == 0:
            # Query blocks under jax.checkpoint: float32 scores exist for one block of C queries at a time, in the
            # forward and the backward pass ([B,K,G,C,S] instead of [B,K,G,T,S]).
            qc = jnp.moveaxis(q.reshape(B, T // C, C, *q.shape[2:]), 1, 0)  # [T/C,B,C,K,G,H]
            mc = jnp.moveaxis(mask.reshape(B, T // C, C, mask.shape[-1]), 1, 0)  # [T/C,B,C,S]
            block = jax.checkpoint(lambda xs: self._attend(xs[0], k, v, xs[1]))
            out = jnp.moveaxis(jax.lax.map(block, (qc, mc)), 0, 1).reshape(B, T, *q.shape[2:])
        else:
            out = self._attend(q, k, v, mask)
        out = out.reshape(B * T, -1, self.head_dim)  # [X,N,H]
        out = jnp.einsum("XNH,NHD->XD", out, self.o_proj.kernel[...].astype(self.cdtype))
        return out.reshape(B, T, D)

    def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
        """q [B,T,K,G,H], k/v [B,S,K,H], mask [B,T,S] -> [B,T,K,G,H]; float32 scores and softmax."""
        return dot_product_attention(q, k, v, mask, scale=self.scale, softcap=self.softcap)


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, opts: RuntimeOptions, *, stack: int | None, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        dt = jnp.dtype(opts.param_dtype)
        self.gate_proj = Proj((D, F), ("embed", "mlp"), dtype=dt, stack=stack, rngs=rngs)
        self.up_proj = Proj((D, F), ("embed", "mlp"), dtype=dt, stack=stack, rngs=rngs)
        self.down_proj = Proj((F, D), ("mlp", "embed"), dtype=dt, stack=stack, rngs=rngs)
        self.activation = cfg.activation
        self.cdtype = jnp.dtype(opts.compute_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.cdtype
        B, T, D = x.shape
        xf = x.reshape(B * T, D)
        gate = jnp.einsum("XD,DF->XF", xf, self.gate_proj.kernel[...].astype(c))
        up = jnp.einsum("XD,DF->XF", xf, self.up_proj.kernel[...].astype(c))
        act = jax.nn.silu(gate) if self.activation == "silu" else jax.nn.gelu(gate, approximate=True)
        h = constrain(act * up, ("batch", "act_mlp"))
        return jnp.einsum("XF,FD->XD", h, self.down_proj.kernel[...].astype(c)).reshape(B, T, D)


class DecoderLayer(nnx.Module):
    """Pre-norm block; Gemma-2 adds norms on the attention and MLP outputs (`post_norms`).

    Norm names follow Gemma-2's HF names, the superset: note that Llama's HF `post_attention_layernorm` is the norm
    *before* the MLP and maps to our `pre_feedforward_layernorm` (see the families' key tables).
    """

    def __init__(self, cfg: ModelConfig, opts: RuntimeOptions, *, stack: int | None, rngs: nnx.Rngs):
        norm = dict(eps=cfg.rms_norm_eps, plus_one=cfg.norm_plus_one, dtype=jnp.dtype(opts.param_dtype), stack=stack)
        self.input_layernorm = RMSNorm(cfg.hidden_size, **norm)
        self.self_attn = Attention(cfg, opts, stack=stack, rngs=rngs)
        self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, **norm)
        self.mlp = MLP(cfg, opts, stack=stack, rngs=rngs)
        if cfg.post_norms:
            self.post_attention_layernorm = RMSNorm(cfg.hidden_size, **norm)
            self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, **norm)
        else:
            self.post_attention_layernorm = None
            self.post_feedforward_layernorm = None

    def __call__(self, x, cos, sin, mask):
        h = self.self_attn(self.input_layernorm(x), cos, sin, mask)
        if self.post_attention_layernorm is not None:
            h = self.post_attention_layernorm(h)
        x = constrain(x + h, ("batch", "seq", "act_embed"))
        h = self.mlp(self.pre_feedforward_layernorm(x))
        if self.post_feedforward_layernorm is not None:
            h = self.post_feedforward_layernorm(h)
        return constrain(x + h, ("batch", "seq", "act_embed"))


class Transformer(nnx.Module):
    """Decoder-only LM. `model(input_ids)` -> float32 logits [B,T,V]."""

    def __init__(self, config: ModelConfig, options: RuntimeOptions = RuntimeOptions(), *, rngs: nnx.Rngs):
        cfg, dt = config, jnp.dtype(options.param_dtype)
        self.config = cfg
        self.options = options
        self.embed_tokens = _init_param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), dt, std=1.0)
        self.layers = DecoderLayer(cfg, options, stack=cfg.num_layers, rngs=rngs)
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, plus_one=cfg.norm_plus_one, dtype=dt)
        if cfg.tie_embeddings:
            self.lm_head = None
        else:
            self.lm_head = _init_param(
                rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), dt, std=cfg.hidden_size**-0.5
            )

    def __call__(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        *,
        return_hidden: bool = False,
    ) -> jax.Array:
        """input_ids [B,T] int -> logits [B,T,V] float32 (or final hidden states [B,T,D] with return_hidden).

        segment_ids [B,T] (packed rows): tokens attend only within their segment; 0 marks padding. Without explicit
        positions, positions restart at 0 at each segment start.
        """
        cfg, cdtype = self.config, jnp.dtype(self.options.compute_dtype)
        B, T = input_ids.shape
        if segment_ids is None:
            segment_ids = jnp.ones((B, T), jnp.int32)
        if positions is None:
            positions = positions_from_segments(segment_ids)
        x = jnp.take(self.embed_tokens[...].astype(cdtype), input_ids, axis=0)
        if cfg.scale_embeddings:
            x = x * jnp.asarray(math.sqrt(cfg.hidden_size), cdtype)
        x = constrain(x, ("batch", "seq", "act_embed"))
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)

        idx = jnp.arange(T)
        causal = idx[:, None] >= idx[None, :]  # [T,S]
        base_mask = causal[None] & (segment_ids[:, :, None] == segment_ids[:, None, :])  # [B,T,S]
        distance = idx[:, None] - idx[None, :]
        windows = jnp.asarray(cfg.layer_windows(), jnp.int32)

        graphdef, layer_state = nnx.split(self.layers)

        def body(h, xs):
            state, window = xs
            layer = nnx.merge(graphdef, state)
            if self.options.attention == "splash":
                mask = SplashMask(segment_ids, window)
            else:
                mask = base_mask & ((window == 0) | (distance < window))[None]
            return layer(h, cos, sin, mask), None

        policy = {
            "none": None,
            "full": jax.checkpoint_policies.nothing_saveable,
            "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        }[self.options.remat]
        if self.options.remat != "none":
            body = jax.checkpoint(body, policy=policy, prevent_cse=not self.options.scan_layers)
        if self.options.scan_layers:
            x, _ = jax.lax.scan(body, x, (layer_state, windows))
        else:
            for i in range(cfg.num_layers):
                x, _ = body(x, (jax.tree.map(lambda a: a[i], layer_state), windows[i]))
        x = self.norm(x)
        if return_hidden:
            return x
        return self.logits(x)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final hidden states [..., D] -> float32 logits [..., V] (with Gemma-2's final soft-cap)."""
        cdtype = jnp.dtype(self.options.compute_dtype)
        if self.lm_head is None:
            w = self.embed_tokens[...].astype(cdtype).T  # [D,V]
        else:
            w = self.lm_head[...].astype(cdtype)
        lead = hidden.shape[:-1]
        flat = hidden.reshape(-1, hidden.shape[-1]).astype(cdtype)
        logits = jnp.einsum("XD,DV->XV", flat, w, preferred_element_type=jnp.float32).reshape(*lead, -1)
        if self.config.final_logit_softcap is not None:
            cap = self.config.final_logit_softcap
            logits = jnp.tanh(logits / cap) * cap
        return logits


def positions_from_segments(segment_ids: jax.Array) -> jax.Array:
    """[B,T] segment ids -> [B,T] positions that restart at 0 where the segment id changes."""
    T = segment_ids.shape[1]
    idx = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), segment_ids.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
    """Inverse frequencies [H/2] float32, with Llama-3 frequency scaling when given (as HF computes them)."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / (np.float32(theta) ** exponent)).astype(np.float32)
    if scaling is None:
        return inv_freq
    old_len = scaling.original_max_position_embeddings
    low_wavelen = old_len / scaling.low_freq_factor
    high_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float, scaling: RopeScaling | None):
    """positions [B,T] -> cos, sin [B,T,H] float32 (rotate-half layout, as HF)."""
    inv_freq = jnp.asarray(rope_inv_freq(head_dim, theta, scaling))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,H/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B,T,heads,H]; rotate-half RoPE computed in float32."""
    xf = x.astype(jnp.float32)
    half = xf.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos[:, :, None] + rotated * sin[:, :, None]).astype(x.dtype)
