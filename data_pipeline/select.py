"""Stage 1, select: prompts from the source datasets -> one prompt table with stable ids.

Math/code detection (the paper does not say how it removed them): a prompt counts as code when it holds a code fence,
a function/class definition, or programming vocabulary (python, javascript, function, algorithm, SQL, ...); as math
when it holds LaTeX math ($, \\frac, \\sqrt, ...), an equation-like pattern (digits joined by = + - * / ^), or math
vocabulary (solve, calculate, integral, probability, ...). Deliberately broad: a false drop costs one prompt, a false
keep puts an unverifiable math or code prompt into the instruction-following split.
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import re
import unicodedata
from pathlib import Path

from data_pipeline.config import DatasetSpec, PipelineConfig
from data_pipeline.store import write_json_atomic, write_jsonl_atomic

_CODE = re.compile(
    r"```|\bdef\s+\w+\s*\(|\bclass\s+\w+[:(]|#include|\bpython\b|\bjavascript\b|\btypescript\b|\bjava\b|\bc\+\+|"
    r"\brust\b|\bgolang\b|\bsql\b|\bhtml\b|\bcss\b|\bfunction\b|\bcode\b|\bprogram\b|\balgorithm\b|\bscript\b|"
    r"\bregex\b|\bapi\b|\bcompile|\bbug\b|\bdebug|\bimplement", re.I)
_MATH = re.compile(
    r"\$[^$]+\$|\\frac|\\sqrt|\\int|\\sum|\\cdot|\d\s*[=+\-*/^×÷]\s*\d|\bsolve\b|\bcalculate\b|\bcompute\b|"
    r"\bequation\b|\bintegral\b|\bderivative\b|\bprobability\b|\bpolynomial\b|\bgeometry\b|\btriangle\b|"
    r"\bprime\b|\bfraction\b|\bsum of\b|\bhow many\b|计算|方程|求解|数学|概率", re.I)


def is_code(text: str) -> bool:
    return bool(_CODE.search(text))


def is_math(text: str) -> bool:
    return bool(_MATH.search(text))


def normalise(text: str) -> str:
    """For near-duplicate detection: NFKC, lower case, punctuation and whitespace removed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[\W_]+", "", text)


def prompt_id(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def _messages(row: dict, spec: DatasetSpec) -> list[dict]:
    if spec.prompt_field:
        value = row.get(spec.prompt_field)
        if not isinstance(value, str):
            raise ValueError(f"missing or non-text field '{spec.prompt_field}'")
        return [{"role": "user", "content": value}]
    conv = row.get(spec.messages_field)
    if not isinstance(conv, list) or not conv:
        raise ValueError(f"missing or empty field '{spec.messages_field}'")
    roles = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}
    out = []
    for m in conv:
        if not isinstance(m, dict):
            raise ValueError(f"'{spec.messages_field}' holds a non-message")
        role = roles.get(m.get("role", m.get("from")))
        content = m.get("content", m.get("value"))
        if role is None or not isinstance(content, str):
            raise ValueError(f"'{spec.messages_field}' has a message with unknown role or no text")
        out.append({"role": role, "content": content})
    while out and out[-1]["role"] == "assistant":
        out.pop()  # the prompt is what precedes the final answer
    if not out or out[-1]["role"] != "user":
        raise ValueError("conversation has no final user turn")
    return out


def select(cfg: PipelineConfig, out_dir: Path, log=print) -> dict:
    """Write OUT/select/prompts.jsonl and OUT/select/report.json; returns the report."""
    from fusejax.training.data import DataReport, read_rows

    seen_ids: set[str] = set()
    seen_norm: set[str] = set()
    table = []
    report: dict = {}
    rng = random.Random(cfg.seed)
    for spec in cfg.datasets:
        rows_report = DataReport()
        drops = collections.Counter()
        kept = []
        for where, row in read_rows([spec.source], spec.split, rows_report, subset=spec.subset):
            rows_report.rows += 1
            try:
                messages = _messages(row, spec)
            except ValueError as e:
                drops[f"bad row: {e}"] += 1
                continue
            text = "\n".join(m["content"] for m in messages if m["role"] != "assistant")
            if not (spec.min_chars <= len(text) <= spec.max_chars):
                drops["length limits"] += 1
                continue
            if spec.drop_code and is_code(text):
                drops["code prompt"] += 1
                continue
            if spec.drop_math and is_math(text):
                drops["math prompt"] += 1
                continue
            entry = {"messages": messages}
            if spec.domain == "math":
                answer = row.get(spec.answer_field)
                if answer is None or str(answer).strip() == "":
                    drops["no gold answer"] += 1
                    continue
                entry["answer"] = str(answer)
            if spec.domain == "code":
                tests = row.get(spec.tests_field)
                if isinstance(tests, list):
                    tests = "\n".join(map(str, tests))
                if not tests or not str(tests).strip():
                    drops["no tests"] += 1
                    continue
                entry["tests"] = str(tests)
            pid = prompt_id(messages)
            norm = normalise(text)
            if pid in seen_ids:
                drops["exact duplicate"] += 1
                continue
            if norm in seen_norm:
                drops["normalised duplicate"] += 1
                continue
            seen_ids.add(pid)
            seen_norm.add(norm)
            kept.append({"id": pid, "dataset": spec.name, "domain": spec.domain, **entry})
        for reason, n in rows_report.skipped.items():
            drops[f"bad row: {reason}"] += n
        if spec.limit is not None and len(kept) > spec.limit:
            drops["over limit"] += len(kept) - spec.limit
            kept = sorted(rng.sample(kept, spec.limit), key=lambda r: r["id"])
        table.extend(kept)
        report[spec.name] = {"rows": rows_report.rows, "kept": len(kept), "dropped": dict(drops)}
        log(f"select {spec.name}: {len(kept)} prompts kept of {rows_report.rows} rows; dropped {dict(drops)}")
    write_jsonl_atomic(out_dir / "select" / "prompts.jsonl", table)
    write_json_atomic(out_dir / "select" / "report.json", report)
    return report
