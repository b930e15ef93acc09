"""The demo: its prompt sets, its tokenizers, and its fusion loop at reduced size (configs/demo/fast.yaml).

The fusion test runs `fusejax demo` in a subprocess (one CPU device, as a user runs it) and checks the claims against
references that do not come from the code under test: gold answers recomputed from the question text, the binomial
noise of the held-out accuracy, and which source knows which skill by construction.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _answer(question: str) -> int:
    """Independent gold answer from the question text."""
    nums = [int(x) for x in re.findall(r"\d+", question)]
    if " plus " in question:
        return nums[0] + nums[1]
    if " minus " in question:
        return nums[0] - nums[1]
    if question.startswith("Max of"):
        return max(nums)
    if question.startswith("Min of"):
        return min(nums)
    raise AssertionError(f"unknown question form {question!r}")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_skill_files_are_correct_and_disjoint(tmp_path):
    from fusejax.demo.skills import write_skill_files

    files = write_skill_files(tmp_path, ["add", "sub", "max", "min"], held_out=50, prompts=300, gold=500, seed=0)
    for skill in ("add", "sub", "max", "min"):
        held = _rows(files.held_out[skill])
        prompts = _rows(files.prompts[skill])
        gold = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in _rows(files.gold[skill])]
        assert len(held) == 50 and len(prompts) == 300 and len(gold) == 500
        for q, a in [(r["question"], r["answer"]) for r in held + prompts] + gold:
            assert int(a) == _answer(q), (q, a)
        held_q = {r["question"] for r in held}
        assert len(held_q) == 50 and len({r["question"] for r in prompts}) == 300  # distinct
        assert not held_q & {r["question"] for r in prompts}
        assert not held_q & {q for q, _ in gold}
    # Same seed, same sets: a rerun of the demo resumes on identical data.
    again = write_skill_files(tmp_path / "again", ["add"], held_out=50, prompts=300, gold=500, seed=0)
    assert again.held_out["add"].read_text() == files.held_out["add"].read_text()


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
def test_digit_tokenizer_and_model_train_on_the_chat_format(tmp_path, family):
    """Digits are single tokens; the family's template renders prefix-consistently (fusejax tokenisation accepts
    it) and the response span is exactly the answer plus the end-of-turn token."""
    from transformers import AutoConfig

    from fusejax.tiny import FAMILY_STYLE, digit_tokenizer, save_trainable_model
    from fusejax.training.data import ChatTokenizer

    tok = digit_tokenizer(tmp_path, FAMILY_STYLE[family], ["plus", "Max", "of"])
    assert [tok.convert_ids_to_tokens(i) for i in tok("4711", add_special_tokens=False)["input_ids"]] == list("4711")
    assert len(tok("Max of", add_special_tokens=False)["input_ids"]) == 2  # whole words
    ids, mask = ChatTokenizer(tok).sft([{"role": "user", "content": "47 plus 8?"},
                                        {"role": "assistant", "content": "55"}])
    response = tok.decode(ids[mask.astype(bool)])
    assert response.startswith("55" + tok.eos_token)
    assert tok.decode(ids[mask.astype(bool)][:3], skip_special_tokens=True) == "55"
    save_trainable_model(tmp_path / "m", family, tok, hidden_size=64, num_layers=1)
    cfg = AutoConfig.from_pretrained(tmp_path / "m")
    assert cfg.vocab_size == len(tok) and cfg.eos_token_id == tok.eos_token_id


def test_demo_config_errors(tmp_path):
    from fusejax.demo import config as config_lib
    from fusejax.models.config import ConfigError

    path = ROOT / "configs" / "demo" / "demo.yaml"
    for override, message in [("skills=[add, div]", "unknown skill"), ("pipeline.samples=1", "at least 2"),
                              ("target.size.hidden_size=48", "head_dim"), ("sft.epochs=two", "sft.epochs")]:
        with pytest.raises(ConfigError, match=message):
            config_lib.load(path, [override])
    cfg = config_lib.load(ROOT / "configs" / "demo" / "fast.yaml")
    assert {s.family for s in cfg.sources} == {"llama", "gemma2"}


def _run_demo(config: Path, out: Path, timeout: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as `fusejax demo` runs
    proc = subprocess.run([sys.executable, "-m", "fusejax", "demo", "--config", str(config), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def _noise_margin(n: int, k: float = 3.0) -> float:
    """k standard deviations (percentage points) of the difference of two accuracies, each measured on n held-out
    prompts, at the worst case p = 0.5: k * sqrt(2 * 0.25 / n) * 100. Two models with the same true accuracy
    differ by more than this with probability < 0.3% (k = 3), so a larger gain is not evaluation noise."""
    return k * float(np.sqrt(2 * 0.25 / n)) * 100


@pytest.mark.xfail(strict=False, reason="open work (issue 9): at the fast config the fused target does not yet clear "
                   "the per-skill noise margin on every skill in every run")
def test_fusion_loop_improves_the_target(tmp_path):
    """configs/demo/fast.yaml end to end: two tiny sources (Llama: min of three, Gemma-2: max of three) trained by
    fusejax SFT, the data pipeline, SFT + LN-DPO of an untrained target, `fusejax eval` on held-out prompts."""
    config = ROOT / "configs" / "demo" / "fast.yaml"
    summary = _run_demo(config, tmp_path / "demo", timeout=1200)
    m = summary["margins"]
    n = 2 * 60  # held-out prompts: 2 skills x 60 (configs/demo/fast.yaml)
    assert m["fused_minus_start"] > _noise_margin(n), m
    # Every skill is learned, not one at the expense of the other (each measured on 60 prompts).
    for skill, s in m["per_skill"].items():
        assert s["fused"] - s["start"] > _noise_margin(60, k=2.0), (skill, s)
    # Correctness picks the specialist: the SFT answers of each skill come mostly from the source trained on it.
    specialist = {"min": "llama-min", "max": "gemma-max"}
    for skill, by_source in summary["data"]["sft"].items():
        assert by_source.get(specialist[skill], 0) >= 0.8 * sum(by_source.values()), (skill, by_source)
    # Each source is strong on its own skill and weak on the other (by construction: it never saw it).
    for skill, name in specialist.items():
        other = next(s for s in specialist if s != skill)
        own = _score(tmp_path / "demo", f"source-{name}", skill)
        assert own - _score(tmp_path / "demo", f"source-{name}", other) > _noise_margin(60), (name, own)
    # The outputs the closing message points at exist.
    for rel in ["target/dpo/hf/config.json", "pipeline/report/summary.json", "eval/compare.png", "eval/compare.md"]:
        assert (tmp_path / "demo" / rel).is_file(), rel


def _score(work: Path, slug: str, skill: str) -> float:
    return json.loads((work / "eval" / slug / "results.json").read_text())["benchmarks"][skill]["score"]


@pytest.mark.slow
def test_full_demo_fuses_and_beats_every_source(tmp_path):
    """The full `fusejax demo` (configs/demo/demo.yaml): the fused target beats every single source on the combined
    held-out set by more than evaluation noise."""
    summary = _run_demo(ROOT / "configs" / "demo" / "demo.yaml", tmp_path / "demo", timeout=3600)
    m = summary["margins"]
    n = 3 * 100
    assert m["fused_minus_best_source"] > _noise_margin(n), m
    assert m["fused_minus_start"] > _noise_margin(n), m
    print(json.dumps(m, indent=2))
