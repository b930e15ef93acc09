"""python -m data_pipeline STAGE --config FILE --out DIR [--shard i/N | --ray [ADDRESS]]

Stages: select, sample, score, verify, build, report, and run (all of them in order). Each stage reads the previous
stages' outputs under DIR and can be rerun: finished work is skipped. With --ray, sample and score run on a Ray
cluster's engine replicas (data_pipeline/distributed.py); the other stages run here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STAGES = ("select", "sample", "score", "verify", "build", "report")


def run_stage(stage: str, cfg, out: Path, shard: tuple[int, int], ray_pool=None) -> dict:
    t0 = time.time()
    if ray_pool is not None and stage in ("sample", "score"):
        from data_pipeline import distributed

        fn = distributed.sample_on_ray if stage == "sample" else distributed.score_on_ray
        result = fn(cfg, out, ray_pool.opts, pool=ray_pool)
    elif stage == "select":
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
    from data_pipeline.engine import select_platform  # one rule for every vLLM user (see there)

    select_platform()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=STAGES + ("run",))
    ap.add_argument("--config", required=True, help="pipeline YAML (see configs/data/)")
    ap.add_argument("--out", required=True, help="output directory (shared by all stages)")
    ap.add_argument("--shard", default=None, help="i/N: this machine's share of the prompts (sample/score/verify)")
    ap.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="sample and score on a Ray cluster: ADDRESS (host:port) joins that cluster; without it, "
                         "join the running local cluster or start one")
    ap.add_argument("--ray-replicas", type=int, default=None, metavar="N",
                    help="engine replicas per model (default: per node, its GPUs // tensor_parallel_size)")
    args = ap.parse_args(argv)
    _select_vllm_platform()

    from data_pipeline import config as config_lib
    from data_pipeline.distributed import UnitsFailed
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
        if args.ray is None or not {"sample", "score"} & set(stages):
            for stage in stages:
                run_stage(stage, cfg, out, shard)
            return 0
        from data_pipeline import distributed

        if shard != (0, 1):
            raise ConfigError("--ray and --shard exclude each other: the cluster balances the prompts itself")
        opts = distributed.RayOptions(address=args.ray or None, replicas=args.ray_replicas)
        with distributed.session(opts) as pool:
            for stage in stages:
                run_stage(stage, cfg, out, shard, pool)
    except UnitsFailed as e:
        print(f"data_pipeline: {e}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, ValueError, SandboxUnavailable) as e:
        print(f"data_pipeline: error: {e}", file=sys.stderr)
        return 2
    return 0
