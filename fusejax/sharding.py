"""Device mesh and the one table that maps logical axis names onto it.

Weights and activations carry logical axis names ("embed", "mlp", ...). `RULES` maps each name to mesh axes:
  data   - pure data parallelism (replicated parameters), e.g. across TPU slices;
  fsdp   - data parallelism with parameters and optimizer state sharded (ZeRO-3 style);
  tensor - tensor parallelism over heads, MLP width and vocabulary.
A name that is absent (or maps to None) is replicated. A dimension that the assigned mesh axes do not divide is
replicated instead (tiny test models, kv heads fewer than the tensor axis).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

RULES: dict[str, tuple[str, ...] | None] = {
    # activations
    "batch": ("data", "fsdp"),
    "seq": None,
    "act_embed": None,
    "act_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
    # weights
    "layers": None,
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "q_heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": None,
    "mlp": ("tensor",),
    "norm": None,
}


def make_mesh(shape: dict[str, int] | None = None, devices: Sequence | None = None) -> Mesh:
    """Mesh over `devices` (default: all) with axes data/fsdp/tensor.

    `shape` maps axis name -> size; one axis may be -1 (takes the remaining devices). Default: everything on fsdp.
    Works for 1 device, fake CPU devices and TPU topology descriptions alike. Axis types are Auto (GSPMD).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = dict(shape or {"fsdp": -1})
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh: unknown axis name(s) {sorted(unknown)}; use {MESH_AXES}")
    sizes = [shape.get(a, 1) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError("mesh: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh: {len(devices)} devices are not divisible by the fixed axes' product {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh: axes {dict(zip(MESH_AXES, sizes))} need {math.prod(sizes)} devices, have {len(devices)}")
    device_array = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(logical: Sequence[str | None], shape: Sequence[int] | None = None, mesh: Mesh | None = None) -> P:
    """PartitionSpec for logical axis names; with shape and mesh, drops mesh axes that do not divide a dimension."""
    used: set[str] = set()
    out = []
    for i, name in enumerate(logical):
        axes = RULES.get(name) if name is not None else None
        if axes is None:
            out.append(None)
            continue
        axes = tuple(a for a in axes if a not in used)
        if mesh is not None:
            axes = tuple(a for a in axes if mesh.shape.get(a, 1) > 1)
            if shape is not None and axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
                axes = ()
        used.update(axes)
        out.append(axes if len(axes) > 1 else (axes[0] if axes else None))
    return P(*out)


def named_sharding(mesh: Mesh, logical: Sequence[str | None], shape: Sequence[int] | None = None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical, shape, mesh))


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation, by logical names, under the mesh set with `jax.set_mesh`.

    Without a mesh in context (single device) it returns x unchanged.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical, x.shape, mesh))
