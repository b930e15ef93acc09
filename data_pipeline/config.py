"""Pipeline configuration (YAML): datasets, source models, reward model, verification and build rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from fusejax.models.config import ConfigError
from fusejax.training.config import _coerce_numbers, _from_dict, read_yaml

Domain = Literal["instruction", "math", "code", "chinese"]
DOMAINS = ("instruction", "math", "code", "chinese")


@dataclasses.dataclass
class DatasetSpec:
    name: str
    source: str  # hub id, or a local .jsonl/.json/.parquet file
    domain: Domain
    split: str = "train"
    subset: str | None = None  # hub config name
    prompt_field: str | None = None  # a text field -> one user message
    messages_field: str | None = None  # a list of {role, content} (or {from, value}); the last assistant turn dropped
    answer_field: str | None = None  # math: gold answer
    tests_field: str | None = None  # code: Python test code (asserts), run after the solution
    limit: int | None = None  # keep at most this many prompts (seeded sample after filtering)
    drop_math: bool = False  # remove math prompts (instruction-following and Chinese sets)
    drop_code: bool = False  # remove code prompts
    min_chars: int = 1
    max_chars: int = 16000


@dataclasses.dataclass
class ModelSpec:
    name: str
    path: str  # hub id or local directory
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    max_tokens: int = 4096
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    domains: list[str] = dataclasses.field(default_factory=lambda: ["instruction", "math", "code"])
    max_model_len: int | None = None


@dataclasses.dataclass
class RewardSpec:
    path: str = "RLHFlow/ArmoRM-Llama3-8B-v0.1"
    backend: Literal["vllm", "transformers"] = "transformers"  # ArmoRM is custom code: transformers
    trust_remote_code: bool = True
    dtype: str = "bfloat16"
    batch_size: int = 8
    max_length: int = 4096


@dataclasses.dataclass
class VerifySpec:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    workers: int = 0  # 0: one per CPU core


@dataclasses.dataclass
class BuildSpec:
    sft_fraction: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"instruction": 0.4, "math": 0.4, "code": 0.4, "chinese": 1.0})
    gap_min: float = 0.01
    gap_max: float = 0.1
    chinese_model: str = "qwen2.5-72b-instruct"


@dataclasses.dataclass
class VLLMSpec:
    enforce_eager: bool = False
    kv_cache_memory_bytes: int | None = None
    gpu_memory_utilization: float = 0.9
    batch_prompts: int = 256  # prompts per resumable part file


@dataclasses.dataclass
class PipelineConfig:
    seed: int = 0
    datasets: list[DatasetSpec] = dataclasses.field(default_factory=list)
    models: list[ModelSpec] = dataclasses.field(default_factory=list)
    samples: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"instruction": 5, "math": 5, "code": 8, "chinese": 1})
    reward: RewardSpec = dataclasses.field(default_factory=RewardSpec)
    verify: VerifySpec = dataclasses.field(default_factory=VerifySpec)
    build: BuildSpec = dataclasses.field(default_factory=BuildSpec)
    vllm: VLLMSpec = dataclasses.field(default_factory=VLLMSpec)


def load(path: str | Path) -> PipelineConfig:
    path = Path(path)
    cfg = _from_dict(PipelineConfig, _coerce_numbers(read_yaml(path)), "")
    _validate(cfg, path)
    return cfg


def _validate(cfg: PipelineConfig, path: Path) -> None:
    if not cfg.datasets:
        raise ConfigError(f"{path}: datasets: at least one dataset is required")
    names = [d.name for d in cfg.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: datasets: duplicate names")
    for i, d in enumerate(cfg.datasets):
        where = f"{path}: datasets[{i}] ({d.name})"
        if (d.prompt_field is None) == (d.messages_field is None):
            raise ConfigError(f"{where}: set exactly one of prompt_field and messages_field")
        if d.domain == "math" and not d.answer_field:
            raise ConfigError(f"{where}: math datasets need answer_field (gold answers)")
        if d.domain == "code" and not d.tests_field:
            raise ConfigError(f"{where}: code datasets need tests_field")
    models = [m.name for m in cfg.models]
    if len(set(models)) != len(models):
        raise ConfigError(f"{path}: models: duplicate names")
    for m in cfg.models:
        bad = sorted(set(m.domains) - set(DOMAINS))
        if bad:
            raise ConfigError(f"{path}: models ({m.name}).domains: unknown {bad}")
    if "chinese" in {d.domain for d in cfg.datasets} and cfg.build.chinese_model not in models:
        raise ConfigError(f"{path}: build.chinese_model '{cfg.build.chinese_model}' is not among models")
    if not 0 <= cfg.build.gap_min <= cfg.build.gap_max:
        raise ConfigError(f"{path}: build: need 0 <= gap_min <= gap_max")
