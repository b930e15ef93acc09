"""The demo's models: tiny source models of three families, each trained by fusejax SFT on one skill (cached), the
untrained target, and the tiny reward model.

Every model gets its family's own chat format and special tokens (fusejax.tiny.CHAT_STYLES): sources and target
share nothing but text, as in heterogeneous fusion.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from fusejax.demo import skills as skills_lib
from fusejax.demo.config import DPOSettings, ModelSize, SourceSpec, TrainSettings, fingerprint

CACHE_VERSION = 1  # bump when the way sources are built changes


def new_model(out_dir: Path, family: str, size: ModelSize, seed: int) -> Path:
    """An untrained model of `family` with its family's tokenizer, written to out_dir (skipped if there)."""
    from fusejax.tiny import FAMILY_STYLE, digit_tokenizer, save_trainable_model

    if (out_dir / "config.json").is_file():
        return out_dir
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = digit_tokenizer(tmp, FAMILY_STYLE[family], skills_lib.WORDS)
    save_trainable_model(tmp, family, tok, hidden_size=size.hidden_size, num_layers=size.num_layers,
                         intermediate_size=size.intermediate_size, head_dim=size.head_dim, seed=seed)
    tmp.replace(out_dir)
    return out_dir


def train_config(stage: str, model: Path, data: Path, out_dir: Path, s: TrainSettings, seed: int):
    """A fusejax TrainConfig for a CPU run of the demo (float32, no remat), exporting to OUT/hf."""
    from fusejax.training.config import _from_dict, validate, TrainConfig

    d = {"stage": stage, "output_dir": str(out_dir), "export_hf": str(out_dir / "hf"),
         "model": {"path": str(model), "compute_dtype": "float32", "remat": "none"},
         "data": {"train": [str(data)], "max_length": s.max_length, "loss_chunk": s.max_length,
                  "packing": s.packing, "seed": seed},
         "optim": {"learning_rate": s.learning_rate, "warmup_ratio": s.warmup_ratio},
         "train": {"epochs": s.epochs, "global_batch_size": s.global_batch_size, "max_steps": s.steps,
                   "log_every": 10, "seed": seed},
         "checkpoint": {"save_every": 200, "keep": 2}}
    if isinstance(s, DPOSettings):
        d["dpo"] = {"beta": s.beta, "loss": s.loss, "reference": "precomputed"}
        d["data"]["eval_fraction"] = s.eval_fraction
        d["checkpoint"]["save_every"] = s.save_every or max(1, dpo_steps(data, s) // 5)
    cfg = _from_dict(TrainConfig, d, "")
    validate(cfg)
    return cfg


def dpo_steps(pairs: Path, s: DPOSettings) -> int:
    """Optimizer steps of a DPO run on the pairs file (as the training loop counts them: held-out pairs removed,
    whole global batches only)."""
    with open(pairs) as f:
        n = sum(1 for line in f if line.strip())
    held = max(1, round(n * s.eval_fraction)) if s.eval_fraction > 0 else 0
    return int((n - held) * s.epochs) // s.global_batch_size


def train(cfg, log=print) -> Path:
    """Run (or resume, or skip when its export exists) one fusejax training run; returns the HF export."""
    import yaml

    from fusejax.training import config as train_config_lib
    from fusejax.training.loop import run

    export = Path(cfg.export_hf)
    if (export / "config.json").is_file():
        log(f"  {export} exists: skipped")
        return export
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The same run by hand: fusejax train --config OUT/train.yaml
    (out / "train.yaml").write_text(yaml.safe_dump(train_config_lib.to_dict(cfg), sort_keys=False))
    resume = (Path(cfg.checkpoint_dir)).is_dir() and any(Path(cfg.checkpoint_dir).iterdir())
    run(cfg, resume=resume)
    return export


def source(spec: SourceSpec, gold: Path, settings: TrainSettings, cache: Path, log=print) -> Path:
    """A source model trained on its skill's gold answers, cached under cache/<name>-<hash of everything that
    determines it>; returns its HF directory."""
    trained = {k: v for k, v in dataclasses.asdict(spec).items()  # what the model depends on (not sampling)
               if k in ("name", "family", "skill", "size", "seed", "steps")}
    key = fingerprint({"spec": trained, "train": dataclasses.asdict(settings), "gold": _file_hash(gold),
                       "words": skills_lib.WORDS, "version": CACHE_VERSION})
    root = cache / f"{spec.name}-{key}"
    hf = root / "hf"
    if (hf / "config.json").is_file():
        log(f"source {spec.name} ({spec.family}, skill {spec.skill}): cached at {hf}")
        return hf
    t0 = time.time()
    log(f"source {spec.name} ({spec.family}, {spec.size.num_layers} layers x {spec.size.hidden_size}): "
        f"training on {spec.skill} ({skills_lib.get(spec.skill).description})")
    init = new_model(root / "init", spec.family, spec.size, spec.seed)
    if spec.steps is not None:
        settings = dataclasses.replace(settings, steps=spec.steps)
    train(train_config("sft", init, gold, root, settings, spec.seed), log)
    (root / "source.json").write_text(json.dumps({"spec": dataclasses.asdict(spec), "seconds": time.time() - t0},
                                                 indent=2))
    log(f"source {spec.name}: trained in {time.time() - t0:.0f}s -> {hf}")
    return hf


def reward_model(out_dir: Path, seed: int) -> Path:
    """The tiny random reward model of fusejax.tiny: scores are near-random (correctness decides for math)."""
    from fusejax.tiny import tiny_reward_model

    if not (out_dir / "config.json").is_file():
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tiny_reward_model(tmp, seed=seed)
        tmp.replace(out_dir)
    return out_dir


def _file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
