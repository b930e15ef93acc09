"""`fusejax demo`: FuseChat-3.0's implicit model fusion, end to end and measured, on tiny models on a CPU.

Three tiny source models of different families (Llama, Qwen-2, Gemma-2; each with its own chat format) are each
taught one arithmetic skill by fusejax SFT. The real data pipeline samples all of them on prompts of every skill with
vLLM, scores the responses with a reward model, checks them with math-verify and builds the SFT and DPO sets by the
recipe's rules. A tiny untrained target then gets SFT and length-normalised DPO, and `fusejax eval` measures target
(before, after SFT, after DPO) and every source on held-out prompts of every skill.

    fusejax demo [--config configs/demo/demo.yaml] [--out runs/demo] [key=value ...]

Layout: skills.py (the tasks and their prompt sets), models.py (models, cached source training, training configs),
config.py (the YAML), run.py (the stages and the summary).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo" / "demo.yaml"


def _environment() -> None:
    """CPU-only, in-process vLLM engines (fast start), nothing fetched from the hub. Before jax/vllm imports."""
    for key, value in {"JAX_PLATFORMS": "cpu", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_TARGET_DEVICE": "cpu",
                       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "VLLM_LOGGING_LEVEL": "ERROR",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusejax demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="demo YAML (default: configs/demo/demo.yaml)")
    ap.add_argument("--out", default="runs/demo", help="work directory, kept for inspection (default: runs/demo)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sft.epochs=2")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    _environment()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, also when piped

    from transformers.utils import logging as hf_logging

    from fusejax.demo import config as config_lib
    from fusejax.demo.run import run
    from fusejax.models.config import ConfigError

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    try:
        cfg = config_lib.load(args.config, args.overrides)
        run(cfg, Path(args.out))
    except (ConfigError, FileNotFoundError) as e:
        print(f"fusejax demo: error: {e}", file=sys.stderr)
        return 2
    return 0
