"""Multi-host training on one machine: 2 processes x 2 CPU devices (jax.distributed with a local coordinator,
gloo collectives) against 1 process x 4 devices: the same losses, every host feeding its own half of each global
batch, and only process 0 writing logs and the export."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, name, items, nproc, devices_per_process):
    cfg = tmp_path / f"{name}.json"
    cfg.write_text(json.dumps(items))
    port = str(_free_port())
    env = dict(os.environ, DEVICES_PER_PROCESS=str(devices_per_process), PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(HERE / "multihost_worker.py"), str(i), str(nproc), port, str(cfg),
                               str(tmp_path / f"{name}-{i}.json")], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(nproc)]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(out)
        assert p.returncode == 0, out[-3000:]
    return [json.loads((tmp_path / f"{name}-{i}.json").read_text()) for i in range(nproc)], outs


@pytest.mark.slow
def test_two_processes_train_like_one(tiny_assets, tmp_path):
    def items(out):
        return {"stage": "sft", "output_dir": str(tmp_path / out), "model.path": str(tiny_assets["model"]),
                "model.compute_dtype": "float32", "model.remat": "none", "data.train": str(tiny_assets["sft"]),
                "data.max_length": 128, "data.loss_chunk": 128, "data.packing": False,
                "train.global_batch_size": 8, "train.grad_accum_steps": 2, "train.max_steps": 3,
                "optim.learning_rate": 1e-3, "checkpoint.async_save": False, "checkpoint.save_every": 2,
                "mesh": {"fsdp": 4}, "export_hf": str(tmp_path / out / "hf")}

    single, _ = _launch(tmp_path, "single", items("one"), 1, 4)
    multi, outs = _launch(tmp_path, "multi", items("two"), 2, 2)
    assert [r["process_count"] for r in multi] == [2, 2] and [r["devices"] for r in multi] == [4, 4]
    assert [r["local_devices"] for r in multi] == [2, 2]
    assert single[0]["status"] == multi[0]["status"] == multi[1]["status"] == "finished"
    assert len(single[0]["losses"]) == 3
    # Both processes see the same global losses, equal to the single-process run's.
    assert multi[0]["losses"] == multi[1]["losses"]
    assert multi[0]["losses"] == pytest.approx(single[0]["losses"], rel=1e-5)
    # Process 0 alone wrote the metrics and printed progress; checkpoints and the export exist once.
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 3
    assert "[step 3/3]" in outs[0] and "[step" not in outs[1]
    assert (tmp_path / "two" / "hf" / "model.safetensors").exists()
    a = (tmp_path / "one" / "hf" / "model.safetensors").read_bytes()
    b = (tmp_path / "two" / "hf" / "model.safetensors").read_bytes()
    assert len(a) == len(b)
