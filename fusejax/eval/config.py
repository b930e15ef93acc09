"""`fusejax eval` configuration: a YAML file (configs/eval/*.yaml) and/or command-line flags (flags win)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fusejax.eval.generate import EngineOptions
from fusejax.eval.judge import JudgeConfig
from fusejax.models.config import ConfigError
from fusejax.training.config import _coerce_numbers, _from_dict, read_yaml


@dataclasses.dataclass
class JudgeSection:
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None  # the NAME of the variable holding the key
    workers: int = 8


@dataclasses.dataclass
class EvalConfig:
    model: str = ""
    benchmarks: list[str] = dataclasses.field(default_factory=list)
    out: str = ""
    label: str | None = None
    limit: int | None = None
    data_dir: str | None = None
    max_new_tokens: int | None = None  # default 2048 (FuseEval)
    batch_size: int = 64  # samples per resumable part file
    engine: EngineOptions = dataclasses.field(default_factory=EngineOptions)
    judge: JudgeSection = dataclasses.field(default_factory=JudgeSection)

    def judge_config(self) -> JudgeConfig | None:
        j = self.judge
        if not j.base_url and not j.model:
            return None
        return JudgeConfig(base_url=j.base_url, model=j.model, api_key_env=j.api_key_env, workers=j.workers)


def load(path: str | Path | None, overrides: dict) -> EvalConfig:
    """The YAML file (if any) with `overrides` (flag values that are not None) on top, validated."""
    data = _coerce_numbers(read_yaml(path)) if path else {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, field = key.partition(".")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[key] = value
    where = str(path) if path else "eval"
    cfg = _from_dict(EvalConfig, data, "")
    if isinstance(cfg.engine, dict):  # _from_dict builds nested dataclasses; keep EngineOptions frozen
        cfg.engine = EngineOptions(**cfg.engine)
    _validate(cfg, where)
    return cfg


def _validate(cfg: EvalConfig, where: str) -> None:
    if not cfg.model:
        raise ConfigError(f"{where}: model is required (an HF directory or hub id)")
    if not cfg.benchmarks:
        raise ConfigError(f"{where}: benchmarks: give at least one")
    if not cfg.out:
        raise ConfigError(f"{where}: out is required (the run directory)")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"{where}: limit must be >= 1")
    if cfg.batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be >= 1")
    j = cfg.judge
    if bool(j.base_url) != bool(j.model):
        raise ConfigError(f"{where}: judge: give both base_url and model (or neither)")
    if cfg.data_dir and not Path(cfg.data_dir).is_dir():
        raise ConfigError(f"{where}: data_dir {cfg.data_dir} is not a directory")
