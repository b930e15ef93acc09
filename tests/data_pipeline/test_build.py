"""The FuseChat-3.0 construction rules at their edges (FACTS.md), on hand-made responses."""

import pytest

from data_pipeline.build import dpo_choice, sft_choice, split_of
from data_pipeline.config import BuildSpec

SPEC = BuildSpec(gap_min=0.01, gap_max=0.1, chinese_model="qwen")


def r(model, sample, score, correct=None, text=None):
    return {"model": model, "sample": sample, "score": score, "correct": correct,
            "text": text or f"{model}-{sample}"}


def test_sft_instruction_takes_best_over_all_sources():
    rs = [r("a", 0, 0.5), r("b", 0, 0.9), r("b", 1, 0.2), r("c", 0, 0.89)]
    assert sft_choice("instruction", rs, SPEC)[0]["model"] == "b"


def test_sft_math_takes_best_correct_not_best_overall():
    rs = [r("a", 0, 0.99, correct=False), r("b", 0, 0.5, correct=True), r("c", 0, 0.6, correct=True)]
    assert sft_choice("math", rs, SPEC)[0]["model"] == "c"
    none, why = sft_choice("math", [r("a", 0, 0.9, correct=False)], SPEC)
    assert none is None and why == "no correct response"


def test_sft_chinese_uses_the_named_model():
    rs = [r("a", 0, 0.99), r("qwen", 0, 0.1)]
    assert sft_choice("chinese", rs, SPEC)[0]["model"] == "qwen"


def test_sft_tie_broken_deterministically():
    rs = [r("b", 0, 0.7), r("a", 3, 0.7), r("a", 1, 0.7)]
    chosen = sft_choice("instruction", rs, SPEC)[0]
    assert (chosen["model"], chosen["sample"]) == ("a", 1)


@pytest.mark.parametrize("gap,kept", [(0.01, True), (0.1, True), (0.0099, False), (0.1001, False), (0.05, True)])
def test_dpo_gap_window_edges(gap, kept):
    base = 0.7
    rs = [r("a", 0, base + gap), r("a", 1, base + gap / 2), r("a", 2, base)]
    pair, why = dpo_choice("instruction", rs, SPEC)
    assert (pair is not None) == kept
    if kept:
        assert (pair[0]["sample"], pair[1]["sample"]) == (0, 2)  # highest vs lowest of the same model
    else:
        assert why == "reward gap outside window"


def test_dpo_pairs_never_mix_models():
    # across models the best/worst would have gap 0.05; within each model the gap is 0.5: no pair
    rs = [r("a", 0, 0.75), r("a", 1, 0.25), r("b", 0, 0.8), r("b", 1, 0.3)]
    pair, why = dpo_choice("instruction", rs, SPEC)
    assert pair is None and why == "reward gap outside window"


def test_dpo_one_sample_and_ties():
    assert dpo_choice("instruction", [r("a", 0, 0.5)], SPEC)[0] is None
    tied = [r("a", 0, 0.5), r("a", 1, 0.5)]
    assert dpo_choice("instruction", tied, SPEC)[0] is None  # gap 0 < 0.01


def test_dpo_prefers_model_with_highest_chosen_score():
    rs = [r("a", 0, 0.60), r("a", 1, 0.55), r("b", 0, 0.80), r("b", 1, 0.75)]
    pair, _ = dpo_choice("instruction", rs, SPEC)
    assert pair[0]["model"] == "b" and pair[1]["model"] == "b"


def test_dpo_math_chosen_correct_rejected_incorrect():
    rs = [r("a", 0, 0.90, correct=False), r("a", 1, 0.80, correct=True), r("a", 2, 0.75, correct=False),
          r("a", 3, 0.78, correct=True)]
    pair, _ = dpo_choice("math", rs, SPEC)
    assert (pair[0]["sample"], pair[1]["sample"]) == (1, 2)  # best correct (0.80) vs worst incorrect (0.75)


@pytest.mark.parametrize("flags", [[True, True], [False, False]])
def test_dpo_math_needs_both_correct_and_incorrect(flags):
    rs = [r("a", i, 0.5 + 0.02 * i, correct=c) for i, c in enumerate(flags)]
    pair, why = dpo_choice("math", rs, SPEC)
    assert pair is None and why == "no correct/incorrect pair within one model"


def test_chinese_is_sft_only():
    assert split_of("any", "chinese", SPEC, 0) == "sft"
    assert dpo_choice("chinese", [r("qwen", 0, 0.5), r("qwen", 1, 0.45)], SPEC)[0] is None


def test_split_is_seeded_and_about_four_to_six():
    ids = [f"p{i}" for i in range(4000)]
    splits = [split_of(i, "instruction", SPEC, 0) for i in ids]
    assert splits == [split_of(i, "instruction", SPEC, 0) for i in ids]
    assert abs(splits.count("sft") / len(ids) - 0.4) < 0.03
    assert splits != [split_of(i, "instruction", SPEC, 1) for i in ids]


def _write_rows(path, rows):
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("sft_fraction", [1.0, 0.0])
def test_a_dataset_response_is_one_more_source(tmp_path, sft_fraction):
    """OpenMathInstruct-2's own 405B solution (one per prompt) can win SFT but never forms a DPO pair alone."""
    from data_pipeline.build import build
    from data_pipeline.config import DatasetSpec, PipelineConfig
    from data_pipeline.select import dataset_response_rows

    prompts = [{"id": pid, "dataset": "om", "domain": "math", "answer": "4",
                "messages": [{"role": "user", "content": f"{pid}: 2 + 2?"}]} for pid in ("both", "only405b")]
    _write_rows(tmp_path / "select" / "prompts.jsonl", prompts)
    big = dataset_response_rows({"both": "It is 4.", "only405b": "Four: 4."}, "llama-3.1-405b-instruct")
    _write_rows(tmp_path / "sample" / "llama-3.1-405b-instruct" / "part-dataset-om.jsonl", big)
    qwen = [{"prompt_id": "both", "model": "qwen-math", "sample": i, "text": t, "num_tokens": 3,
             "finish_reason": "stop"} for i, t in enumerate(["4", "5", "4!"])]
    _write_rows(tmp_path / "sample" / "qwen-math" / "part-a.jsonl", qwen)
    scores = {("both", "llama-3.1-405b-instruct", 0): 0.90, ("only405b", "llama-3.1-405b-instruct", 0): 0.7,
              ("both", "qwen-math", 0): 0.85, ("both", "qwen-math", 1): 0.80, ("both", "qwen-math", 2): 0.5}
    correct = {("both", "qwen-math", 1): False}
    _write_rows(tmp_path / "score" / "part-a.jsonl", [
        {"prompt_id": p, "model": m, "sample": s, "score": v} for (p, m, s), v in scores.items()])
    _write_rows(tmp_path / "verify" / "part-a.jsonl", [
        {"prompt_id": p, "model": m, "sample": s, "correct": correct.get((p, m, s), True), "detail": "math-verify"}
        for p, m, s in scores])
    cfg = PipelineConfig(datasets=[DatasetSpec(name="om", source="x", domain="math", prompt_field="q",
                                               answer_field="a")],
                         build=BuildSpec(sft_fraction={"math": sft_fraction}, gap_min=0.01, gap_max=0.1))
    summary = build(cfg, tmp_path, log=lambda *_: None)
    kept = {(k["stage"], k["model"]): k["count"] for k in summary["kept"]}
    if sft_fraction == 1.0:
        assert kept == {("sft", "llama-3.1-405b-instruct"): 2}  # highest correct score on both prompts
    else:
        assert kept == {("dpo", "qwen-math"): 1}  # 0.85 correct vs 0.80 incorrect, both from qwen-math
        assert [(d["reason"], d["count"]) for d in summary["dropped"]] == [
            ("dpo: no correct/incorrect pair within one model", 1)]
