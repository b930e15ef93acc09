"""The training loop: exact resume, SIGTERM, NaN stop, reference modes, bad rows, config errors, export."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fusejax.models.config import ConfigError
from fusejax.training.config import load_config
from fusejax.training.loop import TrainingDiverged, run

from .conftest import make_config


def _metrics(out_dir):
    return [json.loads(ln) for ln in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def test_exact_resume_bit_for_bit(tiny_assets, tmp_path):
    straight = run(make_config(tiny_assets, tmp_path / "a", **{"checkpoint.async_save": True}))
    assert straight.status == "finished" and len(straight.losses) >= 4
    cfg = make_config(tiny_assets, tmp_path / "b", **{"checkpoint.async_save": True})
    first = run(cfg, stop_after=2)
    assert first.status == "stopped" and first.step == 2
    with pytest.raises(ConfigError, match="pass --resume"):
        run(cfg)  # never silently restarts over finished work
    second = run(cfg, resume=True)
    assert second.status == "finished"
    assert first.losses + second.losses == straight.losses  # exact float equality, step by step
    logged = [m["loss"] for m in _metrics(cfg.output_dir)]
    assert logged == straight.losses


def test_sigterm_saves_and_exits_cleanly(tiny_assets, tmp_path):
    cfg = make_config(tiny_assets, tmp_path, **{"checkpoint.save_every": 1000})
    config_file = tmp_path / "cfg.yaml"
    from fusejax.training.config import to_dict

    config_file.write_text(yaml.safe_dump(to_dict(cfg)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "train.py", "--config", str(config_file)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    metrics = Path(cfg.output_dir) / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().strip():
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert "SIGTERM received" in out and "preempted" in out
    steps = sorted(int(p.name) for p in (Path(cfg.output_dir) / "checkpoints").iterdir() if p.name.isdigit())
    last_logged = _metrics(cfg.output_dir)[-1]["step"]
    assert steps == [last_logged], "the checkpoint must be at the step where training stopped"
    resumed = run(cfg, resume=True)
    assert resumed.status == "finished"


def test_nan_loss_stops_without_poisoned_checkpoint(tiny_assets, tmp_path):
    cfg = make_config(tiny_assets, tmp_path, **{"optim.learning_rate": 1e30, "optim.max_grad_norm": 0.0,
                                                "optim.warmup_ratio": 0.0, "checkpoint.save_every": 1})
    with pytest.raises(TrainingDiverged, match=r"step (\d+): loss is (nan|inf)") as info:
        run(cfg)
    bad_step = int(str(info.value).split("step ")[1].split(":")[0])
    saved = sorted(int(p.name) for p in Path(cfg.checkpoint_dir).iterdir() if p.name.isdigit())
    assert saved and max(saved) == bad_step - 1


def test_precomputed_reference_equals_reference_model(tiny_assets, tmp_path):
    over = {"train.max_steps": 3, "dpo.loss": "ln", "dpo.beta": 10.0}
    a = run(make_config(tiny_assets, tmp_path / "a", "dpo", **over, **{"dpo.reference": "model"}))
    b = run(make_config(tiny_assets, tmp_path / "b", "dpo", **over, **{"dpo.reference": "precomputed"}))
    np.testing.assert_allclose(a.losses, b.losses, atol=1e-5)
    assert (tmp_path / "b" / "run" / "reference_logps_train.npy").exists()
    assert abs(a.losses[0] - np.log(2)) < 1e-5  # policy == reference at step 0


def test_bad_rows_are_counted_and_skipped(tiny_assets, tmp_path):
    good = Path(tiny_assets["sft"]).read_text().splitlines()
    bad = [
        "{not json",
        json.dumps({"text": "no messages"}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}),
        json.dumps({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "user", "content": "long " * 400}, {"role": "assistant", "content": "x"}]}),
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join(good[:10] + bad + good[10:]) + "\n")
    cfg = make_config(tiny_assets, tmp_path, **{"data.train": str(data), "train.max_steps": 1})
    assert run(cfg).status == "finished"
    report = json.loads((Path(cfg.output_dir) / "data_report.json").read_text())["train"]
    assert report["rows"] == len(good) + len(bad)
    assert report["skipped"] == {"malformed JSON": 1, "missing field 'messages' (or ShareGPT 'conversations')": 1,
                                 "empty assistant turn": 1, "unknown role 'robot'": 1, "no assistant turn": 1,
                                 "longer than max_length 128": 1}
    assert report["first_seen"]["malformed JSON"] == "mixed.jsonl:11"


def test_dpo_keeps_better_of_last_two_and_exports(tiny_assets, tmp_path):
    from transformers import AutoModelForCausalLM

    export = tmp_path / "export"
    cfg = make_config(tiny_assets, tmp_path, "dpo", **{"data.eval_fraction": 0.25, "checkpoint.save_every": 2,
                                                       "export_hf": str(export)})
    result = run(cfg)
    best = json.loads((Path(cfg.output_dir) / "best_checkpoint.json").read_text())
    assert best["step"] == result.best_step and len(best["scores"]) == 2
    losses = {int(k): v["loss"] for k, v in best["scores"].items()}
    assert best["step"] == min(losses, key=lambda s: (losses[s], -s))
    hf = AutoModelForCausalLM.from_pretrained(export)
    assert hf.config.vocab_size > 0 and (export / "tokenizer.json").exists()
    # the training checkpoint of the best step converts to the same HF tensors through the CLI
    from safetensors.numpy import load_file

    from fusejax.cli import main as cli

    again = tmp_path / "again"
    assert cli(["convert", "orbax-to-hf", cfg.checkpoint_dir, str(again), "--step", str(best["step"]),
                "--tokenizer", str(export)]) == 0
    a, b = load_file(export / "model.safetensors"), load_file(again / "model.safetensors")
    assert sorted(a) == sorted(b) and all((a[k].view(np.uint16) == b[k].view(np.uint16)).all() for k in a)


@pytest.mark.parametrize("override,message", [
    ("optim.learning_rat=1e-5", "optim.learning_rat: unknown key"),
    ("train.global_batch_size=abc", "train.global_batch_size: expected an integer"),
    ("stage=ppo", "stage: must be one of"),
    ("data.train=missing.jsonl", "data: file not found: missing.jsonl"),
    ("train.grad_accum_steps=3", "must be a positive multiple"),
])
def test_config_errors_are_clear(tiny_assets, tmp_path, override, message):
    base = [f"model.path={tiny_assets['model']}", f"data.train={tiny_assets['sft']}", "train.global_batch_size=8"]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, base + [override])


# FACTS.md training table: target -> (SFT lr, DPO lr, DPO beta, length-normalised)
RECIPE = {"llama3.1-8b": (5e-6, 8e-7, 10, True), "qwen2.5-7b": (2e-6, 3e-7, 0.01, False),
          "gemma2-9b": (2e-6, 5e-7, 0.01, False), "llama3.2-3b": (5e-6, 1e-6, 10, True),
          "llama3.2-1b": (5e-6, 1e-6, 10, True)}


@pytest.mark.parametrize("target", sorted(RECIPE))
def test_shipped_configs_follow_the_recipe(target):
    root = Path(__file__).resolve().parents[2] / "configs" / "train"
    sft_lr, dpo_lr, beta, ln = RECIPE[target]
    sft = load_config(root / f"{target}-sft.yaml", check_paths=False)
    dpo = load_config(root / f"{target}-dpo.yaml", check_paths=False)
    assert (sft.stage, sft.optim.learning_rate, sft.train.epochs) == ("sft", sft_lr, 3)
    assert (dpo.stage, dpo.optim.learning_rate, dpo.train.epochs) == ("dpo", dpo_lr, 1)
    assert (dpo.dpo.beta, dpo.dpo.loss) == (beta, "ln" if ln else "sigmoid")
    for c in (sft, dpo):
        assert (c.train.global_batch_size, c.data.max_length, c.optim.warmup_ratio) == (128, 2048, 0.1)
        assert c.model.param_dtype == "float32"
    assert dpo.checkpoint.save_every == 100 and dpo.checkpoint.keep == 2
    assert dpo.model.path == sft.export_hf


def test_tiny_configs_load():
    root = Path(__file__).resolve().parents[2] / "configs" / "train"
    for name in ("tiny-sft.yaml", "tiny-dpo.yaml"):
        assert load_config(root / name, check_paths=False).data.max_length == 128
