"""Ahead-of-time TPU memory table for the recipe's five targets x {SFT, DPO}: for each TPU generation, the
smallest slice on which the real train step (global batch 128, length 2048) fits, and its per-device memory.

No TPU needed (libtpu's compiler only). Rerun: python tpu_scripts/compile_table.py [--out table.md]
Each compile runs in a fresh subprocess (about 0.5-3 min and 2-3 GB host memory for an 8B model).
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


def check(target: str, stage: str, topology: str, micro_per_device: int = 1) -> dict | None:
    devices = DEVICES[topology]
    accum = max(1, 128 // (devices * micro_per_device))
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, "-m", "fusejax", "compile-check", "--config", f"configs/train/{target}-{stage}.yaml",
               "--topology", topology, "--preset", target, "--json", f.name, f"train.grad_accum_steps={accum}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        text = Path(f.name).read_text()
        if proc.returncode not in (0, 1) or not text:
            print(f"{target} {stage} {topology}: compile-check failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return None
        return json.loads(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None, help="write the markdown table here too")
    ap.add_argument("--targets", nargs="*", default=TARGETS)
    ap.add_argument("--generations", nargs="*", default=list(GENERATIONS))
    ap.add_argument("--stages", nargs="*", default=["sft", "dpo"])
    args = ap.parse_args()
    g = lambda b: f"{b / 1024**3:.1f}"  # noqa: E731
    lines = ["| target | stage | smallest slice | devices | accum | args GiB | temp GiB | peak GiB | HBM GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for target in args.targets:
        for stage in args.stages:
            for gen in args.generations:
                found = None
                for topo in GENERATIONS[gen]:
                    r = check(target, stage, topo)
                    if r is None:
                        break
                    if r["fits"]:
                        print(f"{target} {stage} {topo}: peak {g(r['peak_bytes'])} / {g(r['hbm_bytes'])} GiB, fits",
                              flush=True)
                    else:
                        print(f"{target} {stage} {topo}: does not fit ({r.get('error', 'peak above HBM')})",
                              flush=True)
                    if r["fits"]:
                        found = r
                        break
                if found:
                    lines.append(f"| {target} | {stage} | {found['topology']} | {found['devices']} | "
                                 f"{found['grad_accum']} | {g(found['argument_bytes'])} | {g(found['temp_bytes'])} | "
                                 f"{g(found['peak_bytes'])} | {g(found['hbm_bytes'])} |")
                else:
                    lines.append(f"| {target} | {stage} | none up to {GENERATIONS[gen][-1]} | | | | | | |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
