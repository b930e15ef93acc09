"""Stage 1, select: prompts from the source datasets -> one prompt table with stable ids.

Each dataset is read as it really is (configs/data/fusechat3.yaml names the fields): a text field becomes one user
message (plus a non-empty `input_field` as text + "\n" + input, alpaca); HelpSteer2's one-string multi-turn prompts
are split into messages; conversation fields accept {role, content} and ShareGPT {from, value}. Code prompts carry
their tests as a harness TestSpec dict: from fields (LeetCodeDataset: check(candidate) tests, entry point, import
preamble) or from the instruction itself (self-oss-instruct: the one fenced block after "Your code should pass the
following assertion(s):"). A dataset's own responses (`responses: {field, model}`) are written as that model's sample
rows. The report gives per dataset the rows read, prompts kept and each drop reason; a dataset yielding no prompt,
or a configured field that no row has, is an error naming the dataset and the field.

Math/code detection (the paper does not say how it removed them): a prompt counts as code when it holds a code fence,
a function/class definition, or programming vocabulary (python, javascript, function, algorithm, SQL, ...); as math
when it holds LaTeX math ($, \\frac, \\sqrt, ...), an equation-like pattern (digits joined by = + - * / ^), or math
vocabulary (solve, calculate, integral, probability, ...). Deliberately broad: a false drop costs one prompt, a false
keep puts an unverifiable math or code prompt into the instruction-following split.
"""

from __future__ import annotations

import ast
import collections
import hashlib
import json
import random
import re
import time
import unicodedata
from pathlib import Path

from data_pipeline.config import DatasetSpec, PipelineConfig
from data_pipeline.store import write_json_atomic, write_jsonl_atomic
from fusejax.models.config import ConfigError

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


_ASSERTION_MARKER = re.compile(r"Your code should pass the following assertions?:")
_FENCED = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)
_HELPSTEER2_TURN = re.compile(r"<extra_id_1>(User|Assistant)[ \t]*\n?")
_ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}


class Drop(ValueError):
    """A row that yields no prompt; the message is the drop reason counted in the report."""


def instruction_assertions(text: str) -> str:
    """The asserts of a self-oss-instruct instruction: the one fenced block after "Your code should pass the
    following assertion(s):" (bigcode-project/starcoder2-self-align's format). Only an instruction with exactly one
    such block, holding at least one assert statement, has tests."""
    markers = list(_ASSERTION_MARKER.finditer(text))
    if not markers:
        raise Drop("no tests: no assertion block in the instruction")
    if len(markers) > 1:
        raise Drop("no tests: several assertion blocks in the instruction")
    after = text[markers[0].end():]
    blocks = _FENCED.findall(after)
    if not blocks or after[:after.find("```")].strip():
        raise Drop("no tests: assertion marker not followed by a fenced code block")
    if len(blocks) > 1:
        raise Drop("no tests: several code blocks after the assertion marker")
    block = blocks[0]
    try:
        tree = ast.parse(block)
    except SyntaxError:
        raise Drop("no tests: assertion block does not parse") from None
    if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
        raise Drop("no tests: assertion block has no assert")
    return block


def helpsteer2_messages(text: str) -> list[dict]:
    """HelpSteer2 keeps a multi-turn prompt in one string: the first user turn, then turns introduced by
    "<extra_id_1>Assistant" / "<extra_id_1>User" lines. Split it into messages (as open-instruct and NeMo-Aligner do)."""
    parts = _HELPSTEER2_TURN.split(text)
    messages = [{"role": "user", "content": parts[0].strip()}] if parts[0].strip() else []
    for role, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": role.lower(), "content": content.strip()})
    for i, m in enumerate(messages):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise Drop("bad row: helpsteer2 turns do not alternate user/assistant")
        if not m["content"]:
            raise Drop("bad row: helpsteer2 prompt has an empty turn")
    if not messages or messages[-1]["role"] != "user":
        raise Drop("bad row: conversation has no final user turn")
    return messages


def prompt_messages(row: dict, spec: DatasetSpec) -> list[dict]:
    """The prompt as the dataset has it, as chat messages ending with a user turn."""
    if spec.prompt_field:
        text = row.get(spec.prompt_field)
        if not isinstance(text, str):
            raise Drop(f"bad row: missing or non-text field '{spec.prompt_field}'")
        if spec.input_field:
            extra = row.get(spec.input_field)
            if isinstance(extra, str) and extra.strip():
                text = text + "\n" + extra  # LLaMA-Factory's alpaca convention
        if spec.prompt_format == "helpsteer2":
            return helpsteer2_messages(text)
        return [{"role": "user", "content": text}]
    conv = row.get(spec.messages_field)
    if not isinstance(conv, list) or not conv:
        raise Drop(f"bad row: missing or empty field '{spec.messages_field}'")
    out = []
    for m in conv:
        if not isinstance(m, dict):
            raise Drop(f"bad row: '{spec.messages_field}' holds a non-message")
        role = _ROLES.get(m.get("role", m.get("from")))
        content = m.get("content", m.get("value"))
        if role is None or not isinstance(content, str):
            raise Drop(f"bad row: '{spec.messages_field}' has a message with unknown role or no text")
        out.append({"role": role, "content": content})
    while out and out[-1]["role"] == "assistant":
        out.pop()  # the prompt is what precedes the final answer
    if not out or out[-1]["role"] != "user":
        raise Drop("bad row: conversation has no final user turn")
    return out


def code_tests(row: dict, spec: DatasetSpec, messages: list[dict]) -> dict:
    """The prompt row's tests as a harness TestSpec dict."""
    from data_pipeline.harness import TestSpec

    t = spec.tests
    if t.from_instruction:
        return TestSpec("asserts", instruction_assertions(messages[-1]["content"])).to_dict()
    tests = row.get(t.field)
    if isinstance(tests, list):
        tests = "\n".join(map(str, tests))
    if not isinstance(tests, str) or not tests.strip():
        raise Drop("no tests")
    if t.kind == "asserts":
        return TestSpec("asserts", tests).to_dict()
    entry_point = row.get(t.entry_point_field)
    if not isinstance(entry_point, str) or not entry_point.strip():
        raise Drop(f"no tests: no entry point in '{t.entry_point_field}'")
    preamble = row.get(t.preamble_field) if t.preamble_field else ""
    if not isinstance(preamble, str):
        raise Drop(f"bad row: non-text field '{t.preamble_field}'")
    return TestSpec("check", tests, entry_point=entry_point.strip(), preamble=preamble).to_dict()


def _entry(row: dict, spec: DatasetSpec) -> tuple[dict, str | None]:
    """(prompt fields, the dataset's own response or None) for one row; Drop if the row yields no prompt."""
    messages = prompt_messages(row, spec)
    text = "\n".join(m["content"] for m in messages if m["role"] != "assistant")
    if not (spec.min_chars <= len(text) <= spec.max_chars):
        raise Drop("length limits")
    if spec.drop_code and is_code(text):
        raise Drop("code prompt")
    if spec.drop_math and is_math(text):
        raise Drop("math prompt")
    entry = {"messages": messages}
    if spec.domain == "math":
        answer = row.get(spec.answer_field)
        if answer is None or str(answer).strip() == "":
            raise Drop("no gold answer")
        entry["answer"] = str(answer)
    if spec.domain == "code":
        entry["tests"] = code_tests(row, spec, messages)
    response = row.get(spec.responses.field) if spec.responses else None
    return entry, response if isinstance(response, str) and response.strip() else None


def _read_dataset(spec: DatasetSpec, seen_ids: set, seen_norm: set, rng: random.Random):
    from fusejax.training.data import DataReport, read_rows

    rows_report = DataReport()
    drops = collections.Counter()
    present: set[str] = set()  # fields holding a value in at least one row
    kept, responses = [], {}
    for where, row in read_rows([spec.source], spec.split, rows_report, subset=spec.subset):
        rows_report.rows += 1
        present.update(k for k, v in row.items() if v is not None)
        try:
            entry, response = _entry(row, spec)
        except Drop as e:
            drops[str(e)] += 1
            continue
        pid = prompt_id(entry["messages"])
        norm = normalise("\n".join(m["content"] for m in entry["messages"] if m["role"] != "assistant"))
        if pid in seen_ids:
            drops["exact duplicate"] += 1
            continue
        if norm in seen_norm:
            drops["normalised duplicate"] += 1
            continue
        seen_ids.add(pid)
        seen_norm.add(norm)
        kept.append({"id": pid, "dataset": spec.name, "domain": spec.domain, **entry})
        if response is not None:
            responses[pid] = response
    for reason, n in rows_report.skipped.items():
        drops[f"bad row: {reason}"] += n
    if rows_report.rows == 0:
        raise ConfigError(f"select: dataset '{spec.name}': no rows read from '{spec.source}' (split {spec.split})")
    for field in spec.fields():
        if field not in present:
            raise ConfigError(f"select: dataset '{spec.name}': field '{field}' is in none of its "
                              f"{rows_report.rows} rows (fields: {', '.join(sorted(present))})")
    if not kept:
        raise ConfigError(f"select: dataset '{spec.name}' yields no prompts from {rows_report.rows} rows "
                          f"(dropped: {dict(drops)})")
    if spec.limit is not None and len(kept) > spec.limit:
        drops["over limit"] += len(kept) - spec.limit
        kept = sorted(rng.sample(kept, spec.limit), key=lambda r: r["id"])
    responses = {p["id"]: responses[p["id"]] for p in kept if p["id"] in responses}
    report = {"rows": rows_report.rows, "kept": len(kept), "dropped": dict(drops)}
    if spec.responses:
        report["dataset_responses"] = {"model": spec.responses.model, "count": len(responses)}
    return kept, responses, report


def dataset_response_rows(responses: dict[str, str], model: str) -> list[dict]:
    """A dataset's own responses as sample rows of their source model: scored, verified and built like sampled
    ones."""
    return [{"prompt_id": pid, "model": model, "sample": 0, "text": text, "num_tokens": None,
             "finish_reason": "dataset"} for pid, text in sorted(responses.items())]


def select(cfg: PipelineConfig, out_dir: Path, log=print) -> dict:
    """Write OUT/select/prompts.jsonl and OUT/select/report.json (and the datasets' own responses as
    OUT/sample/<model>/part-dataset-<dataset>.jsonl); returns the report."""
    seen_ids: set[str] = set()
    seen_norm: set[str] = set()
    table = []
    report: dict = {}
    rng = random.Random(cfg.seed)
    response_parts = {}
    for spec in cfg.datasets:
        t0 = time.time()
        kept, responses, report[spec.name] = _read_dataset(spec, seen_ids, seen_norm, rng)
        table.extend(kept)
        if spec.responses:
            path = out_dir / "sample" / spec.responses.model / f"part-dataset-{spec.name}.jsonl"
            response_parts[path] = dataset_response_rows(responses, spec.responses.model)
        r = report[spec.name]
        extra = f"; {len(responses)} responses of its own ({spec.responses.model})" if spec.responses else ""
        log(f"select {spec.name}: {r['kept']} prompts kept of {r['rows']} rows "
            f"({r['rows'] / max(time.time() - t0, 1e-9):.0f} rows/s){extra}; dropped {r['dropped']}")
    write_jsonl_atomic(out_dir / "select" / "prompts.jsonl", table)
    for path, rows in response_parts.items():
        write_jsonl_atomic(path, rows)
    write_json_atomic(out_dir / "select" / "report.json", report)
    return report
