"""Pure, jitted train steps: step(state, batch) -> (state, metrics).

Batches arrive as [A, b, ...] (A gradient-accumulation micro-batches of b rows). Losses are (sum, count) pairs: each
micro-batch contributes sum / (count over the whole global batch), so accumulation gives the same gradient as one big
batch, token-weighted for SFT and pair-weighted for DPO.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fusejax.training import losses


@dataclasses.dataclass(frozen=True)
class StepOptions:
    stage: str  # "sft" | "dpo"
    chunk: int = 512
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    reference: str = "precomputed"  # DPO: "model" (frozen copy in the state) or "precomputed" (in the batch)
    # Micro-batch gradients of the layers' projection weights in this dtype (the compute dtype: the model casts
    # those weights to it, so their gradients already have its precision); accumulated in float32.
    micro_grad_dtype: str = "float32"

    @classmethod
    def from_config(cls, cfg) -> "StepOptions":
        """From a TrainConfig."""
        return cls(stage=cfg.stage, chunk=cfg.data.loss_chunk, beta=cfg.dpo.beta, loss_type=cfg.dpo.loss,
                   label_smoothing=cfg.dpo.label_smoothing, reference=cfg.dpo.reference,
                   micro_grad_dtype=cfg.model.compute_dtype)


def make_optimizer(learning_rate: float, total_steps: int, warmup_ratio: float, weight_decay: float,
                   max_grad_norm: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   mu_dtype: str = "float32"):
    """AdamW with linear warmup (ceil(ratio * steps), as HF) then cosine decay to 0; global-norm clipping.

    mu_dtype: dtype of AdamW's first moment (bfloat16 halves it; the second moment stays float32).

    Returns (optimizer, schedule)."""
    total_steps = max(1, total_steps)
    warmup = min(int(-(-warmup_ratio * total_steps // 1)), total_steps - 1) if warmup_ratio > 0 else 0
    schedule = optax.warmup_cosine_decay_schedule(0.0 if warmup else learning_rate, learning_rate, warmup,
                                                  total_steps, end_value=0.0)
    clip = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm and max_grad_norm > 0 else []
    mu = None if mu_dtype == "float32" else jnp.dtype(mu_dtype)
    tx = optax.chain(*clip, optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mu_dtype=mu))
    return tx, schedule


def _sft_loss(params, graphdef, batch, total_tokens, opts: StepOptions):
    model = nnx.merge(graphdef, params)
    hidden = model(batch["input_ids"], batch["positions"], batch["segment_ids"], return_hidden=True)
    targets, weights = losses.shifted_targets(batch["input_ids"], batch["loss_mask"], batch["segment_ids"])
    logp, correct = losses.target_logprobs(model, hidden, targets, opts.chunk)
    loss_sum = -(logp * weights).sum()
    aux = {"loss_sum": loss_sum, "correct_sum": (correct * weights).sum(), "tokens": weights.sum()}
    return loss_sum / total_tokens, aux


def _pair_logps(model, batch, chunk):
    """[b,2,L] chosen/rejected side by side -> one forward pass over [2b, L] -> (logps [b,2], lengths [b,2])."""
    ids, mask = batch["input_ids"], batch["loss_mask"]
    b = ids.shape[0]
    flat_ids = jnp.concatenate([ids[:, 0], ids[:, 1]], axis=0)
    flat_mask = jnp.concatenate([mask[:, 0], mask[:, 1]], axis=0)
    logps, lengths = losses.sequence_logprobs(model, flat_ids, flat_mask, chunk)
    return jnp.stack([logps[:b], logps[b:]], axis=1), jnp.stack([lengths[:b], lengths[b:]], axis=1)


def _dpo_loss(params, graphdef, batch, total_pairs, opts: StepOptions, ref_params=None):
    policy, lengths = _pair_logps(nnx.merge(graphdef, params), batch, opts.chunk)
    if opts.reference == "model":
        ref, _ = _pair_logps(nnx.merge(graphdef, ref_params), batch, opts.chunk)
        ref = jax.lax.stop_gradient(ref)
    else:
        ref = batch["ref_logps"]
    per_pair, r_chosen, r_rejected = losses.dpo_loss(
        policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], lengths[:, 0], lengths[:, 1],
        opts.beta, opts.loss_type, opts.label_smoothing,
    )
    aux = {
        "loss_sum": per_pair.sum(), "pairs": jnp.float32(per_pair.shape[0]),
        "rewards_chosen_sum": r_chosen.sum(), "rewards_rejected_sum": r_rejected.sum(),
        "accuracy_sum": (r_chosen > r_rejected).sum().astype(jnp.float32),
        "policy_chosen_sum": policy[:, 0].sum(), "policy_rejected_sum": policy[:, 1].sum(),
        "ref_chosen_sum": ref[:, 0].sum(), "ref_rejected_sum": ref[:, 1].sum(),
        "tokens": lengths.sum(),
    }
    return per_pair.sum() / total_pairs, aux


def _finish_metrics(stage: str, sums: dict) -> dict:
    if stage == "sft":
        n = jnp.maximum(sums["tokens"], 1.0)
        return {"loss": sums["loss_sum"] / n, "accuracy": sums["correct_sum"] / n, "tokens": sums["tokens"]}
    n = jnp.maximum(sums["pairs"], 1.0)
    out = {"loss": sums["loss_sum"] / n, "tokens": sums["tokens"]}
    for k in ("rewards_chosen", "rewards_rejected", "accuracy", "policy_chosen", "policy_rejected", "ref_chosen",
              "ref_rejected"):
        out[k if k != "accuracy" else "preference_accuracy"] = sums[f"{k}_sum"] / n
    out["margin"] = out["rewards_chosen"] - out["rewards_rejected"]
    return out


def _total(stage: str, batch: dict):
    if stage == "sft":
        A, b, T = batch["input_ids"].shape
        flat = {k: v.reshape(A * b, T) for k, v in batch.items() if k in ("input_ids", "loss_mask", "segment_ids")}
        _, w = losses.shifted_targets(flat["input_ids"], flat["loss_mask"], flat["segment_ids"])
        return jnp.maximum(w.sum(), 1.0)
    return jnp.float32(batch["input_ids"].shape[0] * batch["input_ids"].shape[1])


def _accumulate(fn, batch: dict, like=None):
    """Sum fn(micro_batch) over the leading micro-batch axis of `batch`, one micro-batch at a time (lax.scan).

    `like`: a tree whose leaves' dtypes the sums take (e.g. float32 sums of bfloat16 micro-batch gradients)."""
    first = jax.tree.map(lambda x: x[0], batch)
    shapes = jax.eval_shape(fn, first)
    if like is not None:
        shapes = (jax.tree.map(lambda s, p: jax.ShapeDtypeStruct(s.shape, p.dtype), shapes[0], like), *shapes[1:])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(acc, mb):
        return jax.tree.map(lambda a, x: a + x.astype(a.dtype), acc, fn(mb)), None

    return jax.lax.scan(body, zeros, batch)[0]


def _cast_layer_weights(params, dtype):
    """The decoder layers' projection weights and biases in `dtype`; norms, embeddings and lm_head unchanged.

    The model casts exactly these to the compute dtype before use, so with dtype = compute dtype the forward pass
    is unchanged. (Norm weights are used in float32; embeddings and lm_head sum gradients over several uses.)"""
    def cast(path, x):
        names = [str(getattr(k, "key", "")) for k in path]
        if "layers" in names and not any("norm" in n for n in names) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree_util.tree_map_with_path(cast, params)


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule, opts: StepOptions):
    """step(state, batch) -> (state, metrics); state = {"params", "opt_state", "step"[, "ref_params"]}."""
    loss_fn = _sft_loss if opts.stage == "sft" else _dpo_loss

    def step(state: dict[str, Any], batch: dict[str, jax.Array]):
        params = state["params"]
        total = _total(opts.stage, batch)
        extra = (state["ref_params"],) if opts.stage == "dpo" and opts.reference == "model" else ()
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        # Cast once per step, outside the micro-batch loop (XLA hoists such a cast anyway): the micro-batch
        # gradients of these weights then take half the memory of float32 ones.
        micro_params = _cast_layer_weights(params, jnp.dtype(opts.micro_grad_dtype))

        def micro(mb):
            (_, aux), g = grad_fn(micro_params, graphdef, mb, total, opts, *extra)
            return g, aux

        grads, sums = _accumulate(micro, batch, like=params)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_state = dict(state, params=optax.apply_updates(params, updates), opt_state=opt_state,
                         step=state["step"] + 1)
        metrics = _finish_metrics(opts.stage, sums)
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["learning_rate"] = schedule(state["step"])
        return new_state, metrics

    return step


def make_eval_step(graphdef, opts: StepOptions):
    """eval(params, batch[, ref_params]) -> metric sums over one [A, b, ...] batch (no update)."""
    loss_fn = _sft_loss if opts.stage == "sft" else _dpo_loss

    def evaluate(params, batch, ref_params=None):
        extra = (ref_params,) if opts.stage == "dpo" and opts.reference == "model" else ()

        return _accumulate(lambda mb: loss_fn(params, graphdef, mb, 1.0, opts, *extra)[1], batch)

    return evaluate


def make_reference_step(graphdef, chunk: int):
    """ref(params, batch [b,2,L]) -> sequence log-prob sums [b, 2] (for precomputing DPO reference log-probs)."""

    def ref(params, batch):
        logps, _ = _pair_logps(nnx.merge(graphdef, params), batch, chunk)
        return logps

    return ref


def finish_eval(stage: str, sums: dict) -> dict:
    return {k: float(v) for k, v in _finish_metrics(stage, sums).items()}


def opt_state_shardings(opt_state_shapes, param_shardings, replicated):
    """Shardings for an optax state: every params-shaped subtree (mu, nu, ...) follows the parameters' shardings,
    everything else (counts) is replicated. (Left to itself, XLA may replicate the zeros of tx.init.)"""
    by_path = {}
    for path, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]:
        by_path[tuple(getattr(k, "key", None) for k in path)] = s

    def pick(path, leaf):
        keys = tuple(getattr(k, "key", None) for k in path)
        for i in range(len(keys)):
            s = by_path.get(keys[i:])
            if s is not None and len(s.spec) <= len(leaf.shape):
                return s
        return replicated

    return jax.tree_util.tree_map_with_path(pick, opt_state_shapes)
