"""Bad input: a clear one-line error naming the tensor or field, and nothing half-written at the destination."""

import json

import pytest
from safetensors.torch import load_file, save_file

from fusejax.cli import main as cli
from fusejax.models import ConfigError, WeightsError, load_hf, save_hf
from fusejax.models import hf_io
from fusejax.tiny import tiny_hf_model


@pytest.fixture
def hf_dir(tmp_path):
    d = tmp_path / "hf"
    tiny_hf_model("llama").save_pretrained(d)
    return d


def _edit_tensors(d, fn):
    tensors = load_file(d / "model.safetensors")
    fn(tensors)
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def test_missing_tensor(hf_dir):
    _edit_tensors(hf_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(WeightsError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight' is missing"):
        load_hf(hf_dir)


def test_extra_tensor(hf_dir):
    import torch

    _edit_tensors(hf_dir, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(128)}))
    with pytest.raises(WeightsError, match=r"unexpected tensor 'model\.layers\.0\.self_attn\.q_proj\.bias'"):
        load_hf(hf_dir)


def test_misshaped_tensor(hf_dir):
    _edit_tensors(hf_dir, lambda t: t.update({"model.norm.weight": t["model.norm.weight"][:32].clone()}))
    with pytest.raises(WeightsError, match=r"'model\.norm\.weight' has shape \[32\], config\.json implies \[128\]"):
        load_hf(hf_dir)


def test_config_weights_mismatch(hf_dir):
    _edit_config(hf_dir, intermediate_size=96)
    with pytest.raises(WeightsError, match=r"mlp\.(gate|up|down)_proj\.weight' has shape"):
        load_hf(hf_dir)


def test_unsupported_model_type(hf_dir):
    _edit_config(hf_dir, model_type="falcon")
    with pytest.raises(ConfigError, match="unsupported model_type 'falcon'"):
        load_hf(hf_dir)


def test_unsupported_rope_type(hf_dir):
    _edit_config(hf_dir, rope_scaling={"rope_type": "yarn", "factor": 4.0}, rope_parameters=None)
    with pytest.raises(ConfigError, match="unsupported rope type 'yarn'"):
        load_hf(hf_dir)


def test_missing_config_field(hf_dir):
    _edit_config(hf_dir, hidden_size=None)
    with pytest.raises(ConfigError, match="missing required field 'hidden_size'"):
        load_hf(hf_dir)


def test_existing_destination_refused(hf_dir, tmp_path):
    model, _ = load_hf(hf_dir)
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        save_hf(model, dst)
    assert (dst / "keep.txt").read_text() == "precious"


def test_failed_export_leaves_nothing(hf_dir, tmp_path, monkeypatch):
    model, _ = load_hf(hf_dir)
    real = hf_io._to_host
    calls = {"n": 0}

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash mid-export")
        return real(x)

    monkeypatch.setattr(hf_io, "_to_host", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        save_hf(model, tmp_path / "dst", max_shard_bytes=10_000)
    assert list(tmp_path.iterdir()) == [hf_dir], "export left files behind"


def test_cli_reports_one_line_error(hf_dir, tmp_path, capsys):
    _edit_config(hf_dir, model_type="falcon")
    assert cli(["convert", "hf-to-orbax", str(hf_dir), str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unsupported model_type 'falcon'" in err
    assert not (tmp_path / "ckpt").exists()


def test_cli_refuses_non_empty_checkpoint_destination(hf_dir, tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "x").write_text("x")
    assert cli(["convert", "hf-to-orbax", str(hf_dir), str(tmp_path / "ckpt")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
