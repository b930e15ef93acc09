"""python -m data_pipeline STAGE --config FILE --out DIR [--shard i/N]

Stages: select, sample, score, verify, build, report, and run (all of them in order). Each stage reads the previous
stages' outputs under DIR and can be rerun: finished work is skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STAGES = ("select", "sample", "score", "verify", "build", "report")


def run_stage(stage: str, cfg, out: Path, shard: tuple[int, int]) -> dict:
    t0 = time.time()
    if stage == "select":
        from data_pipeline.select import select as fn

        result = fn(cfg, out)
    elif stage == "sample":
        from data_pipeline.sample import sample as fn

        result = fn(cfg, out, shard)
    elif stage == "score":
        from data_pipeline.score import score as fn

        result = fn(cfg, out, shard)
    elif stage == "verify":
        from data_pipeline.verify import verify as fn

        result = fn(cfg, out, shard)
    elif stage == "build":
        from data_pipeline.build import build as fn

        result = fn(cfg, out)
    else:
        from data_pipeline.report import report as fn

        result = fn(cfg, out)
    print(f"[{stage}] done in {time.time() - t0:.1f}s", flush=True)
    return result


def _select_vllm_platform() -> None:
    """vLLM refuses to start when both its TPU detector (libtpu installed, e.g. for `fusejax compile-check`) and the
    CPU build claim the machine. Without a GPU or TPU device present, ask for the CPU platform explicitly."""
    import os

    if "VLLM_TARGET_DEVICE" in os.environ:
        return
    has_tpu = any(Path("/dev").glob("accel*")) or Path("/dev/vfio").exists()
    has_gpu = any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()
    if not has_tpu and not has_gpu:
        os.environ["VLLM_TARGET_DEVICE"] = "cpu"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=STAGES + ("run",))
    ap.add_argument("--config", required=True, help="pipeline YAML (see configs/data/)")
    ap.add_argument("--out", required=True, help="output directory (shared by all stages)")
    ap.add_argument("--shard", default=None, help="i/N: this machine's share of the prompts (sample/score/verify)")
    args = ap.parse_args(argv)
    _select_vllm_platform()

    from data_pipeline import config as config_lib
    from data_pipeline.sandbox import SandboxUnavailable
    from data_pipeline.store import parse_shard
    from fusejax.models.config import ConfigError

    try:
        shard = parse_shard(args.shard)
        cfg = config_lib.load(args.config)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stages = STAGES if args.stage == "run" else (args.stage,)
        if args.stage == "run" and shard != (0, 1):
            raise ConfigError("--shard applies to sample/score/verify; run those stages per machine, then build")
        for stage in stages:
            run_stage(stage, cfg, out, shard)
    except (ConfigError, FileNotFoundError, ValueError, SandboxUnavailable) as e:
        print(f"data_pipeline: error: {e}", file=sys.stderr)
        return 2
    return 0
