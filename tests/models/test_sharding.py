"""Sharding on 8 fake CPU devices: parameters are really sharded, and every mesh gives the one-device logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from fusejax.models import PRESETS, abstract_model, create_model, load_hf, state_shardings
from fusejax.sharding import make_mesh
from fusejax.tiny import tiny_hf_model

MESHES = [
    {"fsdp": 8},
    {"data": 2, "fsdp": 4},
    {"fsdp": 2, "tensor": 4},  # tensor 4 > 2 kv heads: kv projections fall back to replication on that axis
    {"data": 2, "fsdp": 2, "tensor": 2},
]


def _forward(model, ids, mesh=None):
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    if mesh is None:
        return np.asarray(fn(state, ids))
    with jax.set_mesh(mesh):
        return np.asarray(fn(state, ids))


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gemma")
    tiny_hf_model("gemma2", num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
                  intermediate_size=128).save_pretrained(d)
    return d


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_sharded_logits_equal_single_device(shape, gemma_dir):
    assert len(jax.devices()) == 8
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 24)))
    ref = _forward(load_hf(gemma_dir)[0], ids)
    mesh = make_mesh(shape)
    model, _ = load_hf(gemma_dir, mesh=mesh)
    q = model.layers.self_attn.q_proj.kernel.get_value()
    assert len(q.sharding.device_set) == 8
    assert q.addressable_shards[0].data.size < q.size, "q_proj is not sharded"
    np.testing.assert_allclose(_forward(model, ids, mesh), ref, atol=1e-5, rtol=0)


def test_create_model_shards_at_creation():
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    model = create_model(PRESETS["llama3.2-1b"].replace(num_layers=1, vocab_size=512, hidden_size=256,
                                                        intermediate_size=512, num_heads=4, num_kv_heads=2),
                         mesh=mesh)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        x = var.get_value()
        if "norm" not in str(path):  # norm weights are replicated by design
            assert x.addressable_shards[0].data.size <= x.size // 4, f"{path} is not sharded enough"


def test_golden_partition_specs_llama_8b():
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    state = nnx.state(abstract_model(PRESETS["llama3.1-8b"]))
    specs = {".".join(p): v.get_value().spec for p, v in nnx.to_flat_state(state_shardings(state, mesh))}
    assert specs["embed_tokens"] == P("tensor", "fsdp")
    assert specs["lm_head"] == P("fsdp", "tensor")
    assert specs["layers.self_attn.q_proj.kernel"] == P(None, "fsdp", "tensor", None)
    assert specs["layers.self_attn.k_proj.kernel"] == P(None, "fsdp", "tensor", None)
    assert specs["layers.self_attn.o_proj.kernel"] == P(None, "tensor", None, "fsdp")
    assert specs["layers.mlp.gate_proj.kernel"] == P(None, "fsdp", "tensor")
    assert specs["layers.mlp.down_proj.kernel"] == P(None, "tensor", "fsdp")
    assert specs["layers.input_layernorm.weight"] == P(None, None)
    assert specs["norm.weight"] == P(None)


@pytest.mark.parametrize("name", ["llama3.1-8b", "qwen2.5-7b", "gemma2-9b"])
def test_full_size_parameters_sufficiently_sharded(name):
    """Per-device parameter bytes on an 8-way mesh are within 2% of total / 8 (norms are the only replicas)."""
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    state = nnx.state(abstract_model(PRESETS[name]))
    shardings = state_shardings(state, mesh)
    total = per_device = 0
    for (_, var), (_, sh) in zip(nnx.to_flat_state(state), nnx.to_flat_state(shardings)):
        shape = var.shape
        shard = sh.get_value().shard_shape(shape)
        total += np.prod(shape)
        per_device += np.prod(shard)
    assert per_device <= 1.02 * total / 8
