"""The demo's driver: sources -> data pipeline -> SFT -> DPO -> evaluation -> summary, each stage resumable.

Work directory layout (default runs/demo/):
    demo_config.json        the configuration of this work directory (another configuration is refused)
    data/                   per skill: held_out/ (evaluation only), prompts/ (pipeline), gold/ (source training)
    sources/<name>-<hash>/  trained source models (hf/), reused by any run with the same source settings
    reward/, target/init/   the tiny reward model and the untrained target
    pipeline.yaml, pipeline/ the data pipeline's config and outputs (report/ has the data report and its plots)
    target/sft/, target/dpo/ the training runs (hf/ = exports; train.yaml reruns them by hand)
    eval/<model>/           fusejax eval runs; eval/compare.md and eval/compare.png side by side
    summary.json            scores, margins and timings
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

from fusejax.demo import models, skills as skills_lib
from fusejax.demo.config import DemoConfig, to_dict
from fusejax.models.config import ConfigError

STAGES = ["sources", "pipeline", "sft", "dpo", "eval"]


class Progress:
    """Stage banners with elapsed time; per-stage timings for the summary."""

    def __init__(self, log=print):
        self.log, self.t0, self.timings, self._stage, self._t = log, time.time(), {}, None, None

    def stage(self, name: str, title: str) -> None:
        self.end()
        i = STAGES.index(name) + 1
        self.log(f"\n== [{i}/{len(STAGES)}] {title}  (elapsed {_fmt(time.time() - self.t0)})", )
        self._stage, self._t = name, time.time()

    def end(self) -> None:
        if self._stage is not None:
            self.timings[self._stage] = round(time.time() - self._t, 1)
            self.log(f"-- {self._stage} done in {_fmt(self.timings[self._stage])}")
            self._stage = None


def _fmt(s: float) -> str:
    return f"{s:.0f}s" if s < 90 else f"{int(s // 60)}m{int(s % 60):02d}s"


def check_work_dir(work: Path, cfg: DemoConfig) -> None:
    """A work directory belongs to one configuration: resuming with another would mix stale outputs."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "demo_config.json"
    current = to_dict(cfg)
    if path.is_file():
        if json.loads(path.read_text()) != current:
            raise ConfigError(f"{work} holds a demo run with another configuration ({path}); choose another --out "
                              "or delete that directory")
        return
    path.write_text(json.dumps(current, indent=2))


def pipeline_config(cfg: DemoConfig, files: skills_lib.SkillFiles, sources: dict[str, Path], reward: Path) -> dict:
    """The data pipeline's configuration for the demo: one math dataset per skill (gold answers), every source
    sampled on every prompt with its own sampling parameters."""
    p = cfg.pipeline
    return {
        "seed": cfg.seed,
        "datasets": [{"name": s, "source": str(files.prompts[s]), "domain": "math", "prompt_field": "question",
                      "answer_field": "answer"} for s in cfg.skills],
        "models": [{"name": s.name, "path": str(sources[s.name]), "temperature": s.temperature, "top_p": s.top_p,
                    "repetition_penalty": s.repetition_penalty, "max_tokens": p.max_tokens, "dtype": "float32",
                    "domains": ["math"]} for s in cfg.sources],
        "samples": {"math": p.samples},
        "reward": {"path": str(reward), "backend": "vllm", "trust_remote_code": False, "dtype": "float32",
                   "batch_size": 64},
        "build": {"sft_fraction": {"math": p.sft_fraction}, "gap_min": p.gap_min, "gap_max": p.gap_max,
                  "chinese_model": cfg.sources[0].name},
        "vllm": {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 28, "batch_prompts": 1024},
    }


def run_pipeline(cfg: DemoConfig, work: Path, files, sources: dict[str, Path], reward: Path, log=print) -> Path:
    import yaml

    from data_pipeline import config as pipeline_config_lib
    from data_pipeline.cli import STAGES as PIPELINE_STAGES, run_stage

    path = work / "pipeline.yaml"
    path.write_text("# written by `fusejax demo`; rerun by hand: python -m data_pipeline run --config "
                    f"{path} --out {work / 'pipeline'}\n" + yaml.safe_dump(pipeline_config(cfg, files, sources, reward),
                                                                          sort_keys=False))
    pcfg = pipeline_config_lib.load(path)
    out = work / "pipeline"
    out.mkdir(parents=True, exist_ok=True)
    for stage in PIPELINE_STAGES:
        run_stage(stage, pcfg, out, (0, 1))
    return out


def data_summary(out: Path, skills: list[str]) -> dict:
    """Per skill: SFT rows and DPO pairs, and which source wrote them (from the build's output)."""
    summary = {}
    for kind, name in (("sft", "sft.jsonl"), ("dpo", "dpo.jsonl")):
        counts = collections.defaultdict(collections.Counter)
        with open(out / "build" / name) as f:
            for line in f:
                row = json.loads(line)
                counts[row["dataset"]][row["model"]] += 1
        summary[kind] = {s: dict(counts[s]) for s in skills}
    return summary


def evaluate_models(cfg: DemoConfig, work: Path, entries: list[tuple[str, str, Path]], files, log=print) -> dict:
    """fusejax eval of each (slug, label, model dir) on the held-out prompts of every skill; returns
    {slug: results.json}."""
    from fusejax.eval import evaluate
    from fusejax.eval.generate import EngineOptions

    benchmarks = [f"{s}={files.held_out[s]}" for s in cfg.skills]
    engine = EngineOptions(max_model_len=256, dtype="float32", kv_cache_memory_bytes=1 << 28, enforce_eager=True)
    results = {}
    for i, (slug, label, model) in enumerate(entries):
        log(f"eval {i + 1}/{len(entries)}: {label} ({model})")
        results[slug] = evaluate(str(model), benchmarks, work / "eval" / slug, label=label,
                                 max_new_tokens=cfg.eval.max_new_tokens, engine=engine, batch_size=1024,
                                 log=lambda m: None)
        scores = "  ".join(f"{b} {_pct(e['score'])}" for b, e in results[slug]["benchmarks"].items())
        log(f"  {scores}  | overall {_pct(results[slug]['average'])}")
        bad = {b: e["status"] for b, e in results[slug]["benchmarks"].items() if e["status"] != "scored"}
        if bad:
            raise RuntimeError(f"eval of {model} in {work / 'eval' / slug}: not scored: {bad}")
    return results


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def margins(cfg: DemoConfig, results: dict) -> dict:
    """The claims the demo checks, as numbers (percentage points on the held-out prompts)."""
    overall = {slug: r["average"] for slug, r in results.items()}
    sources = {s.name: overall[f"source-{s.name}"] for s in cfg.sources}
    best_source = max(sources, key=sources.get)
    per_skill = {}
    for skill in cfg.skills:
        specialist = [s.name for s in cfg.sources if s.skill == skill]
        fused = results["target-dpo"]["benchmarks"][skill]["score"]
        per_skill[skill] = {
            "fused": fused,
            "best_source": max(results[f"source-{n}"]["benchmarks"][skill]["score"] for n in specialist)
            if specialist else None,
            "sft": results["target-sft"]["benchmarks"][skill]["score"],
            "start": results["target-start"]["benchmarks"][skill]["score"]}
    return {"overall": overall, "best_single_source": best_source,
            "fused_minus_best_source": overall["target-dpo"] - sources[best_source],
            "dpo_minus_sft": overall["target-dpo"] - overall["target-sft"],
            "sft_minus_start": overall["target-sft"] - overall["target-start"],
            "fused_minus_start": overall["target-dpo"] - overall["target-start"],
            "per_skill": per_skill}


def run(cfg: DemoConfig, work: Path, log=print) -> dict:
    """The whole demo; returns the summary (also written to work/summary.json)."""
    progress = Progress(log)
    check_work_dir(work, cfg)
    log(f"fusejax demo in {work}: skills {', '.join(cfg.skills)}; sources "
        + ", ".join(f"{s.name} ({s.family}, {s.skill})" for s in cfg.sources)
        + f"; target {cfg.target.family} ({cfg.target.size.num_layers} layers x {cfg.target.size.hidden_size})")

    progress.stage("sources", "source models: each trained by fusejax SFT on one skill (cached)")
    files = skills_lib.write_skill_files(work / "data", cfg.skills, cfg.prompts.held_out, cfg.prompts.pipeline,
                                         cfg.prompts.gold, cfg.seed)
    sources = {s.name: models.source(s, files.gold[s.skill], cfg.source_training, work / "sources", log)
               for s in cfg.sources}
    reward = models.reward_model(work / "reward", cfg.pipeline.reward_seed)
    target = models.new_model(work / "target" / "init", cfg.target.family, cfg.target.size, cfg.target.seed)

    progress.stage("pipeline", "data pipeline: vLLM sampling, reward scores, math-verify, SFT/DPO sets, report")
    out = run_pipeline(cfg, work, files, sources, reward, log)
    data = data_summary(out, cfg.skills)
    for kind in ("sft", "dpo"):
        log(f"{kind} {'rows' if kind == 'sft' else 'pairs'} per skill (by source): " + "; ".join(
            f"{s}: {sum(c.values())} ({', '.join(f'{m} {n}' for m, n in sorted(c.items()))})"
            for s, c in data[kind].items()))

    progress.stage("sft", "SFT of the target on the best correct response per prompt")
    sft = models.train(models.train_config("sft", target, out / "build" / "sft.jsonl", work / "target" / "sft",
                                           cfg.sft, cfg.seed), log)
    progress.stage("dpo", f"DPO ({cfg.dpo.loss}, beta {cfg.dpo.beta}) from the SFT model, better of the last two "
                          "checkpoints")
    dpo = models.train(models.train_config("dpo", sft, out / "build" / "dpo.jsonl", work / "target" / "dpo",
                                           cfg.dpo, cfg.seed), log)

    progress.stage("eval", "fusejax eval on the held-out prompts of every skill")
    entries = [("target-start", "target (start)", target), ("target-sft", "target + SFT", sft),
               ("target-dpo", "target + SFT + DPO", dpo)]
    entries += [(f"source-{s.name}", f"{s.name} (source)", sources[s.name]) for s in cfg.sources]
    results = evaluate_models(cfg, work, entries, files, log)
    from fusejax.eval import compare

    table = compare([work / "eval" / slug for slug, _, _ in entries], out_dir=work / "eval")
    (work / "eval" / "compare.md").write_text(table + "\n")
    progress.end()

    summary = {"work_dir": str(work), "margins": margins(cfg, results), "data": data,
               "dpo_checkpoint": _read_json(work / "target" / "dpo" / "best_checkpoint.json"),
               "seconds": {**progress.timings, "total": round(time.time() - progress.t0, 1)}}
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    log("\n" + table)
    log(closing_message(summary, work))
    return summary


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def closing_message(summary: dict, work: Path) -> str:
    m = summary["margins"]
    best = m["best_single_source"]
    verdict = "beats" if m["fused_minus_best_source"] > 0 else "does NOT beat"
    dpo = ("DPO adds" if m["dpo_minus_sft"] > 0 else "DPO does NOT add") + f" {m['dpo_minus_sft']:+.1f} points to SFT"
    lines = [
        "",
        f"Fused target: {m['overall']['target-dpo']:.1f}% on the combined held-out prompts (start "
        f"{m['overall']['target-start']:.1f}%, after SFT {m['overall']['target-sft']:.1f}%); it {verdict} the best "
        f"single source ({best}, {m['overall'][f'source-{best}']:.1f}%) by {m['fused_minus_best_source']:+.1f} "
        f"points; {dpo}.",
    ]
    if m["dpo_minus_sft"] <= 0:
        ck = summary.get("dpo_checkpoint") or {}
        lines.append(f"  DPO pairs per skill: {({s: sum(c.values()) for s, c in summary['data']['dpo'].items()})}; "
                     f"kept checkpoint: step {ck.get('step')} (held-out DPO metrics {ck.get('scores')}).")
    lines += [
        f"Demo finished in {_fmt(summary['seconds']['total'])}. Outputs in {work}:",
        f"  fused model (HF):   {work / 'target' / 'dpo' / 'hf'}   (SFT only: {work / 'target' / 'sft' / 'hf'})",
        f"  data report:        {work / 'pipeline' / 'report'}/summary.json and its PNG plots; the sets in "
        f"{work / 'pipeline' / 'build'}",
        f"  evaluation:         {work / 'eval' / 'compare.md'}, {work / 'eval' / 'compare.png'}, "
        f"{work / 'eval'}/<model>/results.json",
        f"  summary:            {work / 'summary.json'}",
        "Next, on real models (GPU box for the data, TPU for training):",
        "  python -m data_pipeline run --config configs/data/fusechat3.yaml --out data/fusechat3",
        "  fusejax train --config configs/train/llama3.2-1b-sft.yaml   # then configs/train/llama3.2-1b-dpo.yaml",
        "  fusejax eval --model runs/llama3.2-1b-dpo/hf --benchmarks gsm8k,humaneval,mmlu-pro --out runs/eval/fused",
    ]
    return "\n".join(lines)
