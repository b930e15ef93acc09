"""Splash attention (Pallas kernel, interpret mode on CPU) against a plain attention reference and the XLA path.

Each family's attention features: Gemma-2 sliding/global layers with soft-cap and query_pre_attn_scalar, Llama/Qwen
GQA, packed segments with padding, DPO-style padded rows; on one device and on several 8-device meshes, including
tensor parallelism wider than the kv heads. Interpret mode is slow (seconds per call): shapes are the smallest that
still cross kernel blocks (T = 256, blocks of 128, a window of 96).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusejax.models import PRESETS, RuntimeOptions, create_model
from fusejax.models.splash import block_size, splash_attention
from fusejax.sharding import make_mesh

T = 256


def _reference(q, k, v, seg, *, scale, softcap, window):
    """Dense attention written from the definition: q [B,T,N,H], k/v [B,T,K,H]; query head n reads kv head n // G."""
    G = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, G, axis=2), jnp.repeat(v, G, axis=2)
    s = jnp.einsum("btnh,bsnh->bnts", q, k) * scale
    if softcap:
        s = softcap * jnp.tanh(s / softcap)
    t, u = np.arange(q.shape[1])[:, None], np.arange(q.shape[1])[None, :]
    allowed = (u <= t) & ((t - u < window) if window else True)
    allowed = allowed[None] & (seg[:, :, None] == seg[:, None, :])
    s = jnp.where(allowed[:, None], s, -jnp.inf)
    return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(s, axis=-1), v)


def _segments():
    # row 0: two packed examples then padding (segment 0); row 1: one example then padding
    return jnp.asarray([[1] * 100 + [2] * 140 + [0] * 16, [1] * 200 + [0] * 56], jnp.int32)


@pytest.mark.parametrize("window,softcap", [(0, None), (96, 50.0)], ids=["causal", "window96-softcap50"])
def test_kernel_matches_dense_reference(window, softcap):
    r = np.random.default_rng(0)
    q, k, v = (jnp.asarray(r.normal(size=(2, T, n, 64)), jnp.float32) for n in (4, 2, 2))
    seg, scale = _segments(), 24.0**-0.5  # a scale that is not head_dim ** -0.5 (Gemma-2's query_pre_attn_scalar)

    def loss(fn, q, k, v):
        out = fn(q, k, v)
        return (out * jnp.cos(jnp.arange(out.size).reshape(out.shape))).sum(), out

    splash = lambda q, k, v: splash_attention(q, k, v, seg, window, scale=scale, softcap=softcap,  # noqa: E731
                                              sliding_window=96, block=128)
    ref = lambda q, k, v: _reference(q, k, v, seg, scale=scale, softcap=softcap, window=window)  # noqa: E731
    (_, out), grads = jax.jit(jax.value_and_grad(lambda *a: loss(splash, *a), (0, 1, 2), has_aux=True))(q, k, v)
    (_, want), want_grads = jax.value_and_grad(lambda *a: loss(ref, *a), (0, 1, 2), has_aux=True)(q, k, v)
    assert not np.isnan(np.asarray(out)).any(), "padding rows must not give NaN"
    if window:  # the window really excludes keys on this input (a dropped window would fail the comparison)
        full = _reference(q, k, v, seg, scale=scale, softcap=softcap, window=0)
        assert float(jnp.abs(full - want).max()) > 1e-2
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g, w, atol=1e-4 * float(jnp.abs(w).max()), rtol=0)


def test_traced_window_selects_local_or_global_kernel():
    r = np.random.default_rng(1)
    q, k, v = (jnp.asarray(r.normal(size=(1, T, n, 64)), jnp.float32) for n in (2, 1, 1))
    seg = jnp.ones((1, T), jnp.int32)
    fn = jax.jit(lambda w: splash_attention(q, k, v, seg, w, scale=0.125, softcap=None, sliding_window=96,
                                            block=128))
    for w in (0, 96):
        want = _reference(q, k, v, seg, scale=0.125, softcap=None, window=w)
        np.testing.assert_allclose(fn(jnp.int32(w)), want, atol=2e-5, rtol=0)


def test_block_size_and_unsupported_length():
    assert block_size(2048) == 512 and block_size(2048, 1024) == 1024 and block_size(384) == 128
    assert block_size(64) == 64  # shorter than one block: a single block
    with pytest.raises(ValueError, match="not a multiple of 128"):
        block_size(200)


def test_config_carries_attention_and_checks_length():
    from fusejax.models.config import ConfigError
    from fusejax.training.config import load_config

    base = ["model.path=m", "data.train=x.jsonl", "model.attention=splash"]
    cfg = load_config(None, base + ["model.splash_block=256"], check_paths=False)
    opts = cfg.model.runtime_options()
    assert opts.attention == "splash" and opts.splash_block == 256
    with pytest.raises(ConfigError, match="multiple of 128"):
        load_config(None, base + ["data.max_length=2000"], check_paths=False)


# --- the model: xla vs splash --------------------------------------------------------------------------------

def _gemma():
    return PRESETS["gemma2-9b"].replace(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                                        num_heads=4, num_kv_heads=2, head_dim=32, query_pre_attn_scalar=24.0,
                                        sliding_window=96, layer_types=("sliding_attention", "full_attention"))


def _llama():
    return PRESETS["llama3.2-1b"].replace(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                                          num_heads=8, num_kv_heads=2, head_dim=32)


def _qwen():
    return PRESETS["qwen2.5-7b"].replace(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=1,
                                         num_heads=4, num_kv_heads=1, head_dim=32)


_XLA_CACHE: dict = {}


def _xla(name, cfg, ids, seg):
    """The XLA path's logits and gradients on one device (the reference), computed once per case."""
    if name not in _XLA_CACHE:
        _XLA_CACHE[name] = _logits_and_grads(cfg, "xla", ids, seg)
    return _XLA_CACHE[name]


def _logits_and_grads(cfg, attention, ids, seg, mesh=None):
    model = create_model(cfg, RuntimeOptions(attention=attention, splash_block=128), mesh=mesh, seed=3)
    graphdef, state = nnx.split(model)
    w = jnp.cos(jnp.arange(ids.shape[1] * cfg.vocab_size)).reshape(ids.shape[1], -1)

    def loss(state):
        logits = nnx.merge(graphdef, state)(ids, segment_ids=seg)
        return (logits * w).mean(), logits

    fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    if mesh is None:
        (_, logits), grads = fn(state)
    else:
        with jax.set_mesh(mesh):
            (_, logits), grads = fn(state)
    return np.asarray(logits), jax.tree.map(np.asarray, grads)


def _assert_same(got, want):
    np.testing.assert_allclose(got[0], want[0], atol=2e-5, rtol=0)
    named = jax.tree_util.tree_leaves_with_path(got[1])
    assert len(named) == len(jax.tree.leaves(want[1]))
    for (path, g), w in zip(named, jax.tree.leaves(want[1])):
        np.testing.assert_allclose(g, w, atol=1e-4 * max(float(np.abs(w).max()), 1e-3), rtol=0,
                                   err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def inputs():
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 128, (2, T)))
    return ids, _segments()


FAMILIES = {"gemma2": _gemma, "llama": _llama, "qwen2": _qwen}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_model_splash_equals_xla_one_device(family, inputs):
    """Gemma-2 and Qwen-2 on packed rows with padding; Llama on DPO rows (no segment ids: one sequence, right
    padding, as losses.sequence_logprobs calls the model)."""
    ids, seg = inputs
    if family == "llama":
        seg = jnp.ones_like(ids)
    cfg = FAMILIES[family]()
    _assert_same(_logits_and_grads(cfg, "splash", ids, seg), _xla(family, cfg, ids, seg))


MESHES = [
    {"data": 2, "fsdp": 4},
    {"data": 2, "fsdp": 1, "tensor": 4},  # tensor 4 > 2 kv heads: kv heads repeated to 4
    {"fsdp": 2, "tensor": 2, "data": 2},
]


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_model_splash_sharded_equals_xla(shape, inputs):
    """Gemma-2 (sliding + global layers, soft-cap, scale, packed segments) on 8 devices vs one-device XLA."""
    ids, seg = inputs
    cfg = _gemma()
    _assert_same(_logits_and_grads(cfg, "splash", ids, seg, make_mesh(shape)), _xla("gemma2", cfg, ids, seg))


def test_tensor_wider_than_kv_heads_llama():
    """8 query heads, 2 kv heads on tensor 8: each device holds one query head and needs its own kv head."""
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 128, (1, T)))
    seg = jnp.ones_like(ids)
    want = _logits_and_grads(_llama(), "xla", ids, seg)
    _assert_same(_logits_and_grads(_llama(), "splash", ids, seg, make_mesh({"tensor": 8})), want)
