"""The gcloud commands as Cloud TPU documents them, --dry-run printing exactly those, and run_stage.sh's outcome
codes (finished / resumable after SIGTERM / failed)."""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusejax.tpu import remote
from fusejax.tpu.cli import main
from fusejax.tpu.gcloud import Slice, default_runtime

ROOT = Path(__file__).resolve().parents[2]


def test_commands_match_the_documented_syntax():
    # gcloud reference example: queued-resources create my-queued-resource --accelerator-type=v4-8
    #   --runtime-version=v2-alpha-tpuv4 --node-id=my-node-001 --zone=us-central2-b --project=my-project
    s = Slice("my-qr", "us-central2-b", "v4-8", "v2-alpha-tpuv4", project="my-project", spot=False)
    assert s.create() == ["gcloud", "compute", "tpus", "queued-resources", "create", "my-qr", "--node-id=my-qr",
                          "--accelerator-type=v4-8", "--runtime-version=v2-alpha-tpuv4", "--zone=us-central2-b",
                          "--project=my-project"]
    spot = Slice("q", "europe-west4-a", "v5litepod-16")
    assert spot.create()[-1] == "--spot" and "--runtime-version=v2-alpha-tpuv5-lite" in spot.create()
    assert spot.delete() == ["gcloud", "compute", "tpus", "queued-resources", "delete", "q", "--zone=europe-west4-a",
                             "--force", "--quiet"]
    assert spot.ssh("ls", worker="all")[-2:] == ["--worker=all", "--command=ls"]
    assert spot.scp_from("~/log", "out.log", 3) == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "q:~/log",
                                                    "out.log", "--zone=europe-west4-a", "--worker=3"]
    assert default_runtime("v6e-8") == "v2-alpha-tpuv6e" and default_runtime("v4-32") == "tpu-ubuntu2204-base"
    with pytest.raises(ValueError, match="v9-8"):
        default_runtime("v9-8")


def test_dry_run_prints_every_command_and_runs_none(fake_gcloud, capsys, monkeypatch):
    monkeypatch.setenv("FUSEJAX_TPU_NAME", "trc-7")
    monkeypatch.setenv("FUSEJAX_TPU_ZONE", "us-east1-d")
    monkeypatch.setenv("FUSEJAX_TPU_TYPE", "v6e-16")
    common = ["--dry-run"]
    assert main(["create", *common]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["gcloud compute tpus queued-resources create trc-7 --node-id=trc-7 --accelerator-type=v6e-16 "
                   "--runtime-version=v2-alpha-tpuv6e --zone=us-east1-d --spot"]
    assert main(["run", *common, "--on-demand", "--config", "configs/train/llama3.2-1b-sft.yaml", "--repo",
                 "https://example.org/fusejax.git", "--revision", "0123abcd", "train.max_steps=10"]) == 0
    printed = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [p[3:5] for p in printed] == [["queued-resources", "create"], ["queued-resources", "describe"],
                                         ["tpu-vm", "describe"], ["tpu-vm", "ssh"], ["tpu-vm", "ssh"],
                                         ["tpu-vm", "ssh"], ["tpu-vm", "scp"]]
    assert "--spot" not in printed[0]
    setup, launch, poll = printed[3][-1], printed[4][-1], printed[5][-1]
    assert "git checkout --quiet --force --detach 0123abcd" in setup and "pip install -q -e '.[tpu]'" in setup
    assert ("tpu_scripts/run_stage.sh $HOME/fusejax-runs/llama3.2-1b-sft .venv/bin/python train.py --config "
            "configs/train/llama3.2-1b-sft.yaml train.max_steps=10 >/dev/null") in launch
    assert printed[5][-2] == "--worker=0" and "exit_code" in poll
    for sub in (["status", "--run", "x"], ["stop", "--run", "x"], ["delete"], ["logs", "--run", "x"], ["wait"],
                ["setup", "--repo", "u", "--revision", "r"],
                ["launch", "--config", "c.yaml", "--run", "x", "--resume"]):
        assert main([sub[0], *common, *sub[1:]]) == 0, sub
        lines = capsys.readouterr().out.splitlines()
        assert lines and all(ln.startswith("gcloud compute tpus ") for ln in lines), (sub, lines)
    assert fake_gcloud.calls() == []  # nothing ran


def test_dry_run_never_prints_a_forwarded_token(fake_gcloud, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    assert main(["launch", "--dry-run", "--name", "a", "--zone", "us-central1-a", "--type", "v5litepod-8",
                 "--config", "c.yaml", "--run", "x", "--forward-hf-token"]) == 0
    out = capsys.readouterr().out
    assert "HF_TOKEN" in out and "hf_secretvalue123" not in out


def test_entry_points_reach_the_same_command(fake_gcloud, capsys):
    from fusejax.cli import main as fusejax_main

    argv = ["create", "--dry-run", "--name", "a", "--zone", "us-central1-a", "--type", "v5litepod-8", "--project", "p"]
    assert fusejax_main(["tpu", *argv]) == 0
    via_cli = capsys.readouterr().out
    script = subprocess.run([str(ROOT / "tpu_scripts" / "tpu"), *argv], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable))
    assert script.returncode == 0, script.stderr
    assert script.stdout == via_cli == ("gcloud compute tpus queued-resources create a --node-id=a "
                                        "--accelerator-type=v5litepod-8 --runtime-version=v2-alpha-tpuv5-lite "
                                        "--zone=us-central1-a --project=p --spot\n")


def test_missing_zone_is_one_clear_error(fake_gcloud, capsys):
    assert main(["status", "--name", "x"]) == 2
    assert "--zone" in capsys.readouterr().err


def _stage(tmp_path, *cmd):
    d = tmp_path / "fusejax-runs" / "run"  # the layout remote.poll reads under $HOME
    p = subprocess.Popen(["setsid", str(ROOT / "tpu_scripts" / "run_stage.sh"), str(d), *cmd],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return d, p


TRAINER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (print("SIGTERM received: saving", flush=True), print("preempted at step 3"),
                                          sys.exit(0)))
mode = sys.argv[1]
if mode == "finish": print("finished at step 5")
if mode == "fail": sys.exit(2)
if mode == "wait":
    print("started", flush=True)
    time.sleep(60)
"""


def _poll(home):
    out = subprocess.run(["bash", "-c", remote.poll("run")], env=dict(os.environ, HOME=str(home)),
                         capture_output=True, text=True).stdout
    return remote.parse_poll(out)


@pytest.mark.parametrize("mode,code", [("finish", 0), ("fail", 2), ("stopped", remote.RESUMABLE)])
def test_run_stage_outcome_codes(tmp_path, mode, code):
    script = tmp_path / "t.py"
    script.write_text(TRAINER)
    d, p = _stage(tmp_path, sys.executable, str(script), "wait" if mode == "stopped" else mode)
    if mode == "stopped":  # what `fusejax tpu stop` sends: SIGTERM to the stage's process group
        deadline = time.time() + 30
        while time.time() < deadline and not ((d / "log").exists() and "started" in (d / "log").read_text()):
            time.sleep(0.05)
        assert _poll(tmp_path) == "running"
        os.killpg(int((d / "pid").read_text()), signal.SIGTERM)
    p.wait(timeout=30)
    assert (d / "exit_code").read_text().strip() == str(code)
    assert _poll(tmp_path) == code
    if mode == "stopped":
        assert "preempted at step 3" in (d / "log").read_text()
