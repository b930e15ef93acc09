"""HF -> JAX -> HF round trips (bit-identical), transformers loading the export, Orbax conversion via the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusejax import checkpoint
from fusejax.cli import main as cli
from fusejax.models import load_hf, save_hf
from fusejax.sharding import make_mesh
from fusejax.tiny import save_tiny_model, tiny_hf_model


def _tensors(d):
    """All tensors of a HF directory as torch tensors (torch reads bfloat16 exactly)."""
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(f, framework="pt") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


def _assert_bit_identical(a, b):
    ta, tb = _tensors(a), _tensors(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype, k
        bits = torch.int16 if ta[k].dtype in (torch.bfloat16, torch.float16) else torch.int32
        assert torch.equal(ta[k].view(bits), tb[k].view(bits)), f"tensor {k} differs"


@pytest.mark.parametrize("family,dtype", [("llama", torch.float32), ("qwen2", torch.float32),
                                          ("gemma2", torch.float32), ("llama", torch.bfloat16)])
def test_round_trip_bit_identical_and_loadable(family, dtype, tmp_path):
    hf = tiny_hf_model(family, dtype=dtype)
    src, dst = tmp_path / "src", tmp_path / "dst"
    hf.save_pretrained(src)
    model, cfg = load_hf(src, dtype="float32")
    save_hf(model, dst)
    _assert_bit_identical(src, dst)
    assert json.loads((dst / "config.json").read_text())["torch_dtype"] == str(dtype).removeprefix("torch.")

    # eager: transformers only applies Gemma-2's attention soft-cap in its eager attention
    load = dict(dtype=torch.float32, attn_implementation="eager")
    original = AutoModelForCausalLM.from_pretrained(src, **load).eval()
    reloaded = AutoModelForCausalLM.from_pretrained(dst, **load).eval()
    ids = np.random.default_rng(0).integers(0, 256, (2, 40))
    with torch.no_grad():
        ref = original(torch.tensor(ids)).logits.numpy()
        back = reloaded(torch.tensor(ids)).logits.numpy()
    np.testing.assert_array_equal(back, ref)  # same weights, same code, same config: exactly equal
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids))), ref, atol=1e-4, rtol=0)


def test_sharded_export_with_index_and_sharded_load(tmp_path):
    hf = tiny_hf_model("llama", num_hidden_layers=3)
    src, dst, again = tmp_path / "src", tmp_path / "dst", tmp_path / "again"
    hf.save_pretrained(src)
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    model, _ = load_hf(src, mesh=mesh)
    save_hf(model, dst, max_shard_bytes=40_000)
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((dst / f).is_file() for f in files)
    assert not (dst / "model.safetensors").exists()
    _assert_bit_identical(src, dst)
    # and the sharded (indexed) directory loads back, onto another mesh
    model2, _ = load_hf(dst, mesh=make_mesh({"data": 2, "fsdp": 4}))
    save_hf(model2, again)
    _assert_bit_identical(src, again)


def test_cli_hf_to_orbax_to_hf(tmp_path, capsys):
    src = save_tiny_model(tmp_path / "src", "gemma2")
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    assert cli(["convert", "hf-to-orbax", str(src), str(ckpt)]) == 0
    assert cli(["convert", "orbax-to-hf", str(ckpt), str(out), "--tokenizer", str(src)]) == 0
    _assert_bit_identical(src, out)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / f).is_file(), f
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<|begin_of_text|>")


def test_orbax_restores_onto_a_mesh(tmp_path):
    src = tmp_path / "src"
    tiny_hf_model("qwen2").save_pretrained(src)
    model, _ = load_hf(src)
    checkpoint.save_model(tmp_path / "ckpt", model)
    mesh = make_mesh({"fsdp": 2, "tensor": 4})
    restored = checkpoint.load_model(tmp_path / "ckpt", mesh=mesh)
    k = restored.layers.mlp.up_proj.kernel.get_value()
    assert k.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    for a, b in zip(jax.tree.leaves(nnx.state(restored)), jax.tree.leaves(nnx.state(model))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 16)))
    np.testing.assert_allclose(np.asarray(restored(ids)), np.asarray(model(ids)), atol=1e-5, rtol=0)
