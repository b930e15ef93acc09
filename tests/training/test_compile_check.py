"""Ahead-of-time TPU compile of the real train step (libtpu, no TPU) and optimizer-state sharding."""

import json

import jax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from fusejax.models import PRESETS, abstract_model, state_shardings
from fusejax.sharding import make_mesh
from fusejax.training.compile_check import CompileReport, main as compile_check
from fusejax.training.step import make_optimizer, opt_state_shardings


@pytest.mark.parametrize("stage,topology", [("sft", "v5e-4"), ("dpo", "v6e-8")])
def test_tiny_config_compiles_for_tpu(tiny_assets, tmp_path, stage, topology):
    out = tmp_path / "report.json"
    rc = compile_check(["--config", f"configs/train/tiny-{stage}.yaml", "--topology", topology, "--json", str(out),
                        f"model.path={tiny_assets['model']}"])
    report = json.loads(out.read_text())
    assert rc == 0 and report["fits"]
    assert report["devices"] == int(topology.split("-")[1])
    assert report["argument_bytes"] < report["peak_bytes"] <= report["hbm_bytes"]
    # hand-computed floor: float32 parameters + AdamW mu and nu = 12 bytes per parameter, split over the devices
    from fusejax.models import param_count, read_hf_config

    n = param_count(read_hf_config(tiny_assets["model"])[0])
    assert report["argument_bytes"] >= 12 * n / report["devices"]


def test_tiny_dpo_compiles_with_splash_for_tpu(tiny_assets, tmp_path, capsys):
    """The Pallas kernel lowers for a TPU topology (Mosaic), inside the sharded train step; --buffers lists the
    compiled program's largest allocations."""
    out = tmp_path / "report.json"
    rc = compile_check(["--config", "configs/train/tiny-dpo.yaml", "--topology", "v5e-4", "--json", str(out),
                        "--buffers", "3", f"model.path={tiny_assets['model']}", "model.attention=splash"])
    report = json.loads(out.read_text())
    assert rc == 0 and report["fits"] and report["attention"] == "splash"
    assert report["splash_block"] == 128  # max_length 128: one block of 128 (the configured 512 does not divide it)
    text = capsys.readouterr().out
    assert "attention splash, blocks 128" in text
    listed = text.split("largest allocations per device")[1].strip().splitlines()[1:]
    assert len(listed) == 3 and all("[" in row for row in listed)


def test_unknown_topology_is_a_clear_error(tiny_assets, capsys):
    rc = compile_check(["--config", "configs/train/tiny-sft.yaml", "--topology", "v9-8",
                        f"model.path={tiny_assets['model']}"])
    assert rc == 2 and "unknown 'v9-8'" in capsys.readouterr().err


def test_report_fit_decision():
    r = CompileReport("v5p-8", 4, "sft", "m", 128, 32, 2048, 10, 0, 5, 0, 96 * 2**30, 95 * 2**30, 1.0)
    assert not r.fits and "DOES NOT FIT" in r.line()


def test_optimizer_state_follows_parameter_sharding():
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    state = nnx.state(abstract_model(PRESETS["llama3.2-1b"]))
    shardings = nnx.to_pure_dict(state_shardings(state, mesh))
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nnx.to_pure_dict(state), shardings)
    tx, _ = make_optimizer(1e-5, 100, 0.1, 0.0, 1.0)
    opt = opt_state_shardings(jax.eval_shape(tx.init, params), shardings, NamedSharding(mesh, P()))
    adam = opt[1][0]  # chain(clip, adamw) -> adamw's ScaleByAdamState
    for moment in (adam.mu, adam.nu):
        assert moment["layers"]["mlp"]["up_proj"]["kernel"].spec == P(None, "fsdp", "tensor")
        assert moment["embed_tokens"].spec == P("tensor", "fsdp")
    assert adam.count.spec == P()
