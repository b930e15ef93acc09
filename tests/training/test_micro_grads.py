"""Micro-batch gradients of the layer weights in the compute dtype (half the memory of float32 ones) give the same
train step as float32 micro-batch gradients: the model casts those weights to the compute dtype, so their
gradients already have its precision; the accumulator stays float32."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fusejax.models import PRESETS, RuntimeOptions, create_model
from fusejax.training.step import StepOptions, _cast_layer_weights, make_optimizer, make_train_step


def _setup():
    cfg = PRESETS["qwen2.5-7b"].replace(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                                        num_heads=4, num_kv_heads=2, head_dim=16)
    graphdef, state = nnx.split(create_model(cfg, RuntimeOptions(compute_dtype="bfloat16"), seed=1))
    r = np.random.default_rng(0)
    A, b, L = 3, 2, 32
    batch = {"input_ids": jnp.asarray(r.integers(0, 128, (A, b, 2, L)), jnp.int32),
             "loss_mask": jnp.asarray((np.arange(L) >= 10)[None, None, None].repeat(A, 0).repeat(b, 1).repeat(2, 2),
                                      jnp.int32),
             "ref_logps": jnp.asarray(r.normal(size=(A, b, 2)) - 100.0, jnp.float32)}
    return graphdef, nnx.to_pure_dict(state), batch


def test_layer_weights_cast_norms_and_embeddings_kept():
    _, params, _ = _setup()
    cast = _cast_layer_weights(params, jnp.bfloat16)
    assert cast["layers"]["mlp"]["up_proj"]["kernel"].dtype == jnp.bfloat16
    assert cast["layers"]["self_attn"]["q_proj"]["bias"].dtype == jnp.bfloat16
    assert cast["layers"]["input_layernorm"]["weight"].dtype == jnp.float32
    assert cast["embed_tokens"].dtype == jnp.float32 and cast["lm_head"].dtype == jnp.float32


def test_bfloat16_micro_grads_give_the_float32_step():
    graphdef, params, batch = _setup()
    tx, schedule = make_optimizer(1e-3, 10, 0.0, 0.0, 1.0)
    results = {}
    for dtype in ("float32", "bfloat16"):
        opts = StepOptions(stage="dpo", chunk=32, beta=0.5, micro_grad_dtype=dtype)
        state = {"params": params, "opt_state": tx.init(params), "step": jnp.int32(0)}
        results[dtype] = jax.jit(make_train_step(graphdef, tx, schedule, opts))(state, batch)
    (s32, m32), (s16, m16) = results["float32"], results["bfloat16"]
    assert float(m32["grad_norm"]) > 0
    np.testing.assert_allclose(m16["grad_norm"], m32["grad_norm"], rtol=1e-6)  # Adam's first step hides grads
    np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(s16["params"]), jax.tree.leaves(s32["params"])):
        assert a.dtype == jnp.float32  # master weights and the accumulator stay float32
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


def test_bfloat16_first_moment():
    """optim.mu_dtype: bfloat16 stores AdamW's first moment in bfloat16 (second moment and updates float32); the
    update stays that of float32 moments to bfloat16 precision."""
    _, params, _ = _setup()
    grads = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=jnp.float32)).reshape(p.shape) * 1e-3, params)
    updates = {}
    for dtype in ("float32", "bfloat16"):
        tx, _ = make_optimizer(1e-3, 10, 0.0, 0.0, 0.0, mu_dtype=dtype)
        state = tx.init(params)
        adam = state[0][0]  # chain(adamw) without clipping (max_grad_norm 0): adamw = chain(ScaleByAdam, ...)
        assert jax.tree.leaves(adam.mu)[0].dtype == jnp.dtype(dtype)
        assert jax.tree.leaves(adam.nu)[0].dtype == jnp.float32
        for _ in range(3):
            u, state = tx.update(grads, state, params)
        updates[dtype] = u
    for a, b in zip(jax.tree.leaves(updates["bfloat16"]), jax.tree.leaves(updates["float32"])):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-6)
