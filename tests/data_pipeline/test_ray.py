"""Sample and score on a local Ray cluster (CPU, tiny models, the real vLLM): the same part files and built sets as a
single-process run, a replica killed mid-unit, a unit that always fails, and kill -9 of the driver then a rerun."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from data_pipeline import config as config_lib
from data_pipeline.cli import main as cli
from data_pipeline.distributed import (FaultInjection, RayOptions, UnitsFailed, replica_plan, sample_on_ray,
                                       sample_units, score_on_ray)
from data_pipeline.store import read_parts
from fusejax.models.config import ConfigError
from fusejax.tiny import tiny_pipeline_assets

ROOT = Path(__file__).resolve().parents[2]


def test_replicas_follow_gpus_per_node_and_tensor_parallel_size():
    def node(gpus, alive=True):
        return {"Alive": alive, "Resources": {"CPU": 16.0, **({"GPU": float(gpus)} if gpus else {})}}

    nodes = [node(8), node(8), node(4), node(8, alive=False)]
    assert replica_plan(nodes, 8, None, "m") == (2, {"num_cpus": 1, "num_gpus": 8})  # the 4-GPU node holds none
    assert replica_plan(nodes, 4, None, "m") == (5, {"num_cpus": 1, "num_gpus": 4})
    assert replica_plan(nodes, 1, None, "m") == (20, {"num_cpus": 1, "num_gpus": 1})
    assert replica_plan(nodes, 4, 3, "m") == (3, {"num_cpus": 1, "num_gpus": 4})
    assert replica_plan([node(0), node(0)], 1, None, "m") == (2, {"num_cpus": 1, "num_gpus": 0})  # CPU: one a node
    with pytest.raises(ConfigError, match="tensor_parallel_size 16 needs that many GPUs on one node"):
        replica_plan(nodes, 16, None, "m")


def test_ray_excludes_shard(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("datasets:\n  - {name: x, source: x.jsonl, domain: instruction, prompt_field: q}\n")
    assert cli(["sample", "--config", str(cfg), "--out", str(tmp_path / "o"), "--ray", "--shard", "0/2"]) == 2
    assert "--ray and --shard exclude each other" in capsys.readouterr().err


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ray = pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("ray")
    tiny_pipeline_assets(root / "assets")
    raw = yaml.safe_load((ROOT / "configs" / "data" / "tiny.yaml").read_text().replace(
        "runs/tiny/assets/pipeline", str(root / "assets")))
    for m in raw["models"]:
        m["max_tokens"] = 16
    limits = {"instruction": 8, "math": 3, "code": 2, "chinese": 2}  # 13-15 prompts a model: 4 units each
    for d in raw["datasets"]:
        d["limit"] = limits[d["domain"]]
    raw["vllm"]["batch_prompts"] = 4
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    single = root / "single"
    for stage in ("select", "sample", "score", "verify", "build"):
        assert cli([stage, "--config", str(path), "--out", str(single)]) == 0
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        yield {"root": root, "config": path, "cfg": config_lib.load(path), "single": single,
               "address": ray.get_runtime_context().gcs_address}
    finally:
        ray.shutdown()


def _fresh(setup, name: str) -> Path:
    out = setup["root"] / name
    shutil.copytree(setup["single"] / "select", out / "select")
    return out


def _part_files(stage_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(stage_dir)): p.read_bytes() for p in sorted(stage_dir.glob("**/part-*.jsonl"))}


def _rows(stage_dir: Path) -> list[dict]:
    return sorted(read_parts(stage_dir), key=lambda r: (r["prompt_id"], r["model"], r["sample"]))


def _replica_pids() -> set[int]:
    import psutil

    pids = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::Replica"):
            pids.add(p.info["pid"])
    return pids


def test_ray_run_equals_single_process_despite_a_replica_killed_mid_unit(setup):
    out, cfg = _fresh(setup, "ray"), setup["cfg"]
    from data_pipeline.sample import load_prompts

    chinese = [p["id"] for p in load_prompts(out) if p["domain"] == "chinese"]
    lines = []  # the replica holding source-b's unit with this prompt exits mid-unit (its first attempt)
    sample_on_ray(cfg, out, RayOptions(replicas=2, fault=FaultInjection(exit_on_prompt=chinese[0])),
                  log=lines.append)
    score_on_ray(cfg, out, RayOptions(replicas=1), log=lines.append)
    crashes = [x for x in lines if "failed on attempt" in x]
    assert len(crashes) == 1 and "failed on attempt 1/3" in crashes[0], lines
    assert "ActorDiedError" in crashes[0] and "will retry on another replica" in crashes[0]
    # every part file, name and bytes, as the single-process run wrote it
    for stage in ("sample", "score"):
        assert _part_files(out / stage) == _part_files(setup["single"] / stage), stage
    assert not (out / "ray" / "sample-failed.json").exists()
    throughput = json.loads((out / "ray" / "sample-throughput.json").read_text())
    assert {r["generated_tokens_per_s"] > 0 for m in throughput.values() for r in m} == {True}
    for stage in ("verify", "build"):
        assert cli([stage, "--config", str(setup["config"]), "--out", str(out)]) == 0
    for name in ("sft.jsonl", "dpo.jsonl"):
        assert (out / "build" / name).read_bytes() == (setup["single"] / "build" / name).read_bytes(), name
    assert (out / "build" / "sft.jsonl").stat().st_size > 0


def test_a_unit_that_always_fails_is_reported_and_the_rest_finishes(setup):
    out = _fresh(setup, "failing")
    cfg = dataclasses.replace(setup["cfg"], models=setup["cfg"].models[:1])
    from data_pipeline.sample import load_prompts

    _, units = sample_units(cfg, out, cfg.models[0], load_prompts(out))
    bad = units[2]
    opts = RayOptions(replicas=1, max_attempts=2, fault=FaultInjection(raise_on_prompt=bad.prompt_ids[1]))
    with pytest.raises(UnitsFailed, match="1 units failed"):
        sample_on_ray(cfg, out, opts, log=lambda _: None)
    failed = json.loads((out / "ray" / "sample-failed.json").read_text())
    assert len(failed) == 1 and failed[0]["prompt_ids"] == bad.prompt_ids and failed[0]["attempts"] == 2
    assert all("injected failure" in e for e in failed[0]["errors"]) and len(failed[0]["errors"]) == 2
    model = cfg.models[0].name
    want = {k: v for k, v in _part_files(setup["single"] / "sample").items() if k.startswith(model + "/")}
    want.pop(f"{model}/{bad.part.name}")
    assert _part_files(out / "sample") == want


def test_driver_kill_9_then_rerun_loses_and_duplicates_nothing(setup):
    out, cfg = _fresh(setup, "killed"), setup["cfg"]
    proc = subprocess.Popen([sys.executable, "-m", "data_pipeline", "sample", "--config", str(setup["config"]),
                             "--out", str(out), "--ray", setup["address"]], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    replicas: set[int] = set()
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list((out / "sample").glob("*/part-*.jsonl")):
        replicas |= _replica_pids()
        time.sleep(0.05)
    replicas |= _replica_pids()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _rows(out / "sample")
    assert 0 < len(partial) < len(_rows(setup["single"] / "sample")), "killed too late to test resumption"
    for p in (out / "sample").glob("*/part-*.jsonl"):
        for line in p.read_text().splitlines():
            json.loads(line)  # every file under a final name is complete
    assert replicas, "the driver's replica was never seen"
    deadline = time.time() + 60
    while time.time() < deadline and replicas & _replica_pids():
        time.sleep(0.5)
    assert not replicas & _replica_pids(), "the dead driver's engine replicas outlived it"
    sample_on_ray(cfg, out, RayOptions(), log=lambda _: None)
    assert _rows(out / "sample") == _rows(setup["single"] / "sample")  # nothing lost, nothing duplicated
