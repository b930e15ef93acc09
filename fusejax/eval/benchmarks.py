"""FuseEval's benchmarks: where their rows come from and how each row becomes a sample.

A benchmark reads either a local file (`data_dir/<local_file>`, the layouts FuseEval ships in its `FuseEval/` data
folders) or, without a data directory, its remote copy: a hub dataset at a pinned commit, or a pinned release file.
Every row becomes a sample dict:

    {"id": str, "turns": [user message, ...], "gold": answer (or None), "meta": {...benchmark-specific...}}

Errors name the file (or hub id) and the row and field that is wrong, in one line.
A benchmark entry "NAME=PATH" is a user benchmark: a JSONL of {"question", "answer"} rows, the question sent verbatim,
scored by math-verify against the answer.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import json
import os
import re
import urllib.request
from pathlib import Path
from typing import Callable

TASKS = ("math", "code", "choice", "mt-bench", "pairwise")


class DataError(ValueError):
    """A benchmark's data is missing or malformed (message names the file, row and field)."""


@dataclasses.dataclass(frozen=True)
class Remote:
    """Where a benchmark comes from on a user's machine: a hub dataset (pinned commit where known) or a URL."""

    hub: str | None = None  # dataset repo id
    revision: str = "main"  # commit hash; "main" where no hash could be established (said in `note`)
    config: str | None = None
    split: str = "test"
    file: str | None = None  # a single file of the hub repo (read like the local file) instead of load_dataset
    url: str | None = None  # a pinned release file (e.g. evalplus's MBPP+ v0.1.0)
    note: str = ""

    def describe(self) -> str:
        if self.url:
            return self.url
        where = f"{self.hub}@{self.revision}"
        return where + (f" ({self.file})" if self.file else f" [{self.config or 'default'}/{self.split}]")


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    task: str  # one of TASKS
    metric: str
    local_file: str  # file name under --data-dir
    remote: Remote | None
    to_sample: Callable[[dict, int, str], dict]  # (row, index, where) -> sample
    extra_files: tuple[str, ...] = ()  # further local files this benchmark reads (MT-Bench references, baselines)
    verbatim: bool = False  # user benchmarks: the question is the whole prompt (no instruction added)


# ---- row readers ---------------------------------------------------------------------------------------------------

def _field(row: dict, names: tuple[str, ...], where: str):
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise DataError(f"{where}: missing field {' or '.join(repr(n) for n in names)}")


def _math(question_fields: tuple[str, ...], answer_fields: tuple[str, ...], boxed_in: tuple[str, ...] = ()):
    def to_sample(row: dict, i: int, where: str) -> dict:
        question = _field(row, question_fields, where)
        try:
            gold = _field(row, answer_fields, where)
        except DataError:
            if not boxed_in:
                raise
            gold = last_boxed(str(_field(row, boxed_in, where)))
            if gold is None:
                raise DataError(f"{where}: field {boxed_in[0]!r} holds no \\boxed{{}} answer") from None
        if isinstance(gold, float) and gold.is_integer():
            gold = int(gold)  # AMC 23 stores 27.0
        return {"id": str(row.get("id", row.get("idx", row.get("unique_id", i)))), "turns": [str(question)],
                "gold": str(gold), "meta": {}}

    return to_sample


def gsm8k_gold(solution: str) -> str:
    """GSM8K's gold answer: what follows '####' in the reference solution, without thousands separators."""
    if "####" not in solution:
        raise DataError("GSM8K answer has no '####' line")
    return solution.split("####")[-1].strip().replace(",", "")


def _gsm8k(row: dict, i: int, where: str) -> dict:
    solution = str(_field(row, ("answer",), where))
    try:
        gold = gsm8k_gold(solution)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    return {"id": str(row.get("idx", i)), "turns": [str(_field(row, ("question",), where))], "gold": gold,
            "meta": {"solution": solution}}


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def _humaneval(row: dict, i: int, where: str) -> dict:
    meta = {k: _field(row, (k,), where) for k in ("prompt", "entry_point", "test")}
    meta["canonical_solution"] = row.get("canonical_solution", "")
    return {"id": str(_field(row, ("task_id",), where)), "turns": [meta["prompt"]], "gold": None, "meta": meta}


def _mbppplus(row: dict, i: int, where: str) -> dict:
    keys = ("prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")
    meta = {k: _field(row, (k,), where) for k in keys}
    meta["assertion"] = row.get("assertion", "")
    return {"id": str(_field(row, ("task_id",), where)), "turns": [meta["prompt"]], "gold": None, "meta": meta}


LETTERS = "ABCDEFGHIJKLMNOP"


def _options(value, where: str) -> list[str]:
    if isinstance(value, str):  # a parquet written from a string repr of an array
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise DataError(f"{where}: field 'options' is not a list") from None
    try:
        options = [str(o) for o in list(value)]
    except TypeError:
        raise DataError(f"{where}: field 'options' is not a list") from None
    return [o for o in options if o != "N/A"]  # MMLU-Pro pads with "N/A" (FuseEval drops them too)


def _choice(row: dict, i: int, where: str) -> dict:
    question = _field(row, ("question", "Question"), where)
    options = _options(_field(row, ("options",), where), where)
    answer = _field(row, ("answer",), where)
    if isinstance(answer, str) and answer in LETTERS:
        gold = answer  # MMLU-Pro: a letter
    else:
        try:
            gold = LETTERS[int(answer)]  # FuseEval's formatted GPQA: an index
        except (TypeError, ValueError, IndexError):
            raise DataError(f"{where}: field 'answer' is neither a letter nor an option index: {answer!r}") from None
    if LETTERS.index(gold) >= len(options):
        raise DataError(f"{where}: answer {gold} but only {len(options)} options")
    return {"id": str(row.get("question_id", i)), "turns": [str(question)], "gold": gold,
            "meta": {"options": options, "category": str(row.get("category", ""))}}


def _mt_bench(row: dict, i: int, where: str) -> dict:
    turns = _field(row, ("turns", "prompt"), where)
    if not isinstance(turns, (list, tuple)) or len(turns) != 2:
        raise DataError(f"{where}: field 'turns' must hold the two user turns")
    category = str(_field(row, ("category",), where))
    qid = row.get("question_id", row.get("prompt_id", i))
    meta = {"category": category}
    if row.get("reference"):
        meta["reference"] = [str(t) for t in row["reference"]]
    return {"id": str(qid), "turns": [str(t) for t in turns], "gold": None, "meta": meta}


def _arena_hard(row: dict, i: int, where: str) -> dict:
    turns = _field(row, ("turns",), where)
    try:
        content = turns[0]["content"]
    except (TypeError, IndexError, KeyError):
        raise DataError(f"{where}: field 'turns' must be [{{'content': ...}}]") from None
    return {"id": str(_field(row, ("question_id",), where)), "turns": [str(content)], "gold": None,
            "meta": {"cluster": row.get("cluster", "")}}


def _alpaca_eval(row: dict, i: int, where: str) -> dict:
    return {"id": str(i), "turns": [str(_field(row, ("instruction",), where))], "gold": None,
            "meta": {"baseline": str(_field(row, ("output",), where)),
                     "baseline_generator": row.get("generator", ""), "dataset": row.get("dataset", "")}}


def _user(row: dict, i: int, where: str) -> dict:
    return {"id": str(row.get("id", i)), "turns": [str(_field(row, ("question",), where))],
            "gold": str(_field(row, ("answer",), where)), "meta": {}}


# ---- the table -------------------------------------------------------------------------------------------------------

_NO_HASH = "no commit hash could be established offline; pinned by name"

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("gsm8k", "math", "accuracy (math-verify)", "gsm8k-test.jsonl",
              Remote("openai/gsm8k", "cc7b047b6e5bb11b4f1af84efc572db110a51b3c", "main"), _gsm8k),
    Benchmark("math500", "math", "accuracy (math-verify)", "math500-test.jsonl",
              Remote("HuggingFaceH4/MATH-500", "6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be"),
              _math(("problem",), ("answer",))),
    Benchmark("minerva-math", "math", "accuracy (math-verify)", "minerva-math-test.jsonl",
              Remote("math-ai/minervamath", note=_NO_HASH), _math(("problem", "question"), ("answer",), ("solution",))),
    Benchmark("amc23", "math", "accuracy (math-verify)", "amc23-test.jsonl",
              Remote("math-ai/amc23", note=_NO_HASH), _math(("problem", "question"), ("answer",))),
    Benchmark("aime24", "math", "accuracy (math-verify)", "aime24-test.jsonl",
              Remote("HuggingFaceH4/aime_2024", split="train", note=_NO_HASH), _math(("problem",), ("answer",))),
    Benchmark("humaneval", "code", "pass@1 (greedy)", "humaneval.jsonl",
              Remote("openai/openai_humaneval", "7dce6050a7d6d172f3cc5c32aa97f52fa1a2e544"), _humaneval),
    Benchmark("mbppplus", "code", "pass@1 base+plus tests (greedy)", "mbppplus-v0.1.0.jsonl",
              Remote(url="https://github.com/evalplus/mbppplus_release/releases/download/v0.1.0/"
                         "MbppPlus-v0.1.0.jsonl.gz", note="evalplus's own release file, pinned by version"),
              _mbppplus),
    Benchmark("mmlu-pro", "choice", "accuracy (answer letter)", "mmlu-pro-test.parquet",
              Remote("TIGER-Lab/MMLU-Pro", note=_NO_HASH), _choice),
    Benchmark("gpqa", "choice", "accuracy (answer letter)", "gpqa-diamond.parquet", None, _choice),
    Benchmark("mt-bench", "mt-bench", "judge rating 1-10 (x10 in score)", "mt-bench-questions.jsonl",
              Remote("HuggingFaceH4/mt_bench_prompts", split="train", note=_NO_HASH), _mt_bench,
              extra_files=("mt-bench-reference-gpt-4.jsonl",)),
    Benchmark("arena-hard", "pairwise", "win rate vs gpt-4-0314 (judge)", "arena-hard-v0.1-questions.jsonl",
              Remote("lmarena-ai/arena-hard-auto-v0.1", note=_NO_HASH), _arena_hard,
              extra_files=("arena-hard-v0.1-gpt-4-0314.jsonl",)),
    Benchmark("alpaca-eval", "pairwise", "win rate vs gpt4_turbo (judge)", "alpaca-eval-gpt4-baseline.json",
              Remote("tatsu-lab/alpaca_eval", "2edc6fad8be6b14ea7230aabfd08188da6b8b814",
                     file="alpaca_eval_gpt4_baseline.json"), _alpaca_eval),
]}

ALIASES = {"mbpp": "mbppplus", "mbpp+": "mbppplus", "math-500": "math500", "mmlu_pro": "mmlu-pro",
           "gpqa-diamond": "gpqa", "mtbench": "mt-bench", "arena_hard": "arena-hard", "alpacaeval": "alpaca-eval",
           "alpaca-eval-2": "alpaca-eval", "minerva": "minerva-math"}


def user_benchmark(name: str, path: str) -> Benchmark:
    return Benchmark(name, "math", "accuracy (math-verify)", str(path), None, _user, verbatim=True)


def resolve(entry: str) -> Benchmark:
    """A built-in name (or alias), or "NAME=PATH" for a user benchmark."""
    if "=" in entry:
        name, path = entry.split("=", 1)
        if not name or not path:
            raise DataError(f"benchmark '{entry}': a user benchmark is NAME=PATH")
        if name in BENCHMARKS:
            raise DataError(f"benchmark '{entry}': {name} is a built-in benchmark name; choose another name")
        return user_benchmark(name, path)
    name = ALIASES.get(entry.lower(), entry.lower())
    if name not in BENCHMARKS:
        raise DataError(f"unknown benchmark '{entry}' (known: {', '.join(BENCHMARKS)}; or NAME=PATH for a JSONL of "
                        "question/answer rows)")
    return BENCHMARKS[name]


# ---- reading files ---------------------------------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict]:
    """Rows of a .jsonl(.gz) / .json (a list) / .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    name = path.name
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            if name.endswith((".jsonl", ".jsonl.gz")):
                rows = []
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
                return rows
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows")
    return data


def _cache_dir() -> Path:
    return Path(os.environ.get("FUSEJAX_CACHE", Path.home() / ".cache" / "fusejax")) / "eval"


def _remote_rows(bench: Benchmark) -> tuple[list[dict], str]:
    """(rows, where they came from): a hub revision given by name is resolved to its commit first, so the record
    says exactly what was read."""
    r = bench.remote
    if r.url:
        target = _cache_dir() / Path(r.url).name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".part")
            urllib.request.urlretrieve(r.url, tmp)
            os.replace(tmp, target)
        return read_rows(target), r.describe()
    revision = r.revision
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        from huggingface_hub import HfApi

        revision = HfApi().dataset_info(r.hub, revision=revision).sha
    pinned = dataclasses.replace(r, revision=revision)
    if r.file:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(r.hub, r.file, repo_type="dataset", revision=revision)
        return read_rows(Path(path)), pinned.describe()
    import datasets

    ds = datasets.load_dataset(r.hub, r.config, split=r.split, revision=revision)
    return ds.to_list(), pinned.describe()


def load(bench: Benchmark, data_dir: str | Path | None = None, limit: int | None = None,
         sources: dict | None = None) -> list[dict]:
    """The benchmark's samples (the first `limit` of them, in file order); `sources[bench.name]` gets the file or
    the hub commit they were read from."""
    if bench.remote is None or data_dir is not None:
        path = Path(bench.local_file)
        if data_dir is not None and not path.is_absolute() and not path.is_file():
            path = Path(data_dir) / bench.local_file
        if not path.is_file():
            hint = "" if bench.verbatim or data_dir is not None else \
                " (no public copy to download: pass --data-dir with this file)"
            raise DataError(f"{bench.name}: missing file {path}{hint}")
        rows, source = read_rows(path), str(path)
    else:
        rows, source = _remote_rows(bench)
    if sources is not None:
        sources[bench.name] = source
    rows = rows[:limit] if limit else rows
    samples = [bench.to_sample(row, i, f"{source} row {i}") for i, row in enumerate(rows)]
    ids = [s["id"] for s in samples]
    if len(set(ids)) != len(ids):  # ids key the resumable part files: make them unique
        for i, s in enumerate(samples):
            s["id"] = f"{i}:{s['id']}"
    return samples


def extra_file(bench: Benchmark, name: str, data_dir: str | Path | None) -> Path | None:
    """A further local file of a benchmark (MT-Bench's reference answers, Arena-Hard's baseline), or None."""
    if data_dir is None:
        return None
    path = Path(data_dir) / name
    return path if path.is_file() else None
