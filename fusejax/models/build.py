"""Create models abstractly and directly in their sharding: never whole on one device first."""

from __future__ import annotations

import math

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fusejax.models.config import ModelConfig, RuntimeOptions
from fusejax.models.transformer import Transformer
from fusejax.sharding import named_sharding


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def abstract_model(config: ModelConfig, options: RuntimeOptions = RuntimeOptions()) -> Transformer:
    """The model with ShapeDtypeStruct leaves: shapes and logical axes, no memory."""
    return nnx.eval_shape(lambda: Transformer(config, options, rngs=nnx.Rngs(0)))


def state_shardings(state: nnx.State, mesh: Mesh | None) -> nnx.State:
    """Same tree as `state`, each variable's value replaced by its NamedSharding (from its logical axes)."""

    def one(var):
        if mesh is None:
            return var.replace(None)
        return var.replace(named_sharding(mesh, var.get_metadata()["logical_axes"], var.shape))

    return jax.tree.map(one, state, is_leaf=_is_var)


def param_count(config: ModelConfig) -> int:
    _, state = nnx.split(abstract_model(config))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def create_model(
    config: ModelConfig, options: RuntimeOptions = RuntimeOptions(), mesh: Mesh | None = None, seed: int = 0
) -> Transformer:
    """A randomly initialised model, each parameter created directly in its sharding on `mesh`."""
    graphdef, abstract_state = nnx.split(abstract_model(config, options))
    shardings = state_shardings(abstract_state, mesh) if mesh is not None else None

    @jax.jit
    def init():
        return nnx.state(Transformer(config, options, rngs=nnx.Rngs(seed)))

    if shardings is not None:
        init = jax.jit(init.__wrapped__, out_shardings=shardings)
    return nnx.merge(graphdef, init())


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
