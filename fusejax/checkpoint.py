"""Orbax checkpoints: one layout for converted models and training runs.

A checkpoint directory is an Orbax CheckpointManager directory; each step holds items:
  params        - model parameters (pure nested dict of arrays), restored straight into the target shardings
  model_config  - the ModelConfig as JSON (so a checkpoint alone is enough to rebuild the model)
and, for training runs, opt_state, train_state (step counters, data iterator position) and train_config.
Orbax writes each step to a temporary directory and renames it into place: a crash never leaves a partial step.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from fusejax.models.build import abstract_model, state_shardings
from fusejax.models.config import ConfigError, ModelConfig, RopeScaling, RuntimeOptions
from fusejax.models.transformer import Transformer


def config_to_json(cfg: ModelConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    if d.get("layer_types") is not None:
        d["layer_types"] = list(d["layer_types"])
    return d


def config_from_json(d: dict[str, Any]) -> ModelConfig:
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise ConfigError(f"model_config: unknown field(s) {sorted(unknown)}")
    if d.get("rope_scaling") is not None:
        d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    if d.get("layer_types") is not None:
        d["layer_types"] = tuple(d["layer_types"])
    return ModelConfig(**d)


def is_remote(path: str | os.PathLike) -> bool:
    return str(path).startswith(("gs://", "s3://"))


def ensure_empty_destination(path: str | os.PathLike) -> None:
    if is_remote(path):
        return
    p = Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise FileExistsError(f"{p}: destination exists and is not an empty directory; refusing to overwrite")


def manager(directory: str | os.PathLike, max_to_keep: int | None = None, save_interval_steps: int = 1,
            async_save: bool = False) -> ocp.CheckpointManager:
    directory = str(directory) if is_remote(directory) else os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, save_interval_steps=save_interval_steps,
        enable_async_checkpointing=async_save,
    )
    return ocp.CheckpointManager(directory, options=options)


def params_target(cfg: ModelConfig, options: RuntimeOptions, mesh: Mesh | None):
    """(graphdef, abstract state, restore target: pure dict of ShapeDtypeStruct with shardings)."""
    graphdef, abstract_state = nnx.split(abstract_model(cfg, options))
    if mesh is None:
        from jax.sharding import SingleDeviceSharding

        shardings = jax.tree.map(lambda _: SingleDeviceSharding(jax.devices()[0]), nnx.to_pure_dict(abstract_state))
    else:
        shardings = nnx.to_pure_dict(state_shardings(abstract_state, mesh))
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nnx.to_pure_dict(abstract_state), shardings
    )
    return graphdef, abstract_state, target


def save_model(directory: str | os.PathLike, model: Transformer, step: int = 0) -> None:
    """Write a model (parameters + config) as step `step` of a fresh checkpoint directory."""
    ensure_empty_destination(directory)
    mgr = manager(directory)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    mgr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        model_config=ocp.args.JsonSave(config_to_json(model.config)),
    ))
    mgr.wait_until_finished()
    mgr.close()


def read_model_config(directory: str | os.PathLike, step: int | None = None) -> tuple[ModelConfig, int]:
    mgr = manager(directory)
    try:
        step = _pick_step(mgr, directory, step)
        restored = mgr.restore(step, args=ocp.args.Composite(model_config=ocp.args.JsonRestore()))
        return config_from_json(restored["model_config"]), step
    finally:
        mgr.close()


def _pick_step(mgr: ocp.CheckpointManager, directory, step: int | None) -> int:
    steps = mgr.all_steps()
    if not steps:
        raise FileNotFoundError(f"{directory}: no checkpoint steps found")
    if step is None:
        return max(steps)
    if step not in steps:
        raise FileNotFoundError(f"{directory}: no step {step} (have {sorted(steps)})")
    return step


def load_model(
    directory: str | os.PathLike,
    step: int | None = None,
    mesh: Mesh | None = None,
    options: RuntimeOptions = RuntimeOptions(),
) -> Transformer:
    """Restore the model of a checkpoint step (default: the latest) directly into its shardings on `mesh`."""
    cfg, step = read_model_config(directory, step)
    graphdef, abstract_state, target = params_target(cfg, options, mesh)
    mgr = manager(directory)
    try:
        restored = mgr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    finally:
        mgr.close()
    nnx.replace_by_pure_dict(abstract_state, restored["params"])
    return nnx.merge(graphdef, abstract_state)
