"""Every architectural switch changes the output (catches flags that are read but ignored)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fusejax.models import ModelConfig, RopeScaling, abstract_model, create_model

BASE = ModelConfig(
    model_type="gemma2", vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
    num_kv_heads=2, head_dim=16, rope_theta=10000.0, rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8), qkv_bias=True,
    norm_plus_one=True, scale_embeddings=True, post_norms=True, activation="gelu_tanh", attn_logit_softcap=1.0,
    final_logit_softcap=2.0, sliding_window=4, layer_types=("sliding_attention", "full_attention"),
    query_pre_attn_scalar=64.0, tie_embeddings=True,
)
IDS = jnp.asarray(np.random.default_rng(0).integers(0, 128, (2, 32)))


def _randomised(cfg: ModelConfig):
    """A model whose every parameter (norm weights and biases too) is random, so no switch is a no-op by init."""
    model = create_model(cfg, seed=0)
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def _same_weights(model, cfg: ModelConfig):
    """Model of config `cfg` carrying `model`'s weights wherever the two share a parameter (others constant)."""
    source = dict(nnx.to_flat_state(nnx.state(model)))
    graphdef, state = nnx.split(abstract_model(cfg))
    flat = [(path, var.replace(source[path].get_value() if path in source else 0.3 * jnp.ones(var.shape, var.dtype)))
            for path, var in nnx.to_flat_state(state)]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


SWITCHES = {
    "qkv_bias": dict(qkv_bias=False),
    "norm_plus_one": dict(norm_plus_one=False),
    "scale_embeddings": dict(scale_embeddings=False),
    "post_norms": dict(post_norms=False),
    "activation": dict(activation="silu"),
    "attn_logit_softcap": dict(attn_logit_softcap=None),
    "final_logit_softcap": dict(final_logit_softcap=None),
    "sliding_window": dict(layer_types=None, sliding_window=None),
    "window_alternation": dict(layer_types=("full_attention", "sliding_attention")),
    "query_pre_attn_scalar": dict(query_pre_attn_scalar=None),
    "rope_scaling": dict(rope_scaling=None),
    "rope_theta": dict(rope_theta=500000.0),
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_switch_changes_output(name):
    model = _randomised(BASE)
    on = np.asarray(model(IDS))
    off = np.asarray(_same_weights(model, BASE.replace(**SWITCHES[name]))(IDS))
    assert np.abs(on - off).max() > 1e-3, f"turning {name} off did not change the logits"


def test_tied_embeddings_use_embedding_matrix_for_output():
    model = _randomised(BASE)
    untied = _same_weights(model, BASE.replace(tie_embeddings=False))
    # Untied with lm_head set to the embedding's transpose reproduces the tied output; a random lm_head does not.
    ref = np.asarray(model(IDS))
    assert np.abs(np.asarray(untied(IDS)) - ref).max() > 1e-3
    untied.lm_head.set_value(model.embed_tokens.get_value().T)
    np.testing.assert_allclose(np.asarray(untied(IDS)), ref, atol=1e-5)
