"""Invariants of the jitted steps: packed == unpacked, accumulation == one big batch, sharded == unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from transformers import AutoTokenizer

from fusejax.models import load_hf
from fusejax.sharding import make_mesh
from fusejax.training.data import ChatTokenizer, DataReport, read_rows, sft_feed, tokenize_sft
from fusejax.training.loop import to_global
from fusejax.training.step import StepOptions, _sft_loss, make_train_step


@pytest.fixture(scope="module")
def examples(tiny_assets):
    tok = AutoTokenizer.from_pretrained(tiny_assets["model"])
    return tokenize_sft(read_rows([str(tiny_assets["sft"])]), ChatTokenizer(tok), 128, DataReport())


def _rows(exs, length):
    out = {"input_ids": [], "loss_mask": [], "segment_ids": [], "positions": []}
    for e in exs:
        n = len(e["input_ids"])
        pad = length - n
        out["input_ids"].append(np.pad(e["input_ids"], (0, pad)))
        out["loss_mask"].append(np.pad(e["loss_mask"], (0, pad)))
        out["segment_ids"].append(np.pad(np.ones(n, np.int32), (0, pad)))
        out["positions"].append(np.pad(np.arange(n, dtype=np.int32), (0, pad)))
    return {k: np.stack(v) for k, v in out.items()}


def test_packed_loss_and_grads_equal_unpacked(tiny_assets, examples):
    model, _ = load_hf(tiny_assets["model"])
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    exs = sorted(examples, key=lambda e: len(e["input_ids"]))[:6]  # short ones: several per packed row
    unpacked = _rows(exs, 128)
    feed = sft_feed(exs, max_length=256, global_batch=1, epochs=1, seed=0, packing=True, pad_id=0)
    packed_rows = [next(feed.iterator) for _ in range(feed.steps)]
    packed = {k: np.concatenate([r[k] for r in packed_rows]) for k in packed_rows[0]}
    assert packed["input_ids"].shape[0] < len(exs), "nothing was packed"
    assert packed["loss_mask"].sum() == unpacked["loss_mask"].sum()
    opts = StepOptions(stage="sft", chunk=64)
    n_tokens = float(unpacked["loss_mask"][:, 1:].sum())

    def loss_and_grad(batch):
        b = {k: jnp.asarray(v) for k, v in batch.items()}
        return jax.value_and_grad(_sft_loss, has_aux=True)(params, graphdef, b, n_tokens, opts)

    (l1, a1), g1 = loss_and_grad(unpacked)
    (l2, a2), g2 = loss_and_grad(packed)
    assert float(a1["tokens"]) == float(a2["tokens"]) == n_tokens
    assert abs(float(l1) - float(l2)) < 1e-5
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-5)


def _one_step(tiny_assets, batch_rows, accum, mesh=None):
    model, _ = load_hf(tiny_assets["model"], mesh=mesh)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    # Plain SGD with lr 1: the update is the gradient itself, so comparing parameters compares gradients.
    # (Adam's first step divides by |g|, which turns rounding-level differences of tiny gradients into large ones.)
    schedule = optax.constant_schedule(1.0)
    tx = optax.sgd(schedule)
    step = jax.jit(make_train_step(graphdef, tx, schedule, StepOptions(stage="sft", chunk=64)))
    if mesh is None:
        batch = {k: jnp.asarray(v.reshape(accum, -1, *v.shape[1:])) for k, v in batch_rows.items()}
        st = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
        new, metrics = step(st, batch)
    else:
        batch = to_global(batch_rows, accum, mesh)
        with jax.set_mesh(mesh):
            opt_state = jax.jit(tx.init)(params)
            st = {"params": params, "opt_state": opt_state,
                  "step": jax.device_put(jnp.zeros((), jnp.int32), NamedSharding(mesh, P()))}
            st["opt_state"] = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, P()))
                                           if x.ndim == 0 else x, st["opt_state"])
            new, metrics = step(st, batch)
    return jax.tree.map(np.asarray, new["params"]), {k: float(v) for k, v in metrics.items()}


def test_accumulation_equals_one_big_batch(tiny_assets, examples):
    rows = _rows(examples[:8], 128)
    p1, m1 = _one_step(tiny_assets, rows, accum=1)
    p4, m4 = _one_step(tiny_assets, rows, accum=4)
    assert m1["tokens"] == m4["tokens"]
    assert abs(m1["loss"] - m4["loss"]) < 1e-6 * abs(m1["loss"])  # float32 summation order only
    assert abs(m1["grad_norm"] - m4["grad_norm"]) < 1e-5 * m1["grad_norm"]
    for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("shape", [{"fsdp": 8}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_sharded_step_equals_unsharded(tiny_assets, examples, shape):
    rows = _rows(examples[:8], 128)
    p1, m1 = _one_step(tiny_assets, rows, accum=2)
    mesh = make_mesh(shape)
    p8, m8 = _one_step(tiny_assets, rows, accum=2, mesh=mesh)
    assert abs(m1["loss"] - m8["loss"]) < 1e-5
    for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
        np.testing.assert_allclose(x, y, atol=1e-5)
