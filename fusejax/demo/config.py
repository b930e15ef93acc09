"""The demo's configuration (configs/demo/*.yaml): skills and prompt counts, the source models, the target, and the
settings of each stage. Small typed sections; unknown keys and wrong types fail before anything runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from fusejax.demo import skills as skills_lib
from fusejax.models.config import ConfigError
from fusejax.training.config import _coerce_numbers, _from_dict, _parse_override, read_yaml


@dataclasses.dataclass
class PromptCounts:
    held_out: int = 100  # per skill: evaluation prompts no model ever trains on
    pipeline: int = 600  # per skill: prompts the data pipeline samples every source on
    gold: int = 4000  # per skill: gold-answer rows a source of that skill is trained on


@dataclasses.dataclass
class ModelSize:
    hidden_size: int = 128
    num_layers: int = 2
    intermediate_size: int | None = None  # default 2 x hidden
    head_dim: int = 32  # vLLM on CPU needs >= 32


@dataclasses.dataclass
class SourceSpec:
    name: str
    family: Literal["llama", "qwen2", "gemma2"]
    skill: str
    size: ModelSize = dataclasses.field(default_factory=ModelSize)
    seed: int = 0
    steps: int | None = None  # training steps of this source (default: source_training.steps)
    # Sampling parameters in the data pipeline (FuseChat-3.0 uses per-source values).
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.0


@dataclasses.dataclass
class TrainSettings:
    """The few training keys the demo varies; the rest are the tiny CPU defaults of fusejax training."""
    learning_rate: float = 3e-3
    steps: int | None = None  # optimizer steps (None: from epochs)
    epochs: float = 1.0
    global_batch_size: int = 16
    warmup_ratio: float = 0.1
    max_length: int = 128
    packing: bool = True


@dataclasses.dataclass
class TargetSpec:
    family: Literal["llama", "qwen2", "gemma2"] = "llama"
    size: ModelSize = dataclasses.field(default_factory=ModelSize)
    seed: int = 0


@dataclasses.dataclass
class PipelineSettings:
    samples: int = 4  # responses per prompt and source
    max_tokens: int = 8
    sft_fraction: float = 0.4  # of the prompts; the rest build DPO pairs
    gap_min: float = 0.0
    gap_max: float = 1000.0
    reward_seed: int = 7


@dataclasses.dataclass
class DPOSettings(TrainSettings):
    beta: float = 10.0
    loss: Literal["sigmoid", "ln"] = "ln"
    eval_fraction: float = 0.1  # held-out pairs that pick the better of the last two checkpoints
    save_every: int | None = None  # None: a fifth of the steps, so the last two checkpoints are at 80% and 100%
                                   # of the run (the recipe: every 100 of ~500 steps)


@dataclasses.dataclass
class EvalSettings:
    max_new_tokens: int = 8


@dataclasses.dataclass
class DemoConfig:
    seed: int = 0
    skills: list[str] = dataclasses.field(default_factory=lambda: ["add", "sub", "max"])
    prompts: PromptCounts = dataclasses.field(default_factory=PromptCounts)
    sources: list[SourceSpec] = dataclasses.field(default_factory=list)
    source_training: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    target: TargetSpec = dataclasses.field(default_factory=TargetSpec)
    pipeline: PipelineSettings = dataclasses.field(default_factory=PipelineSettings)
    sft: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    dpo: DPOSettings = dataclasses.field(default_factory=DPOSettings)
    eval: EvalSettings = dataclasses.field(default_factory=EvalSettings)


def load(path: str | Path, overrides: list[str] = ()) -> DemoConfig:
    path = Path(path)
    data: dict = read_yaml(path)
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': {k} is not a section")
        node[keys[-1]] = value
    cfg = _from_dict(DemoConfig, _coerce_numbers(data), "")
    _validate(cfg, path)
    return cfg


def _validate(cfg: DemoConfig, path: Path) -> None:
    for s in cfg.skills:
        if s not in skills_lib.SKILLS:
            raise ConfigError(f"{path}: skills: unknown skill {s!r} (known: {', '.join(skills_lib.SKILLS)})")
    if not cfg.sources:
        raise ConfigError(f"{path}: sources: at least one source model is required")
    names = [s.name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: sources: duplicate names")
    for i, s in enumerate(cfg.sources):
        if s.skill not in cfg.skills:
            raise ConfigError(f"{path}: sources[{i}] ({s.name}).skill {s.skill!r} is not among skills {cfg.skills}")
    for where, size in [("target.size", cfg.target.size)] + [(f"sources ({s.name}).size", s.size)
                                                              for s in cfg.sources]:
        if size.head_dim < 32 or size.hidden_size % size.head_dim:
            raise ConfigError(f"{path}: {where}: need head_dim >= 32 (vLLM on CPU) dividing hidden_size")
    if not 0 < cfg.pipeline.sft_fraction < 1:
        raise ConfigError(f"{path}: pipeline.sft_fraction: must be in (0, 1) (SFT and DPO both need prompts)")
    if cfg.pipeline.samples < 2:
        raise ConfigError(f"{path}: pipeline.samples: need at least 2 (DPO pairs come from one source's samples)")


def fingerprint(obj: Any) -> str:
    """A short stable hash of a config section (dataclasses, dicts, lists, scalars)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def to_dict(cfg: DemoConfig) -> dict:
    return dataclasses.asdict(cfg)
