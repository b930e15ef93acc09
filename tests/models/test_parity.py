"""Float32 logits parity with transformers' PyTorch models, several configs per family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fusejax.models import RuntimeOptions, load_hf
from fusejax.tiny import tiny_hf_model

TOL = 1e-4

CASES = {
    # Llama-3.1: llama3 rope scaling (original max 32) with positions up to 95, GQA 4:2, untied.
    "llama-gqa2-untied": ("llama", {}),
    "llama-mqa-tied": ("llama", dict(num_key_value_heads=1, tie_word_embeddings=True)),
    "llama-mha-3layers": ("llama", dict(num_key_value_heads=4, num_hidden_layers=3)),
    "llama-no-scaling": ("llama", dict(rope_scaling=None, rope_theta=10000.0)),
    "qwen2-tied-gqa2": ("qwen2", {}),
    "qwen2-untied-gqa4": ("qwen2", dict(tie_word_embeddings=False, num_attention_heads=8, num_key_value_heads=2,
                                        head_dim=16)),
    # Gemma-2: window 8 < sequence 96, layer 0 sliding / 1 global / 2 sliding.
    "gemma2-window8": ("gemma2", dict(num_hidden_layers=3)),
    "gemma2-mqa-scalar64": ("gemma2", dict(num_key_value_heads=1, query_pre_attn_scalar=64, sliding_window=16)),
}


def _hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, tmp_path):
    family, overrides = CASES[case]
    hf = tiny_hf_model(family, **overrides)
    hf.save_pretrained(tmp_path)
    ids = np.random.default_rng(1).integers(0, hf.config.vocab_size, (2, 96))
    ref = _hf_logits(hf, ids)
    model, cfg = load_hf(tmp_path)
    out = np.asarray(model(jnp.asarray(ids)))
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.abs(ref).max() > 1.0, "reference logits too small for a meaningful comparison"
    np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("remat,scan,chunk", [("full", True, None), ("dots", False, None), ("none", False, None),
                                              ("full", True, 8), ("none", False, 4)])
def test_remat_scan_and_attention_chunk_options_do_not_change_logits(remat, scan, chunk, tmp_path):
    hf = tiny_hf_model("gemma2", num_hidden_layers=3)
    hf.save_pretrained(tmp_path)
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, 24)))
    ref = np.asarray(load_hf(tmp_path)[0](ids))
    opts = RuntimeOptions(remat=remat, scan_layers=scan, attention_query_chunk=chunk)
    model, _ = load_hf(tmp_path, options=opts)
    np.testing.assert_allclose(np.asarray(model(ids)), ref, atol=1e-5, rtol=0)
    if chunk:  # and the gradients agree too (the blocks are rematerialised in the backward pass)
        from flax import nnx

        def grads(m):
            g, s = nnx.split(m)
            return jax.grad(lambda p: nnx.merge(g, p)(ids).std())(nnx.to_pure_dict(s))

        for a, b in zip(jax.tree.leaves(grads(model)), jax.tree.leaves(grads(load_hf(tmp_path)[0]))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


def test_bfloat16_compute_close_to_float32(tmp_path):
    hf = tiny_hf_model("llama")
    hf.save_pretrained(tmp_path)
    ids = jnp.asarray(np.random.default_rng(3).integers(0, 256, (2, 32)))
    ref = np.asarray(load_hf(tmp_path)[0](ids))
    model, _ = load_hf(tmp_path, options=RuntimeOptions(compute_dtype="bfloat16"))
    out = model(ids)
    assert out.dtype == jnp.float32  # logits stay float32
    # bf16 has ~3 significant digits: agree to a few percent of the logit scale, and on the argmax mostly.
    assert np.abs(np.asarray(out) - ref).max() < 0.05 * np.abs(ref).max()
    assert (np.asarray(out).argmax(-1) == ref.argmax(-1)).mean() > 0.9


def test_hidden_states_project_to_logits(tmp_path):
    hf = tiny_hf_model("gemma2")
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    ids = jnp.asarray(np.random.default_rng(4).integers(0, 256, (1, 16)))
    hidden = model(ids, return_hidden=True)
    assert hidden.shape == (1, 16, 128)
    with torch.no_grad():
        ref_hidden = hf(torch.tensor(np.asarray(ids)), output_hidden_states=True).hidden_states[-1].numpy()
    np.testing.assert_allclose(np.asarray(hidden), ref_hidden, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(model.logits(hidden)), _hf_logits(hf, np.asarray(ids)), atol=TOL, rtol=0)
