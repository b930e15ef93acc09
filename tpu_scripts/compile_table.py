"""Ahead-of-time TPU memory table for the recipe's five targets x {SFT, DPO}, both attention implementations side
by side: for each TPU generation, the smallest slice on which the real train step (global batch 128, length 2048,
one sequence or pair per device per micro-step) fits with either implementation, and each one's per-device memory
there. `--longest SLICE` instead finds the longest sequence (a multiple of 1024) that still fits that slice.

No TPU needed (libtpu's compiler only). Rerun:
    python tpu_scripts/compile_table.py [--out table.md] [--targets llama3.1-8b] [--stages dpo] [--generations v5p]
    python tpu_scripts/compile_table.py --longest v5p-8 --targets llama3.1-8b --stages dpo --attention splash
Each compile runs in a fresh subprocess (about 0.5-3 min and 2-3 GB host memory for an 8B model on a quiet machine).
Splash kernels use blocks of `model.splash_block` (512) and libtpu's default scoped VMEM limit unless
LIBTPU_INIT_ARGS=--xla_tpu_scoped_vmem_limit_kib=N is set; both are printed with each figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["llama3.2-1b", "llama3.2-3b", "qwen2.5-7b", "llama3.1-8b", "gemma2-9b"]
GENERATIONS = {"v4": ["v4-8", "v4-16", "v4-32"], "v5e": ["v5e-4", "v5e-8", "v5e-16", "v5e-32"],
               "v5p": ["v5p-8", "v5p-16", "v5p-32"], "v6e": ["v6e-4", "v6e-8", "v6e-16"]}
DEVICES = {"v4-8": 4, "v4-16": 8, "v4-32": 16, "v5e-4": 4, "v5e-8": 8, "v5e-16": 16, "v5e-32": 32, "v5p-8": 4,
           "v5p-16": 8, "v5p-32": 16, "v6e-4": 4, "v6e-8": 8, "v6e-16": 16}
GLOBAL_BATCH = 128


def check(target: str, stage: str, topology: str, attention: str, max_length: int = 2048,
          overrides: tuple[str, ...] = ()) -> dict | None:
    """One compile-check in a fresh process; its JSON report, or None when the check itself failed."""
    accum = max(1, GLOBAL_BATCH // DEVICES[topology])
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, "-m", "fusejax", "compile-check", "--config", f"configs/train/{target}-{stage}.yaml",
               "--topology", topology, "--preset", target, "--json", f.name, f"train.grad_accum_steps={accum}",
               f"train.global_batch_size={GLOBAL_BATCH}", f"model.attention={attention}",
               f"data.max_length={max_length}", *overrides]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        text = Path(f.name).read_text()
        if proc.returncode not in (0, 1) or not text:
            print(f"{target} {stage} {topology} {attention}: compile-check failed:\n{proc.stderr[-2000:]}",
                  file=sys.stderr)
            return None
        report = json.loads(text)
        report.setdefault("attention", attention)
        return report


def _gib(b) -> str:
    return f"{b / 1024**3:.1f}"


def _row(target: str, stage: str, r: dict) -> str:
    kernel = f"splash ({r.get('splash_block')})" if r["attention"] == "splash" else "xla"
    if not r["fits"]:
        return f"| {target} | {stage} | {r['topology']} | {r['devices']} | | {kernel} | does not fit | | | " \
               f"{_gib(r['hbm_bytes'])} |"
    return (f"| {target} | {stage} | {r['topology']} | {r['devices']} | {r['grad_accum']} | {kernel} | "
            f"{_gib(r['argument_bytes'])} | {_gib(r['temp_bytes'])} | {_gib(r['peak_bytes'])} | "
            f"{_gib(r['hbm_bytes'])} |")


def table(targets, stages, generations, attentions, overrides) -> list[str]:
    lines = ["| target | stage | smallest slice | devices | accum | attention (block) | args GiB | temp GiB | "
             "peak GiB | HBM GiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for target in targets:
        for stage in stages:
            for gen in generations:
                found = None
                for topo in GENERATIONS[gen]:
                    reports = [check(target, stage, topo, a, overrides=overrides) for a in attentions]
                    for a, r in zip(attentions, reports):
                        state = "missing" if r is None else ("fits" if r["fits"] else "does not fit")
                        peak = f", peak {_gib(r['peak_bytes'])} GiB" if r and r["fits"] else ""
                        print(f"{target} {stage} {topo} {a}: {state}{peak}", flush=True)
                    if any(r and r["fits"] for r in reports):
                        found = [r for r in reports if r]
                        break
                if found:
                    lines += [_row(target, stage, r) for r in found]
                else:
                    lines.append(f"| {target} | {stage} | none up to {GENERATIONS[gen][-1]} | | | | | | | |")
    return lines


def longest(target: str, stage: str, topology: str, attention: str, overrides, start: int = 2048,
            step: int = 1024) -> tuple[int, dict | None]:
    """The longest max_length (a multiple of `step`) whose step fits `topology`: doubling, then bisection."""
    fits = lambda n: check(target, stage, topology, attention, n, overrides)  # noqa: E731
    good, good_report, bad = 0, None, None
    n = start
    while bad is None:
        r = fits(n)
        print(f"{target} {stage} {topology} {attention} length {n}: "
              f"{'fits, peak ' + _gib(r['peak_bytes']) + ' GiB' if r and r['fits'] else 'does not fit'}", flush=True)
        if r and r["fits"]:
            good, good_report, n = n, r, n * 2
        else:
            bad = n
    while bad - good > step:
        mid = (good + bad) // 2 // step * step
        r = fits(mid)
        print(f"{target} {stage} {topology} {attention} length {mid}: "
              f"{'fits, peak ' + _gib(r['peak_bytes']) + ' GiB' if r and r['fits'] else 'does not fit'}", flush=True)
        if r and r["fits"]:
            good, good_report = mid, r
        else:
            bad = mid
    return good, good_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the markdown table here too")
    ap.add_argument("--targets", nargs="*", default=TARGETS)
    ap.add_argument("--generations", nargs="*", default=list(GENERATIONS))
    ap.add_argument("--stages", nargs="*", default=["sft", "dpo"])
    ap.add_argument("--attention", nargs="*", default=["xla", "splash"], choices=["xla", "splash"])
    ap.add_argument("--longest", default=None, metavar="SLICE", help="find the longest sequence that fits SLICE")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides")
    args = ap.parse_args()
    if args.longest:
        lines = ["| target | stage | slice | attention | longest length | peak GiB | HBM GiB |",
                 "|---|---|---|---|---|---|---|"]
        for target in args.targets:
            for stage in args.stages:
                for attention in args.attention:
                    n, r = longest(target, stage, args.longest, attention, tuple(args.set))
                    peak = _gib(r["peak_bytes"]) if r else ""
                    hbm = _gib(r["hbm_bytes"]) if r else ""
                    lines.append(f"| {target} | {stage} | {args.longest} | {attention} | {n or 'none'} | {peak} | "
                                 f"{hbm} |")
    else:
        lines = table(args.targets, args.stages, args.generations, args.attention, tuple(args.set))
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
