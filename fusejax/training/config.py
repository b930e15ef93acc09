"""Training configuration: small typed dataclasses, one per concern, read from YAML with key=value overrides.

Errors (unknown key, wrong type, missing file) are raised as ConfigError before anything heavy starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from fusejax.models.config import ConfigError, RuntimeOptions


@dataclasses.dataclass
class ModelSection:
    path: str = ""  # HF directory or hub id, or an Orbax checkpoint directory (e.g. the SFT run's)
    tokenizer: str | None = None  # HF directory or hub id; default: model.path
    param_dtype: str = "float32"  # float32 master weights: lr ~1e-6 updates vanish in bfloat16
    compute_dtype: str = "bfloat16"
    remat: Literal["none", "full", "dots"] = "full"
    scan_layers: bool = True
    attention_query_chunk: int | None = None  # e.g. 512: float32 attention scores for one query block at a time
    attention: Literal["xla", "splash"] = "xla"  # splash: Pallas flash-attention kernel (TPU; README)
    splash_block: int = 512

    def runtime_options(self) -> RuntimeOptions:
        return RuntimeOptions(param_dtype=self.param_dtype, compute_dtype=self.compute_dtype, remat=self.remat,
                              scan_layers=self.scan_layers, attention_query_chunk=self.attention_query_chunk,
                              attention=self.attention, splash_block=self.splash_block)


@dataclasses.dataclass
class DataSection:
    train: list[str] = dataclasses.field(default_factory=list)  # JSONL/Parquet files or a hub dataset id
    eval: list[str] = dataclasses.field(default_factory=list)  # held-out rows; else eval_fraction of train
    eval_fraction: float = 0.0
    split: str = "train"  # split name for hub datasets
    max_length: int = 2048
    packing: bool = True  # SFT only
    seed: int = 0
    loss_chunk: int = 512  # tokens per chunk of the vocabulary projection + cross-entropy


@dataclasses.dataclass
class OptimSection:
    learning_rate: float = 5e-6
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    mu_dtype: Literal["float32", "bfloat16"] = "float32"  # AdamW first moment; bfloat16 saves 2 bytes per parameter


@dataclasses.dataclass
class TrainSection:
    epochs: float = 1.0
    global_batch_size: int = 128  # SFT: packed rows; DPO: preference pairs
    grad_accum_steps: int = 1
    max_steps: int | None = None  # cap on optimizer steps (default: from epochs)
    log_every: int = 1
    seed: int = 0


@dataclasses.dataclass
class DPOSection:
    beta: float = 0.1
    loss: Literal["sigmoid", "ln"] = "sigmoid"  # ln: length-normalised (FuseChat-3.0 for the Llama targets)
    label_smoothing: float = 0.0
    reference: Literal["model", "precomputed"] = "precomputed"


@dataclasses.dataclass
class CheckpointSection:
    dir: str | None = None  # default OUTPUT_DIR/checkpoints; gs://... on multi-host pods
    save_every: int = 100
    keep: int = 2
    async_save: bool = True


@dataclasses.dataclass
class TrainConfig:
    stage: Literal["sft", "dpo"] = "sft"
    output_dir: str = "runs/default"
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    dpo: DPOSection = dataclasses.field(default_factory=DPOSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    mesh: dict[str, int] = dataclasses.field(default_factory=lambda: {"fsdp": -1})
    export_hf: str | None = None  # HF directory for the final model: a local path or gs://bucket/dir
    push_to_hub: str | None = None  # ORG/NAME: upload the export_hf directory with a generated model card
    push_to_hub_private: bool = False
    peak_flops_per_device: float | None = None  # for the MFU estimate; default from the device kind

    @property
    def checkpoint_dir(self) -> str:
        return self.checkpoint.dir or str(Path(self.output_dir) / "checkpoints")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: expected {tp}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {k: _check_type(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def _from_dict(cls, data: Any, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where + '.' if where else ''}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {k: _check_type(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value (e.g. optim.learning_rate=1e-6)")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else None


def _coerce_numbers(tree: Any) -> Any:
    """YAML 1.1 reads 5e-6 as a string; accept it as a number."""
    if isinstance(tree, dict):
        return {k: _coerce_numbers(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_coerce_numbers(v) for v in tree]
    if isinstance(tree, str):
        try:
            return float(tree) if any(c in tree.lower() for c in ".e") and tree.strip() else tree
        except ValueError:
            return tree
    return tree


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file, with clear errors for a missing file, bad YAML or a non-mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_config(path: str | Path | None, overrides: list[str] = (), check_paths: bool = True) -> TrainConfig:
    data: dict = read_yaml(path) if path is not None else {}
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': {k} is not a section")
        node[keys[-1]] = value
    cfg = _from_dict(TrainConfig, _coerce_numbers(data), "")
    validate(cfg, check_paths)
    return cfg


def validate(cfg: TrainConfig, check_paths: bool = True) -> None:
    if cfg.output_dir.startswith(("gs://", "s3://")):
        raise ConfigError("output_dir: must be a local directory (logs, reports, exports); put checkpoints on "
                          "cloud storage with checkpoint.dir: gs://...")
    if not cfg.model.path:
        raise ConfigError("model.path: required (HF directory, hub id or Orbax checkpoint)")
    if cfg.push_to_hub and not cfg.export_hf:
        raise ConfigError("push_to_hub: needs export_hf (the HF directory to upload)")
    if cfg.push_to_hub and cfg.push_to_hub.count("/") != 1:
        raise ConfigError(f"push_to_hub: expected ORG/NAME, got {cfg.push_to_hub!r}")
    if not cfg.data.train:
        raise ConfigError("data.train: required (JSONL/Parquet files or a hub dataset id)")
    for p in cfg.data.train + cfg.data.eval:
        if check_paths and _looks_local(p) and not Path(p).exists():
            raise ConfigError(f"data: file not found: {p}")
    if check_paths and _looks_local(cfg.model.path) and not Path(cfg.model.path).exists():
        raise ConfigError(f"model.path: not found: {cfg.model.path}")
    t = cfg.train
    if t.global_batch_size <= 0 or t.grad_accum_steps <= 0 or t.global_batch_size % t.grad_accum_steps:
        raise ConfigError(f"train.global_batch_size ({t.global_batch_size}) must be a positive multiple of "
                          f"train.grad_accum_steps ({t.grad_accum_steps})")
    if not 0 <= cfg.optim.warmup_ratio < 1:
        raise ConfigError("optim.warmup_ratio: must be in [0, 1)")
    if cfg.data.max_length < 2:
        raise ConfigError("data.max_length: must be at least 2")
    if cfg.model.attention == "splash":
        if cfg.model.splash_block not in (128, 256, 512, 1024):
            raise ConfigError(f"model.splash_block: must be 128, 256, 512 or 1024, got {cfg.model.splash_block}")
        if cfg.data.max_length >= 128 and cfg.data.max_length % 128:
            raise ConfigError(f"data.max_length ({cfg.data.max_length}): model.attention=splash needs a multiple "
                              "of 128")
    if not 0 <= cfg.data.eval_fraction < 1:
        raise ConfigError("data.eval_fraction: must be in [0, 1)")
    if cfg.dpo.beta <= 0:
        raise ConfigError("dpo.beta: must be positive")
    for dt, where in ((cfg.model.param_dtype, "model.param_dtype"), (cfg.model.compute_dtype, "model.compute_dtype")):
        if dt not in ("float32", "bfloat16"):
            raise ConfigError(f"{where}: must be float32 or bfloat16, got {dt!r}")


def _looks_local(p: str) -> bool:
    """Hub ids look like 'org/name'; anything with a file suffix, ./, / or ~ is a local path."""
    if "://" in p:  # gs://, s3://, hf://, memory://: read through fsspec (fusejax.storage)
        return False
    path = Path(p).expanduser()
    return p.startswith((".", "/", "~")) or path.suffix in (".jsonl", ".json", ".parquet", ".yaml") or path.exists()


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
