"""Stage 4, verify: correctness of math answers (math-verify against the gold label) and code (compile, then the
prompt's tests in the sandbox). Instruction and Chinese responses get correct = null.

Output rows {"prompt_id", "model", "sample", "correct", "detail"} in part files under OUT/verify/.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import time
from pathlib import Path

from data_pipeline import sandbox
from data_pipeline.config import PipelineConfig
from data_pipeline.harness import TestSpec, run_tests
from data_pipeline.sample import pending_responses, write_response_part

_FENCE = re.compile(r"```[ \t]*(python|py|python3)?[ \t]*\n(.*?)```", re.S | re.I)


def math_correct(response: str, gold: str) -> bool:
    """math-verify: parse the gold label and the response's final answer, compare symbolically."""
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$") or parse(gold)
    answer = parse(response)
    if not gold_parsed or not answer:
        return False
    return bool(verify(gold_parsed, answer))


def extract_code(response: str) -> str | None:
    """The response's Python code: the python-tagged fenced blocks (else any fenced blocks), joined; None if none."""
    blocks = _FENCE.findall(response)
    chosen = [code for lang, code in blocks if lang] or [code for _, code in blocks]
    joined = "\n\n".join(chosen).strip()
    return joined or None


def code_correct(response: str, tests: TestSpec | dict | str, limits: sandbox.Limits | None = None
                 ) -> tuple[bool, str]:
    """The response's code against the prompt's tests (a TestSpec, its dict, or a legacy string of asserts) through
    the harness; the reason for a failure comes back as the detail."""
    spec = tests if isinstance(tests, TestSpec) else TestSpec.from_dict(tests)
    code = extract_code(response)
    if code is None:
        return False, "no code block"
    try:
        compile(code, "<solution>", "exec")  # the static check
    except (SyntaxError, ValueError) as e:
        return False, f"does not compile: {type(e).__name__}"
    verdict = run_tests(code, spec, limits)
    return verdict.passed, verdict.reason


def verify(cfg: PipelineConfig, out_dir: Path, shard: tuple[int, int] = (0, 1), log=print) -> dict:
    prompts, todo, total = pending_responses(out_dir, "verify", shard)
    log(f"verify: {total} responses in shard {shard[0]}/{shard[1]}, {len(todo)} to check")
    if not todo:
        return {"verified": 0}
    if any(prompts[r["prompt_id"]]["domain"] == "code" for r in todo):
        sandbox.check_available()
    limits = sandbox.Limits(wall_s=cfg.verify.wall_s, cpu_s=cfg.verify.cpu_s, memory_mb=cfg.verify.memory_mb)
    workers = cfg.verify.workers or os.cpu_count() or 1

    def check(r: dict) -> dict:
        p = prompts[r["prompt_id"]]
        if p["domain"] == "math":
            ok, detail = math_correct(r["text"], p["answer"]), "math-verify"
        elif p["domain"] == "code":
            ok, detail = code_correct(r["text"], p["tests"], limits)
        else:
            ok, detail = None, "not verifiable"
        return {"prompt_id": r["prompt_id"], "model": r["model"], "sample": r["sample"], "correct": ok,
                "detail": detail}

    t0, n = time.time(), 0
    step = max(64, workers * 8)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            # math-verify times out with signals, which only work in the main thread: math runs here,
            # code (sandboxed subprocesses) on the pool.
            futures = {i: pool.submit(check, r) for i, r in enumerate(batch)
                       if prompts[r["prompt_id"]]["domain"] == "code"}
            rows = [futures[i].result() if i in futures else check(r) for i, r in enumerate(batch)]
            write_response_part(out_dir / "verify", rows, shard)
            n += len(batch)
            log(f"  verified {n}/{len(todo)}, {n / (time.time() - t0):.2f} responses/s")
    return {"verified": n, "seconds": time.time() - t0}
