"""Masked dot-product attention for the XLA path, with a hand-written backward pass.

The forward is plain attention with float32 scores and softmax. The backward is the textbook one (as in flash
attention): dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)), dQ = dS K, dK = dS^T Q, with every product a
3-D batched matmul over [B*K, G*T, H] (kv heads and batch folded into one batch dim, the G query heads of a group
stacked along the query axis). Autodiff of the 5-D einsums produced transposed, two-batch-dim dot products that
XLA:CPU ran about 1.6x slower; on TPU both forms lower to the same MXU matmuls.

Dimension letters: B batch, T queries, S keys, K kv heads, G query heads per kv head, H head dim,
Y = B*K (folded batch), Q = G*T (stacked queries).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, scale: float,
                          softcap: float | None = None) -> jax.Array:
    """q [B,T,K,G,H], k/v [B,S,K,H], mask [B,T,S] bool (True = may attend) -> [B,T,K,G,H] in q's dtype.

    Scores and softmax in float32 (Gemma-2's tanh soft-cap applied to the scaled scores when `softcap` is set);
    the probabilities are cast to the compute dtype before the product with V.
    """
    B, T, K, G, H = q.shape
    S = k.shape[1]
    qf = jnp.transpose(q, (0, 2, 3, 1, 4)).reshape(B * K, G * T, H)  # [Y,Q,H]
    kf = jnp.transpose(k, (0, 2, 1, 3)).reshape(B * K, S, H)  # [Y,S,H]
    vf = jnp.transpose(v, (0, 2, 1, 3)).reshape(B * K, S, H)
    out = _attention(qf, kf, vf, mask, scale, softcap)  # [Y,Q,H]
    return jnp.transpose(out.reshape(B, K, G, T, H), (0, 3, 1, 2, 4))


def _scores(qf, kf, scale, softcap):
    s = jnp.einsum("YQH,YSH->YQS", qf, kf, preferred_element_type=jnp.float32) * scale
    if softcap is not None:
        s = jnp.tanh(s / softcap) * softcap
    return s


def _masked(s, mask):
    """s [Y,Q,S] with Y = B*K, Q = G*T; mask [B,T,S] broadcast over K and G without materialising it."""
    B, T, S = mask.shape
    Y, Q, _ = s.shape
    s5 = s.reshape(B, Y // B, Q // T, T, S)
    return jnp.where(mask[:, None, None], s5, MASK_VALUE).reshape(Y, Q, S)


def _forward(qf, kf, vf, mask, scale, softcap):
    probs = jax.nn.softmax(_masked(_scores(qf, kf, scale, softcap), mask), axis=-1)  # [Y,Q,S] float32
    out = jnp.einsum("YQS,YSH->YQH", probs.astype(vf.dtype), vf)
    return out, probs


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(qf, kf, vf, mask, scale, softcap):
    return _forward(qf, kf, vf, mask, scale, softcap)[0]


def _attention_fwd(qf, kf, vf, mask, scale, softcap):
    out, probs = _forward(qf, kf, vf, mask, scale, softcap)
    return out, (qf, kf, vf, mask, probs, out)


def _attention_bwd(scale, softcap, res, d_out):
    qf, kf, vf, mask, probs, out = res
    c = vf.dtype
    dv = jnp.einsum("YQS,YQH->YSH", probs.astype(c), d_out)
    dp = jnp.einsum("YQH,YSH->YQS", d_out, vf, preferred_element_type=jnp.float32)
    # rowsum(P * dP) = rowsum(dO * O): a [Y,Q,H] reduction instead of one over [Y,Q,S].
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = probs * (dp - delta)  # gradient w.r.t. the (capped) scores; zero where masked since probs is
    if softcap is not None:
        t = jnp.tanh(jnp.einsum("YQH,YSH->YQS", qf, kf, preferred_element_type=jnp.float32) * (scale / softcap))
        ds = ds * (1.0 - t * t)
    ds = (ds * scale).astype(c)
    dq = jnp.einsum("YQS,YSH->YQH", ds, kf)
    dk = jnp.einsum("YQS,YQH->YSH", ds, qf)
    return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)
