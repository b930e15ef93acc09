import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch):
    """A fake `gcloud` first on PATH; returns a handle to its scenario, recorded calls and simulated bucket."""
    root = tmp_path / "gcloud"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "gcloud").write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_gcloud.py'} \"$@\"\n")
    (bindir / "gcloud").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_GCLOUD_ROOT", str(root))
    monkeypatch.delenv("GCLOUD", raising=False)
    for k in ("FUSEJAX_TPU_NAME", "FUSEJAX_TPU_ZONE", "FUSEJAX_TPU_PROJECT", "CLOUDSDK_COMPUTE_ZONE",
              "CLOUDSDK_CORE_PROJECT", "FUSEJAX_TPU_TYPE", "FUSEJAX_TPU_RUNTIME", "FUSEJAX_TPU_SPOT"):
        monkeypatch.delenv(k, raising=False)
    return FakeGcloud(root)


class FakeGcloud:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def scenario(self, **kw) -> None:
        st = {"qrs": {}, "incarnations": 0, "polls": 0, "preempted": 0,
              "scenario": {"workers": 2, "preempt_at_step": 0, "waiting_describes": 1, **kw}}
        (self.root / "state.json").write_text(json.dumps(st))

    def calls(self) -> list[list[str]]:
        p = self.root / "calls.jsonl"
        return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []

    def launches(self) -> list[dict]:
        p = self.root / "gs" / "launches.jsonl"
        return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []

    def state(self) -> dict:
        return json.loads((self.root / "state.json").read_text())


@pytest.fixture
def worker_repo(tmp_path):
    """A git repository the fake workers clone: the real run_stage.sh and a placeholder train.py."""
    repo = tmp_path / "origin"
    (repo / "tpu_scripts").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "tpu_scripts" / "run_stage.sh", repo / "tpu_scripts" / "run_stage.sh")
    (repo / "train.py").write_text("# the fake VM's venv python plays the trainer\n")
    (repo / "configs").mkdir()
    (repo / "configs" / "stage.yaml").write_text("stage: sft\n")

    def git(*a):
        return subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "v1")
    first = git("rev-parse", "HEAD")
    (repo / "NEWER").write_text("a later commit the workers must not get\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "v2")
    return repo, first


@pytest.fixture
def fake_hub(monkeypatch):
    """A local hub on 127.0.0.1 that huggingface_hub talks to (HF_ENDPOINT's setting, patched after import)."""
    import huggingface_hub.constants as hf_constants

    from .fake_hub import FakeHub

    with FakeHub() as hub:
        monkeypatch.setattr(hf_constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        yield hub
