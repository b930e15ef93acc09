"""Losses: chunked vocabulary projection + float32 log-softmax, SFT cross-entropy, DPO (sigmoid and length-normalised).

Never materialises float32 logits for a whole batch on an accelerator: the projection and log-softmax run over chunks
of tokens under jax.checkpoint, so the backward pass recomputes one chunk's logits at a time. On CPU, where memory is
plentiful and FLOPs are not, the chunks' logits are kept for the backward pass instead (no recomputed projection).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fusejax.models.transformer import Transformer


def target_logprobs(model: Transformer, hidden: jax.Array, targets: jax.Array, chunk: int = 512,
                    remat: bool | None = None):
    """log p(targets) and whether the target holds the highest logit, for every position.

    hidden [B,T,D] final hidden states, targets [B,T] int -> (logp [B,T] float32, correct [B,T] bool).
    remat: recompute each chunk's logits in the backward pass; None = yes unless tracing for CPU (same values).
    """
    if remat is None:
        remat = not _tracing_for_cpu()
    B, T, D = hidden.shape
    X = B * T
    chunk = min(chunk, X)
    pad = (-X) % chunk
    h = jnp.pad(hidden.reshape(X, D), ((0, pad), (0, 0))).reshape(-1, chunk, D)
    t = jnp.pad(targets.reshape(X), (0, pad)).reshape(-1, chunk)

    def one(h_c, t_c):
        logits = model.logits(h_c)  # [C,V] float32
        logz = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, t_c[:, None], axis=-1)[:, 0]
        # The target holds the highest logit (a tie counts as correct). Same as argmax == target up to ties;
        # XLA:CPU's argmax (a variadic value/index reduce) cost 9x this compare against the row max.
        correct = picked >= jnp.max(logits, axis=-1)
        return picked - logz, correct

    if remat:
        one = jax.checkpoint(one)

    def body(_, xs):
        return None, one(*xs)

    _, (logp, correct) = jax.lax.scan(body, None, (h, t))
    return logp.reshape(-1)[:X].reshape(B, T), correct.reshape(-1)[:X].reshape(B, T)


def _tracing_for_cpu() -> bool:
    """The platform of the mesh in context (a TPU topology in ahead-of-time compiles), else the default backend."""
    device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
    return (getattr(device, "platform", None) or jax.default_backend()) == "cpu"


def shifted_targets(input_ids: jax.Array, loss_mask: jax.Array, segment_ids: jax.Array | None = None):
    """Position t predicts token t+1; it counts when token t+1 is a response token of the same segment.

    Returns targets [B,T] and weights [B,T] float32 (the last position never counts).
    """
    targets = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
    valid = jnp.concatenate([loss_mask[:, 1:], jnp.zeros_like(loss_mask[:, :1])], axis=1) > 0
    if segment_ids is not None:
        same = jnp.concatenate([segment_ids[:, 1:] == segment_ids[:, :-1],
                                jnp.zeros_like(segment_ids[:, :1], bool)], axis=1)
        valid = valid & same & (segment_ids > 0)
    return targets, valid.astype(jnp.float32)


def sequence_logprobs(model: Transformer, input_ids, loss_mask, chunk: int = 512):
    """Per-row sums of response-token log-probabilities and response lengths: ([B] float32, [B] float32)."""
    hidden = model(input_ids, return_hidden=True)
    targets, weights = shifted_targets(input_ids, loss_mask)
    logp, _ = target_logprobs(model, hidden, targets, chunk)
    return (logp * weights).sum(-1), weights.sum(-1)


def dpo_loss(
    policy_chosen, policy_rejected, ref_chosen, ref_rejected, len_chosen, len_rejected,
    beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
):
    """Per-pair DPO losses and implicit rewards. All inputs [P] float32 (sequence log-prob sums and lengths).

    sigmoid: -log sigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l)))
    ln:      -log sigmoid(beta * ((pi_w - ref_w) / |y_w| - (pi_l - ref_l) / |y_l|))   (length-normalised DPO)
    label_smoothing eps (conservative DPO): (1 - eps) * loss(z) + eps * loss(-z).
    Returns (losses [P], chosen_rewards [P], rejected_rewards [P]).
    """
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    if loss_type == "ln":
        chosen_ratio = chosen_ratio / jnp.maximum(len_chosen, 1.0)
        rejected_ratio = rejected_ratio / jnp.maximum(len_rejected, 1.0)
    elif loss_type != "sigmoid":
        raise ValueError(f"unknown DPO loss type {loss_type!r} (sigmoid or ln)")
    z = beta * (chosen_ratio - rejected_ratio)
    losses = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)
    return losses, beta * chosen_ratio, beta * rejected_ratio
