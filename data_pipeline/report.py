"""Stage 6, report: counts per dataset, domain, source model and stage, drop reasons, and plots.

summary.json: select (per dataset: rows read, prompts kept, each drop reason, the dataset's own responses),
responses per source model by finish reason ("dataset" for a dataset's own), RM score means, responses over the
reward model's length (truncated / skipped), verification outcomes, build's kept and dropped counts, SFT wins."""

from __future__ import annotations

import collections
import json
from pathlib import Path

from data_pipeline.config import PipelineConfig
from data_pipeline.store import read_jsonl, read_parts, write_json_atomic


def report(cfg: PipelineConfig, out_dir: Path, log=print) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    build_dir = out_dir / "build"
    if not (build_dir / "summary.json").is_file():
        raise FileNotFoundError(f"{build_dir}/summary.json: run the build stage first")
    summary = json.loads((build_dir / "summary.json").read_text())
    select_report = json.loads((out_dir / "select" / "report.json").read_text())
    scores = collections.defaultdict(list)
    overlong = collections.defaultdict(collections.Counter)  # model -> {"truncated": n, "skipped": n}
    for r in read_parts(out_dir / "score"):
        if r["score"] is not None:
            scores[r["model"]].append(r["score"])
        for k in ("truncated", "skipped"):
            overlong[r["model"]][k] += k in r
    responses = collections.defaultdict(collections.Counter)  # model -> finish reasons (incl. "dataset")
    for r in read_parts(out_dir / "sample"):
        responses[r["model"]][r["finish_reason"]] += 1
    dpo = list(read_jsonl(build_dir / "dpo.jsonl"))
    sft = list(read_jsonl(build_dir / "sft.jsonl"))
    verify = collections.Counter((r["detail"], r["correct"]) for r in read_parts(out_dir / "verify"))

    out = out_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for model, vals in sorted(scores.items()):
        ax.hist(vals, bins=40, alpha=0.5, label=model)
    ax.set(title="Reward-model score per source model", xlabel="RM score", ylabel="responses")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rm_scores.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist([r["chosen_score"] - r["rejected_score"] for r in dpo] or [0.0], bins=30)
    ax.axvline(cfg.build.gap_min, color="k", ls="--")
    ax.axvline(cfg.build.gap_max, color="k", ls="--")
    ax.set(title="DPO chosen - rejected RM gap", xlabel="gap", ylabel="pairs")
    fig.tight_layout()
    fig.savefig(out / "dpo_gap.png", dpi=110)
    plt.close(fig)

    wins = collections.defaultdict(collections.Counter)
    for r in sft:
        wins[r["domain"]][r["model"]] += 1
    fig, ax = plt.subplots(figsize=(7, 4))
    domains = sorted(wins)
    models = sorted({m for c in wins.values() for m in c})
    bottom = [0] * len(domains)
    for m in models:
        vals = [wins[d][m] for d in domains]
        ax.bar(domains, vals, bottom=bottom, label=m)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set(title="Source of the SFT response per domain", ylabel="SFT rows")
    if models:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sft_wins.png", dpi=110)
    plt.close(fig)

    result = {
        "select": select_report,
        "build": summary,
        "responses_per_model": {m: dict(c) for m, c in sorted(responses.items())},
        "rm_score_mean": {m: sum(v) / len(v) for m, v in scores.items() if v},
        "rm_over_max_length": {m: dict(c) for m, c in sorted(overlong.items()) if sum(c.values())},
        "verification": [{"detail": d, "correct": c, "count": n} for (d, c), n in sorted(verify.items(), key=str)],
        "sft_source_wins": {d: dict(c) for d, c in wins.items()},
        "plots": ["rm_scores.png", "dpo_gap.png", "sft_wins.png"],
    }
    write_json_atomic(out / "summary.json", result)
    log(f"report: {out}/summary.json and 3 plots")
    return result
