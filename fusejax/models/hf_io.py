"""HF safetensors <-> fusejax model, through each family's declarative key table (one table, both directions).

Loading reads each tensor (memory-mapped) straight into the shards of its target sharding, so host memory stays near
one tensor. Export writes to a sibling temporary directory and renames it into place: a failure leaves nothing
half-written at the destination.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding

from fusejax.models import families
from fusejax.models.build import abstract_model, state_shardings
from fusejax.models.config import ConfigError, ModelConfig, RuntimeOptions
from fusejax.models.transformer import Transformer

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)
# Tensors some checkpoints carry that hold nothing we need.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


class WeightsError(ValueError):
    """Checkpoint tensors that do not match the config: names the tensor."""


def read_hf_config(hf_dir: str | os.PathLike) -> tuple[ModelConfig, dict]:
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{hf_dir}: no config.json (is this a HF model directory?)")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return families.config_from_hf(hf), hf


class _SafetensorsReader:
    """Tensor name -> memory-mapped tensor, over a single file or an index of shards."""

    def __init__(self, hf_dir: Path):
        from safetensors import safe_open

        index = hf_dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        else:
            files = sorted(hf_dir.glob("*.safetensors"))
            if not files:
                raise WeightsError(f"{hf_dir}: no *.safetensors files and no model.safetensors.index.json")
            weight_map = {}
            for f in files:
                with safe_open(f, framework="flax") as h:
                    weight_map.update({k: f.name for k in h.keys()})
        self.weight_map = weight_map
        self._open = safe_open
        self._handles: dict[str, object] = {}
        self.hf_dir = hf_dir

    def _handle(self, name: str):
        fname = self.weight_map[name]
        if fname not in self._handles:
            path = self.hf_dir / fname
            if not path.is_file():
                raise WeightsError(f"{path}: shard named in the index for tensor '{name}' does not exist")
            self._handles[fname] = self._open(path, framework="flax")
        return self._handles[fname]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        with jax.default_device(jax.local_devices(backend="cpu")[0]):  # this process's own CPU (multi-host)
            return np.asarray(self._handle(name).get_tensor(name))


def _expected_tensors(cfg: ModelConfig, flat_abstract: dict[str, nnx.Variable]) -> dict[str, tuple]:
    """HF name -> (rule, layer index or None, expected HF shape)."""
    out = {}
    for rule in families.key_rules(cfg):
        if rule.ours not in flat_abstract:
            raise ConfigError(f"internal: key table names '{rule.ours}', which the model does not have")
        shape = tuple(flat_abstract[rule.ours].shape)
        if rule.per_layer:
            for i in range(cfg.num_layers):
                out[rule.hf.format(i=i)] = (rule, i, rule.hf_shape(shape[1:]))
        else:
            out[rule.hf] = (rule, None, rule.hf_shape(shape))
    return out


def _flat(state: nnx.State) -> dict[str, nnx.Variable]:
    return {".".join(map(str, path)): var for path, var in nnx.to_flat_state(state)}


def load_hf(
    hf_dir: str | os.PathLike,
    dtype: str = "float32",
    mesh: Mesh | None = None,
    options: RuntimeOptions | None = None,
) -> tuple[Transformer, ModelConfig]:
    """Load a HF checkpoint directory into a (sharded) model. Returns (model, config).

    dtype: parameter dtype (float32 master weights for training). options: runtime options (compute dtype, remat,
    scan); its param_dtype is overridden by `dtype`.
    """
    hf_dir = Path(hf_dir)
    cfg, _ = read_hf_config(hf_dir)
    options = RuntimeOptions(**{**vars(options or RuntimeOptions()), "param_dtype": dtype})
    graphdef, abstract_state = nnx.split(abstract_model(cfg, options))
    flat_abstract = _flat(abstract_state)
    expected = _expected_tensors(cfg, flat_abstract)

    reader = _SafetensorsReader(hf_dir)
    present = set(reader.weight_map)
    ignored = {n for n in present if n.endswith(_IGNORED_SUFFIXES)}
    if cfg.tie_embeddings:
        ignored.add("lm_head.weight")  # some tied checkpoints store a copy; the tie wins, as in transformers
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected) - ignored)
    if missing:
        raise WeightsError(f"{hf_dir}: tensor '{missing[0]}' is missing ({len(missing)} missing in all)")
    if extra:
        raise WeightsError(
            f"{hf_dir}: unexpected tensor '{extra[0]}' ({len(extra)} unexpected in all) for model_type "
            f"'{cfg.model_type}' with tie_word_embeddings={cfg.tie_embeddings}"
        )
    for name, (_, _, want) in expected.items():
        got = reader.shape(name)
        if got != want:
            raise WeightsError(f"{hf_dir}: tensor '{name}' has shape {list(got)}, config.json implies {list(want)}")

    by_param: dict[str, list] = {}
    for name, (rule, layer, _) in expected.items():
        by_param.setdefault(rule.ours, []).append((layer, name, rule))

    np_dtype = _NP_DTYPES[dtype]
    shardings = _flat(state_shardings(abstract_state, mesh)) if mesh is not None else None
    default = SingleDeviceSharding(jax.devices()[0])
    arrays = {}
    for path, var in flat_abstract.items():
        entries = sorted(by_param[path], key=lambda e: -1 if e[0] is None else e[0])
        shape = tuple(var.shape)
        sharding = shardings[path].get_value() if shardings is not None else default
        arrays[path] = jax.make_array_from_callback(
            shape, sharding, _shard_loader(reader, entries, shape, np_dtype)
        )
    state = nnx.from_flat_state(
        {tuple(p.split(".")): var.replace(arrays[p]) for p, var in flat_abstract.items()}
    )
    return nnx.merge(graphdef, state), cfg


def _shard_loader(reader: _SafetensorsReader, entries, shape, np_dtype):
    """Callback for make_array_from_callback: reads only the layers (and then the slice) a shard needs."""
    stacked = entries[0][0] is not None

    def load(index: tuple[slice, ...]) -> np.ndarray:
        if not stacked:
            _, name, rule = entries[0]
            return rule.to_ours(reader.get(name), shape).astype(np_dtype)[index]
        layers = range(*index[0].indices(shape[0]))
        parts = []
        for i in layers:
            _, name, rule = entries[i]
            parts.append(rule.to_ours(reader.get(name), shape[1:]).astype(np_dtype)[index[1:]])
        return np.stack(parts)

    return load


def _to_host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def iter_hf_tensors(model: Transformer, dtype: str) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, numpy tensor in `dtype`), one tensor at a time (all processes must iterate: gathers are collective)."""
    cfg: ModelConfig = model.config
    flat = _flat(nnx.state(model, nnx.Param))
    np_dtype = _NP_DTYPES[dtype]
    for rule in families.key_rules(cfg):
        value = flat[rule.ours].get_value()
        if rule.per_layer:
            for i in range(cfg.num_layers):
                t = rule.to_hf(_to_host(value[i]))
                yield rule.hf.format(i=i), np.ascontiguousarray(t.astype(np_dtype))
        else:
            yield rule.hf, np.ascontiguousarray(rule.to_hf(_to_host(value)).astype(np_dtype))


def save_hf(
    model: Transformer,
    out_dir: str | os.PathLike,
    tokenizer_dir: str | os.PathLike | None = None,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 1024**3,
) -> Path:
    """Write config.json, safetensors (sharded with an index above max_shard_bytes), generation_config.json and the
    tokenizer files of `tokenizer_dir`. dtype: tensor dtype, default the checkpoint's published dtype.

    On multi-host runs every process must call this (the gathers are collective); only process 0 writes.
    """
    from safetensors.numpy import save_file

    cfg: ModelConfig = model.config
    dtype = dtype or cfg.torch_dtype
    if dtype not in _NP_DTYPES:
        raise ConfigError(f"save_hf: unsupported dtype '{dtype}' (use one of {sorted(_NP_DTYPES)})")
    out_dir = Path(out_dir)
    writer = jax.process_index() == 0  # the checks concern the writer's disk (other hosts may share it, or not)
    if writer and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: destination exists and is not an empty directory; refusing to overwrite")
    if writer and tokenizer_dir is not None and not Path(tokenizer_dir).is_dir():
        raise FileNotFoundError(f"{tokenizer_dir}: tokenizer directory does not exist")
    tmp = None
    if writer:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        shards: list[list[str]] = []
        buffer: dict[str, np.ndarray] = {}
        size = 0
        total = 0

        def flush():
            nonlocal buffer, size
            if buffer and writer:
                save_file(buffer, str(tmp / f"shard-{len(shards):05d}.safetensors"), metadata={"format": "pt"})
                shards.append(list(buffer))
            buffer, size = {}, 0

        for name, tensor in iter_hf_tensors(model, dtype):
            if buffer and size + tensor.nbytes > max_shard_bytes:
                flush()
            buffer[name] = tensor
            size += tensor.nbytes
            total += tensor.nbytes
        flush()
        if not writer:
            return out_dir
        _finish_shards(tmp, shards, total)
        hf_config = families.config_to_hf(cfg)
        hf_config["torch_dtype"] = dtype
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        _write_generation_config(tmp, cfg, tokenizer_dir)
        if tokenizer_dir is not None:
            for f in TOKENIZER_FILES:
                if (Path(tokenizer_dir) / f).is_file():
                    shutil.copy2(Path(tokenizer_dir) / f, tmp / f)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp, out_dir)
        tmp = None
        return out_dir
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _finish_shards(tmp: Path, shards: list[list[str]], total_bytes: int) -> None:
    n = len(shards)
    if n == 1:
        os.replace(tmp / "shard-00000.safetensors", tmp / "model.safetensors")
        return
    weight_map = {}
    for k, names in enumerate(shards):
        final = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        os.replace(tmp / f"shard-{k:05d}.safetensors", tmp / final)
        weight_map.update({name: final for name in names})
    index = {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _write_generation_config(tmp: Path, cfg: ModelConfig, tokenizer_dir) -> None:
    src = Path(tokenizer_dir) / "generation_config.json" if tokenizer_dir is not None else None
    if src is not None and src.is_file():
        shutil.copy2(src, tmp / "generation_config.json")
        return
    gen = {k: v for k, v in dict(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                                  pad_token_id=cfg.pad_token_id).items() if v is not None}
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def total_bytes(model: Transformer) -> int:
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
