"""FuseEval's real data files: every built-in benchmark loads from its local layout, gold answers are right (the
datasets' own reference solutions score as correct under math-verify), and bad input gives one clear error."""

from __future__ import annotations

import json

import pytest

from fusejax.eval import benchmarks as B
from fusejax.eval import evaluate
from fusejax.eval.scoring import math_verdict
from tests.eval.conftest import read_jsonl

SIZES = {"gsm8k": 1319, "minerva-math": 272, "amc23": 40, "aime24": 30, "humaneval": 164, "mbppplus": 399,
         "mmlu-pro": 12032, "gpqa": 198, "mt-bench": 80, "arena-hard": 500, "alpaca-eval": 805}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_every_local_benchmark_loads(eval_data, name):
    samples = B.load(B.resolve(name), eval_data)
    assert len(samples) == SIZES[name] and len({s["id"] for s in samples}) == len(samples)
    assert all(s["turns"] and all(isinstance(t, str) and t for t in s["turns"]) for s in samples)


def test_choice_gold_letters(eval_data):
    mmlu = B.load(B.resolve("mmlu-pro"), eval_data, limit=50)
    rows = B.read_rows(eval_data / "mmlu-pro-test.parquet")[:50]
    assert [s["gold"] for s in mmlu] == [r["answer"] for r in rows]
    assert all(len(s["meta"]["options"]) <= 10 and "N/A" not in s["meta"]["options"] for s in mmlu)
    gpqa = B.load(B.resolve("gpqa"), eval_data)
    assert all(len(s["meta"]["options"]) == 4 for s in gpqa)
    assert {s["gold"] for s in gpqa} == {"A", "B", "C", "D"}


# GSM8K reference solutions that math-verify reads wrongly: they end "#### N" with no \boxed{}, so math-verify's
# fallback picks another number of the text.
GSM8K_EXCEPTIONS = {
    "226": "text ends '33.333...%, which rounds down to 33%' and math-verify takes 33.333",
    "258": "'$4.00 + $2.00 = $6.00' is read as the expression 4.00 +",
    "876": "the last calculator annotation is read instead of '#### 41'",
    "1303": "the last calculator annotation is read instead of '#### 4'",
}
# minerva-math reference solutions whose \boxed{} answer math-verify cannot parse or compare with itself.
MINERVA_EXCEPTIONS = {
    "72": "the gold is split by '$ $' in the middle of the expression",
    "86": "the gold answer ends in a newline inside the box and is not parsed",
}


def _gold_check(samples, solutions, exceptions):
    wrong = {s["id"] for s, sol in zip(samples, solutions) if not math_verdict(sol, s["gold"])[0]}
    shifted = sum(math_verdict(sol, samples[(i + 1) % len(samples)]["gold"])[0] for i, sol in enumerate(solutions))
    return wrong, shifted / len(samples)


def test_gsm8k_gold_solutions_score_and_shifted_golds_do_not(eval_data):
    samples = B.load(B.resolve("gsm8k"), eval_data)
    wrong, shifted = _gold_check(samples, [s["meta"]["solution"] for s in samples], GSM8K_EXCEPTIONS)
    assert wrong == set(GSM8K_EXCEPTIONS)  # 1315 / 1319 = 99.7%
    assert 1 - len(wrong) / len(samples) >= 0.99
    assert shifted < 0.02  # the next row's answer: equal numbers by coincidence only (15 of 1319)


@pytest.mark.slow
def test_minerva_gold_solutions_score_and_shifted_golds_do_not(eval_data):
    samples = B.load(B.resolve("minerva-math"), eval_data)
    solutions = [r["solution"] for r in read_jsonl(eval_data / "minerva-math-test.jsonl")]
    wrong, shifted = _gold_check(samples, solutions, MINERVA_EXCEPTIONS)
    assert wrong == set(MINERVA_EXCEPTIONS)  # 270 / 272 = 99.3%
    assert shifted < 0.02


def test_minerva_gold_solutions_first_rows(eval_data):
    """The fast part of the minerva check (the whole set runs in the slow test; math-verify is slow on its LaTeX)."""
    samples = B.load(B.resolve("minerva-math"), eval_data, limit=40)
    solutions = [r["solution"] for r in read_jsonl(eval_data / "minerva-math-test.jsonl")[:40]]
    wrong, shifted = _gold_check(samples, solutions, MINERVA_EXCEPTIONS)
    assert wrong == set() and shifted == 0


def test_user_benchmark_question_is_sent_verbatim(tmp_path):
    path = tmp_path / "skills.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"question": "What is 12+30?", "answer": "42"},
                                                            {"question": "What is 7*6?", "answer": "42"},
                                                            {"question": "What is 2+2?", "answer": "4"}]))
    seen = []

    def gen(requests):
        seen.extend(r.messages for r in requests)
        return ["12 + 30 = 42", "The answer is 41", "so it is 4"]

    res = evaluate("m", [f"skills={path}"], tmp_path / "run", generator=gen)
    assert [m[-1]["content"] for m in seen] == ["What is 12+30?", "What is 7*6?", "What is 2+2?"]
    assert all(len(m) == 1 and m[0]["role"] == "user" for m in seen)
    e = res["benchmarks"]["skills"]
    assert (e["status"], e["n"], round(e["score"], 3)) == ("scored", 3, round(200 / 3, 3))
    assert res["average"] == pytest.approx(200 / 3)


def test_clear_errors(eval_data, tmp_path):
    with pytest.raises(B.DataError, match="missing file .*gsm8k-test.jsonl"):
        B.load(B.resolve("gsm8k"), tmp_path)
    bad = tmp_path / "gsm8k-test.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "no hashes"}) + "\n")
    with pytest.raises(B.DataError, match=r"gsm8k-test.jsonl row 0: GSM8K answer has no '####' line"):
        B.load(B.resolve("gsm8k"), tmp_path)
    bad.write_text(json.dumps({"problem": "q"}) + "\n")
    with pytest.raises(B.DataError, match=r"gsm8k-test.jsonl row 0: missing field 'answer'"):
        B.load(B.resolve("gsm8k"), tmp_path)
    with pytest.raises(B.DataError, match="unknown benchmark 'nope'"):
        B.resolve("nope")
    with pytest.raises(B.DataError, match="built-in benchmark name"):
        B.resolve("gsm8k=x.jsonl")
    with pytest.raises(B.DataError, match="no public copy"):
        B.load(B.resolve("gpqa"), None)  # FuseEval's formatted GPQA is local only


def test_rerun_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    from fusejax.eval.run import RunError

    evaluate("m", [f"q={path}"], tmp_path / "run", generator=lambda rs: ["2"] * len(rs))
    with pytest.raises(RunError, match="max_new_tokens differ"):
        evaluate("m", [f"q={path}"], tmp_path / "run", generator=lambda rs: ["2"] * len(rs), max_new_tokens=99)


def test_hub_sources_are_pinned(eval_data, monkeypatch):
    """Without --data-dir: the pinned commit goes to the hub loader and into the record (the loaders are replaced
    by local reads here: no network in tests)."""
    import datasets
    import huggingface_hub

    calls = []

    def fake_load_dataset(repo, config=None, split=None, revision=None):
        calls.append((repo, config, split, revision))
        return datasets.Dataset.from_list(read_jsonl(eval_data / "gsm8k-test.jsonl")[:3])

    def fake_download(repo, filename, repo_type=None, revision=None):
        calls.append((repo, filename, repo_type, revision))
        return str(eval_data / "alpaca-eval-gpt4-baseline.json")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    sources = {}
    assert len(B.load(B.resolve("gsm8k"), None, 2, sources)) == 2
    assert len(B.load(B.resolve("alpaca-eval"), None, 2, sources)) == 2
    assert calls == [("openai/gsm8k", "main", "test", "cc7b047b6e5bb11b4f1af84efc572db110a51b3c"),
                     ("tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline.json", "dataset",
                      "2edc6fad8be6b14ea7230aabfd08188da6b8b814")]
    assert sources == {"gsm8k": "openai/gsm8k@cc7b047b6e5bb11b4f1af84efc572db110a51b3c [main/test]",
                       "alpaca-eval": "tatsu-lab/alpaca_eval@2edc6fad8be6b14ea7230aabfd08188da6b8b814 "
                                      "(alpaca_eval_gpt4_baseline.json)"}


def test_rerun_against_changed_weights_is_refused(tmp_path):
    from fusejax.eval.run import RunError

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights v1")
    evaluate(str(model), [f"q={path}"], tmp_path / "run", generator=lambda rs: ["2"] * len(rs))
    evaluate(str(model), [f"q={path}"], tmp_path / "run", generator=lambda rs: ["2"] * len(rs))  # same: resumes
    (model / "model.safetensors").write_bytes(b"weights v2, retrained")
    with pytest.raises(RunError, match="model_fingerprint differ"):
        evaluate(str(model), [f"q={path}"], tmp_path / "run", generator=lambda rs: ["2"] * len(rs))


class _StreamingGenerator:
    """Answers finish out of order (as a continuous-batching engine's do): the driver must write each part as soon
    as `batch_size` answers are in, and keep every answer with its own sample."""

    def __init__(self):
        self.parts_seen_at = []

    def __call__(self, requests):  # the batch path (unused here: `stream` exists)
        raise AssertionError("the driver should stream")

    def stream(self, requests):
        order = sorted(range(len(requests)), key=lambda i: (i % 3, i))  # 0,3,6,... then 1,4,7,... then 2,5,8
        for i in order:
            question = requests[i].messages[-1]["content"]
            yield i, "the answer is " + question.split()[-1].rstrip("?")


def test_streaming_generation_writes_parts_in_finishing_order(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": f"Echo {i}?", "answer": str(i)}) + "\n" for i in range(8)))
    res = evaluate("m", [f"echo={path}"], tmp_path / "run", generator=_StreamingGenerator(), batch_size=3)
    assert res["benchmarks"]["echo"]["score"] == 100.0
    parts = sorted((tmp_path / "run" / "echo").glob("part-*.jsonl"))
    assert sorted(len(read_jsonl(p)) for p in parts) == [2, 3, 3]
    groups = sorted(sorted(int(r["id"]) for r in read_jsonl(p)) for p in parts)
    assert groups == [[0, 3, 6], [1, 4, 7], [2, 5]]  # finishing order, not dataset order
    rows = read_jsonl(tmp_path / "run" / "echo" / "samples.jsonl")
    assert [r["index"] for r in rows] == list(range(8)) and all(r["extracted"] == r["gold"] for r in rows)
