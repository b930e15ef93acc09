"""Several evaluation runs side by side: a Markdown table (benchmarks x runs, plus the average) and a bar chart."""

from __future__ import annotations

import json
from pathlib import Path


def _load(run: str | Path) -> dict:
    path = Path(run)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.json (run `fusejax eval` first)")
    return json.loads(path.read_text())


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    if entry.get("status") != "scored":
        return entry.get("status", "?")
    return f"{entry['score']:.1f}"


def table(results: list[dict]) -> str:
    """Markdown: one row per benchmark (in first-seen order), one column per run, then the average row."""
    labels = [r.get("label") or Path(str(r.get("model", "?"))).name for r in results]
    names: list[str] = []
    for r in results:
        names += [n for n in r["benchmarks"] if n not in names]
    lines = ["| benchmark | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_cell(r["benchmarks"].get(n)) for r in results) + " |")
    common = [n for n in names if all(r["benchmarks"].get(n, {}).get("status") == "scored" for r in results)]
    avg = [sum(r["benchmarks"][n]["score"] for n in common) / len(common) if common else None for r in results]
    lines.append(f"| **average** ({len(common)} benchmarks scored in every run) | "
                 + " | ".join("-" if a is None else f"**{a:.1f}**" for a in avg) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> Path:
    """Grouped bars: per benchmark scored in every run, and the average over those."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [r.get("label") or Path(str(r.get("model", "?"))).name for r in results]
    names = [n for n in results[0]["benchmarks"]
             if all(r["benchmarks"].get(n, {}).get("status") == "scored" for r in results)]
    columns = names + (["average"] if names else [])
    values = np.array([[r["benchmarks"][n]["score"] for n in names]
                       + ([sum(r["benchmarks"][n]["score"] for n in names) / len(names)] if names else [])
                       for r in results]).reshape(len(results), len(columns))
    width = 0.8 / max(1, len(results))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(columns) * max(1, len(results)) ** 0.5 + 2), 4.5))
    x = np.arange(len(columns))
    for i, label in enumerate(labels):
        bars = ax.bar(x + (i - (len(results) - 1) / 2) * width, values[i], width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, columns, rotation=20, ha="right")
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, max(100.0, float(values.max()) * 1.1 if values.size else 100.0))
    ax.legend(fontsize=8)
    ax.set_title("fusejax eval")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def compare(run_dirs: list, out_dir=None) -> str:
    """Markdown table of several runs (directories holding results.json, or the files themselves); with `out_dir`,
    also writes compare.md and compare.png there."""
    if not run_dirs:
        raise ValueError("compare: give at least one run directory")
    results = [_load(r) for r in run_dirs]
    text = table(results)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(text + "\n")
        plot(results, out / "compare.png")
    return text
