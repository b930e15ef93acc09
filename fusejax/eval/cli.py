"""`fusejax eval` and `fusejax eval-compare`.

    fusejax eval --model HF_DIR_OR_HUB_ID --benchmarks gsm8k,humaneval,mt-bench --out runs/eval/base \\
        [--limit N] [--data-dir DIR] [--judge-base-url URL --judge-model NAME --judge-api-key-env VAR] \\
        [--config configs/eval/fuseeval.yaml] [--max-new-tokens N] [--label NAME]
    fusejax eval-compare runs/eval/base runs/eval/sft runs/eval/dpo [--out DIR]
"""

from __future__ import annotations

import argparse
import sys


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusejax eval", description="FuseEval's benchmarks for one model (vLLM, "
                                "resumable: rerun the same command after a crash)")
    p.add_argument("--config", default=None, help="YAML config (configs/eval/); flags override its values")
    p.add_argument("--model", default=None, help="HF model directory or hub id")
    p.add_argument("--benchmarks", default=None,
                   help="comma-separated: gsm8k, math500, minerva-math, amc23, aime24, humaneval, mbppplus, "
                        "mmlu-pro, gpqa, mt-bench, arena-hard, alpaca-eval, or NAME=PATH (JSONL of question/answer)")
    p.add_argument("--out", default=None, help="run directory (per-sample files, results.json, results.md)")
    p.add_argument("--label", default=None, help="name of this run in tables and plots (default: model dir name)")
    p.add_argument("--limit", type=int, default=None, help="first N samples of each benchmark")
    p.add_argument("--data-dir", default=None, help="local benchmark files (FuseEval's layouts) instead of the hub")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 2048 (FuseEval)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per resumable part file (default 64)")
    p.add_argument("--max-model-len", type=int, default=None, help="vLLM context (default 4096)")
    p.add_argument("--dtype", default=None, help="vLLM dtype (default auto)")
    p.add_argument("--tensor-parallel-size", type=int, default=None)
    p.add_argument("--enforce-eager", action="store_true", default=None,
                   help="vLLM without graph compilation (faster start, e.g. for short CPU runs)")
    p.add_argument("--kv-cache-memory-bytes", type=int, default=None, help="vLLM KV cache size (CPU: e.g. 1073741824)")
    p.add_argument("--judge-base-url", default=None, help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1")
    p.add_argument("--judge-model", default=None, help="judge model name, e.g. gpt-4-1106-preview")
    p.add_argument("--judge-api-key-env", default=None, help="NAME of the environment variable holding the API key")
    return p


def _eval(argv: list[str]) -> int:
    from fusejax.eval import config as C
    from fusejax.eval.run import evaluate

    a = _eval_parser().parse_args(argv)
    overrides = {"model": a.model, "out": a.out, "label": a.label, "limit": a.limit, "data_dir": a.data_dir,
                 "max_new_tokens": a.max_new_tokens, "batch_size": a.batch_size,
                 "benchmarks": [b.strip() for b in a.benchmarks.split(",") if b.strip()] if a.benchmarks else None,
                 "engine.max_model_len": a.max_model_len, "engine.dtype": a.dtype,
                 "engine.tensor_parallel_size": a.tensor_parallel_size,
                 "engine.kv_cache_memory_bytes": a.kv_cache_memory_bytes, "engine.enforce_eager": a.enforce_eager,
                 "judge.base_url": a.judge_base_url, "judge.model": a.judge_model,
                 "judge.api_key_env": a.judge_api_key_env}
    cfg = C.load(a.config, overrides)
    evaluate(cfg.model, cfg.benchmarks, cfg.out, limit=cfg.limit, data_dir=cfg.data_dir, judge=cfg.judge_config(),
             max_new_tokens=cfg.max_new_tokens, label=cfg.label, engine=cfg.engine, batch_size=cfg.batch_size)
    return 0


def _compare(argv: list[str]) -> int:
    from fusejax.eval.compare import compare

    p = argparse.ArgumentParser(prog="fusejax eval-compare", description="several eval runs side by side")
    p.add_argument("runs", nargs="+", help="run directories (or their results.json)")
    p.add_argument("--out", default=None, help="write compare.md and compare.png here (default: the first run)")
    a = p.parse_args(argv)
    print(compare(a.runs, out_dir=a.out or a.runs[0]))
    print(f"plot: {(a.out or a.runs[0])}/compare.png")
    return 0


def main(argv: list[str]) -> int:
    """argv[0] is "eval" or "eval-compare"."""
    from data_pipeline.sandbox import SandboxUnavailable
    from fusejax.eval.benchmarks import DataError
    from fusejax.eval.judge import JudgeError
    from fusejax.eval.run import RunError
    from fusejax.models.config import ConfigError

    try:
        return _eval(argv[1:]) if argv[0] == "eval" else _compare(argv[1:])
    except (ConfigError, DataError, JudgeError, RunError, SandboxUnavailable, FileNotFoundError,
            FileExistsError) as e:
        print(f"fusejax {argv[0]}: error: {e}", file=sys.stderr)
        return 2
