"""The XLA attention's hand-written backward pass against autodiff of independent references:
jax.nn.dot_product_attention (GQA, masks) and, for Gemma-2's soft-cap, plain einsum attention written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusejax.models.xla_attention import dot_product_attention


def _inputs(seed, B=2, T=24, S=24, K=2, G=3, H=16):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(B, T, K, G, H)), jnp.float32)
    k = jnp.asarray(r.normal(size=(B, S, K, H)), jnp.float32)
    v = jnp.asarray(r.normal(size=(B, S, K, H)), jnp.float32)
    seg = np.sort(r.integers(1, 3, (B, S)), axis=1)  # two packed segments per row
    mask = np.tril(np.ones((T, S), bool))[None] & (seg[:, :T, None] == seg[:, None, :])
    w = jnp.asarray(r.normal(size=(B, T, K, G, H)), jnp.float32)  # a random cotangent
    return q, k, v, jnp.asarray(mask), w


def _value_and_grads(fn, q, k, v, w):
    return jax.value_and_grad(lambda q, k, v: (fn(q, k, v) * w).sum(), argnums=(0, 1, 2))(q, k, v)


def _assert_close(ours, ref):
    (a, ga), (b, gb) = ours, ref
    assert float(a) == pytest.approx(float(b), rel=1e-5)
    for x, y, name in zip(ga, gb, "qkv"):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-5, rtol=1e-4, err_msg=f"d{name}")


def test_matches_jax_dot_product_attention_with_gqa_and_segment_masks():
    q, k, v, mask, w = _inputs(0)
    B, T, K, G, H = q.shape
    scale = 0.3

    def ref(q, k, v):
        out = jax.nn.dot_product_attention(q.reshape(B, T, K * G, H), k, v, mask=mask[:, None], scale=scale,
                                           implementation="xla")
        return out.reshape(B, T, K, G, H)

    ours = _value_and_grads(lambda q, k, v: dot_product_attention(q, k, v, mask, scale=scale), q, k, v, w)
    _assert_close(ours, _value_and_grads(ref, q, k, v, w))


def test_soft_cap_and_fewer_queries_than_keys():
    q, k, v, mask, w = _inputs(1, T=8, S=24)
    mask = jnp.ones_like(mask).at[:, :, 20:].set(False)  # a query block that sees some of the keys
    scale, cap = 0.4, 2.0

    def ref(q, k, v):
        s = jnp.einsum("BTKGH,BSKH->BKGTS", q, k) * scale
        s = jnp.where(mask[:, None, None], jnp.tanh(s / cap) * cap, -1e30)
        return jnp.einsum("BKGTS,BSKH->BTKGH", jax.nn.softmax(s, axis=-1), v)

    ours = _value_and_grads(lambda q, k, v: dot_product_attention(q, k, v, mask, scale=scale, softcap=cap),
                            q, k, v, w)
    _assert_close(ours, _value_and_grads(ref, q, k, v, w))
