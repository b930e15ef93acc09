"""HumanEval and MBPP+ scoring against their canonical solutions (a reference no one here wrote), through
`fusejax eval` with a generator that returns them, the project's code harness and the sandbox."""

from __future__ import annotations

import json

import pytest

from fusejax.eval import code as C
from fusejax.eval import evaluate
from fusejax.eval.prompts import CODE_INSTRUCTION
from tests.eval.conftest import read_jsonl

pytestmark = pytest.mark.usefixtures("sandbox_available")


@pytest.fixture(scope="module")
def sandbox_available():
    from data_pipeline import sandbox

    try:
        sandbox.check_available()
    except sandbox.SandboxUnavailable as e:
        pytest.skip(str(e))


def _task_prompt(request) -> str:
    """The task prompt inside the user turn's code block (what a model sees)."""
    text = request.messages[0]["content"]
    assert text.startswith(CODE_INSTRUCTION + "\n```\n")
    return text[len(CODE_INSTRUCTION) + 5:].rsplit("\n```\n", 1)[0]


def canonical_generator(rows: list[dict], key: str, solution):
    by_prompt = {r[key].strip(): r for r in rows}

    def generate(requests):
        assert all(r.continues and r.messages[-1]["content"].endswith("```python\n") for r in requests)
        return [solution(by_prompt[_task_prompt(r)]) + "\n```\nThis function works because ..." for r in requests]

    return generate


def test_humaneval_canonical_solutions_score_164(eval_data, tmp_path):
    rows = read_jsonl(eval_data / "humaneval.jsonl")
    gen = canonical_generator(rows, "prompt", lambda r: r["prompt"] + r["canonical_solution"])
    res = evaluate("canonical", ["humaneval"], tmp_path, data_dir=eval_data, generator=gen, batch_size=82, log=print)
    entry = res["benchmarks"]["humaneval"]
    samples = read_jsonl(tmp_path / "humaneval" / "samples.jsonl")
    failed = [(s["id"], s["detail"]) for s in samples if not s["verdict"]]
    assert (entry["n"], failed, entry["score"]) == (164, [], 100.0)


def test_humaneval_wrong_solutions_fail(eval_data, tmp_path):
    """Shifted: each task answered with the next task's canonical solution renamed to this entry point."""
    rows = read_jsonl(eval_data / "humaneval.jsonl")[:40]
    nxt = {r["task_id"]: rows[(i + 1) % len(rows)] for i, r in enumerate(rows)}

    def wrong(r):
        other = nxt[r["task_id"]]
        return (other["prompt"] + other["canonical_solution"]).replace(f"def {other['entry_point']}(",
                                                                      f"def {r['entry_point']}(")

    gen = canonical_generator(rows, "prompt", wrong)
    res = evaluate("shifted", ["humaneval"], tmp_path, limit=40, data_dir=eval_data, generator=gen, batch_size=40)
    assert res["benchmarks"]["humaneval"]["score"] <= 5.0


# MBPP+ v0.1.0 tasks whose own canonical solution cannot pass evalplus's comparison (removed from MBPP+ v0.2.0,
# evalplus's "21 broken tasks"): they return re.Match objects, which compare by identity.
MBPP_BROKEN = {"Mbpp/737", "Mbpp/787", "Mbpp/794"}
# A fast subset covering the special cases: evalplus's input deserialisation (2, 115, 124, 252, 722), float atol
# (the atol>0 tasks come first in the file order below), an entry point named `check` (56), a generator helper
# (630), the find_zero-like oracles sum_div (295) and are_equivalent (164).
MBPP_SUBSET = ["Mbpp/2", "Mbpp/56", "Mbpp/115", "Mbpp/124", "Mbpp/164", "Mbpp/252", "Mbpp/295", "Mbpp/630",
               "Mbpp/722", "Mbpp/737"]


def _mbpp_rows(eval_data, ids=None):
    rows = read_jsonl(eval_data / "mbppplus-v0.1.0.jsonl")
    if ids is None:
        return rows
    floats = [r["task_id"] for r in rows if r["atol"]][:3]
    return [r for r in rows if r["task_id"] in set(ids) | set(floats)]


def _mbpp_check(rows, tmp_path, eval_data):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mbppplus-v0.1.0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = canonical_generator(rows, "prompt", lambda r: r["canonical_solution"])
    res = evaluate("canonical", ["mbppplus"], tmp_path / "run", data_dir=tmp_path / "data", generator=gen,
                   batch_size=len(rows))
    return res["benchmarks"]["mbppplus"], read_jsonl(tmp_path / "run" / "mbppplus" / "samples.jsonl")


def test_mbppplus_canonical_solutions_pass_base_and_plus_subset(eval_data, tmp_path):
    rows = _mbpp_rows(eval_data, MBPP_SUBSET)
    entry, samples = _mbpp_check(rows, tmp_path, eval_data)
    failed = {s["id"] for s in samples if not s["verdict"]}
    assert failed == MBPP_BROKEN & {r["task_id"] for r in rows}, [(s["id"], s["detail"]) for s in samples
                                                                  if s["id"] in failed]
    assert all(s["tests"]["base"]["passed"] for s in samples if s["id"] not in MBPP_BROKEN)


@pytest.mark.slow
def test_mbppplus_all_canonical_solutions_pass_base_and_plus(eval_data, tmp_path):
    rows = _mbpp_rows(eval_data)
    entry, samples = _mbpp_check(rows, tmp_path, eval_data)
    failed = {s["id"]: s["detail"] for s in samples if not s["verdict"]}
    assert set(failed) <= MBPP_BROKEN | {"Mbpp/599"}, failed  # 599: 30 x sum(range(1e8)) may time out on slow CPUs
    assert entry["n"] == 399


def test_mbppplus_wrong_solutions_fail(eval_data, tmp_path):
    rows = _mbpp_rows(eval_data)[:30]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mbppplus-v0.1.0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = canonical_generator(rows, "prompt", lambda r: f"def {r['entry_point']}(*args):\n    return None\n")
    res = evaluate("none", ["mbppplus"], tmp_path / "run", data_dir=tmp_path / "data", generator=gen, batch_size=30)
    assert res["benchmarks"]["mbppplus"]["score"] == 0.0


def test_mbppplus_canonical_solutions_pass_the_original_assertions(eval_data):
    """An independent check of the same solutions: MBPP's own `assertion` statements, run by the harness."""
    from data_pipeline import harness

    # Mbpp/164 and Mbpp/295: MBPP+ corrected the reference against MBPP's wrong original assertions; evalplus's
    # special oracles accept either behaviour, the original assertions only the old one.
    rows = [r for r in _mbpp_rows(eval_data, MBPP_SUBSET) if r["task_id"] not in ("Mbpp/164", "Mbpp/295")]
    items = [(C.solution_from_response(r["canonical_solution"], r["entry_point"]),
              harness.TestSpec("asserts", r["assertion"])) for r in rows]
    verdicts = harness.run_many(items)
    assert [(r["task_id"], v.reason) for r, v in zip(rows, verdicts) if not v.passed] == []


def test_sanitizer_keeps_the_solution_and_drops_script_noise():
    response = '''import math
from typing import List

def helper(x):
    return math.sqrt(x)

def area(r: float) -> float:
    """Area of a circle."""
    return math.pi * helper(r) ** 2

def unused():
    return 1

print(area(2))
assert area(1) > 3
if __name__ == "__main__":
    r = float(input())
    print(area(r))
'''
    out = C.sanitize(response, "area")
    assert "def area" in out and "def helper" in out and "import math" in out
    assert "print(" not in out and "assert" not in out and "__main__" not in out and "def unused" not in out


def test_sanitizer_takes_the_longest_valid_stretch():
    response = "def f(x):\n    return x + 1\n\nThis works because it adds one.\n"
    assert C.sanitize(response, "f") == "def f(x):\n    return x + 1"
