"""Losses against independent references: transformers/torch for SFT, a torch DPO written here for DPO."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from fusejax.models import load_hf
from fusejax.training import losses
from fusejax.training.data import ChatTokenizer, pad_dpo_example, tokenize_dpo, tokenize_sft, DataReport, read_rows
from fusejax.training.step import StepOptions, _dpo_loss, _sft_loss
from transformers import AutoModelForCausalLM, AutoTokenizer


@pytest.fixture(scope="module")
def setup(tiny_assets):
    tok = AutoTokenizer.from_pretrained(tiny_assets["model"])
    hf = AutoModelForCausalLM.from_pretrained(tiny_assets["model"], dtype=torch.float32).eval()
    model, _ = load_hf(tiny_assets["model"])
    graphdef, state = nnx.split(model)
    return tok, hf, model, graphdef, nnx.to_pure_dict(state)


def _sft_batch(tiny_assets, tok, n=6, length=128):
    exs = tokenize_sft(read_rows([str(tiny_assets["sft"])]), ChatTokenizer(tok), length, DataReport())[:n]
    ids = np.stack([np.pad(e["input_ids"], (0, length - len(e["input_ids"])), constant_values=5) for e in exs])
    mask = np.stack([np.pad(e["loss_mask"], (0, length - len(e["loss_mask"]))) for e in exs])
    seg = np.stack([np.pad(np.ones(len(e["input_ids"]), np.int32), (0, length - len(e["input_ids"]))) for e in exs])
    pos = np.stack([np.pad(np.arange(len(e["input_ids"]), dtype=np.int32), (0, length - len(e["input_ids"])))
                    for e in exs])
    return exs, {"input_ids": ids, "loss_mask": mask, "segment_ids": seg, "positions": pos}


def test_sft_loss_matches_transformers(setup, tiny_assets):
    tok, hf, _, graphdef, params = setup
    _, batch = _sft_batch(tiny_assets, tok)
    labels = np.where(batch["loss_mask"] > 0, batch["input_ids"], -100)
    with torch.no_grad():
        ref = hf(torch.tensor(batch["input_ids"]).long(), attention_mask=torch.tensor(batch["segment_ids"]),
                 labels=torch.tensor(labels).long()).loss.item()
    jb = {k: jnp.asarray(v) for k, v in batch.items()}
    n = float((labels[:, 1:] != -100).sum())
    ours, aux = _sft_loss(params, graphdef, jb, n, StepOptions(stage="sft", chunk=100))  # chunk not dividing X
    assert aux["tokens"] == n
    assert abs(float(ours) - ref) <= 1e-5


def test_prompt_positions_get_zero_gradient(setup, tiny_assets):
    tok, _, model, _, _ = setup
    _, batch = _sft_batch(tiny_assets, tok, n=2)
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["loss_mask"])
    hidden = model(ids, return_hidden=True)
    targets, weights = losses.shifted_targets(ids, mask, jnp.asarray(batch["segment_ids"]))

    def loss(h):
        logp, _ = losses.target_logprobs(model, h, targets, chunk=64)
        return -(logp * weights).sum()

    g = np.abs(np.asarray(jax.grad(loss)(hidden))).sum(-1)
    w = np.asarray(weights)
    assert (g[w == 0] == 0).all(), "a prompt/padding position received gradient"
    assert (g[w > 0] > 0).all()


def test_chunk_recompute_does_not_change_values_or_gradients(setup, tiny_assets):
    """The accelerator default (recompute each chunk's logits in the backward pass) and the CPU default (keep them)."""
    tok, _, model, _, _ = setup
    _, batch = _sft_batch(tiny_assets, tok, n=2)
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["loss_mask"])
    hidden = model(ids, return_hidden=True)
    targets, weights = losses.shifted_targets(ids, mask, jnp.asarray(batch["segment_ids"]))

    def loss(h, remat):
        logp, correct = losses.target_logprobs(model, h, targets, chunk=64, remat=remat)
        return -(logp * weights).sum(), correct

    (a, ca), ga = jax.value_and_grad(loss, has_aux=True)(hidden, True)
    (b, cb), gb = jax.value_and_grad(loss, has_aux=True)(hidden, False)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ca), np.asarray(cb))
    logits = np.asarray(model.logits(hidden))  # accuracy: the target is the argmax (no ties in float logits here)
    np.testing.assert_array_equal(np.asarray(ca), logits.argmax(-1) == np.asarray(targets))


def _torch_dpo(policy_w, policy_l, ref_w, ref_l, len_w, len_l, beta, kind, smoothing=0.0):
    """Independent reference: FACTS.md formula (ln) and plain DPO (sigmoid), label smoothing as in TRL."""
    if kind == "ln":
        z = beta / len_w * (policy_w - ref_w) - beta / len_l * (policy_l - ref_l)
    else:
        z = beta * ((policy_w - ref_w) - (policy_l - ref_l))
    return (-(1 - smoothing) * F.logsigmoid(z) - smoothing * F.logsigmoid(-z)).mean()


def _torch_seq_logps(hf, ids, mask):
    logits = hf(ids).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    m = mask[:, 1:].float()
    return (logp * m).sum(-1), m.sum(-1)


@pytest.mark.parametrize("kind,beta,smoothing", [("sigmoid", 0.1, 0.0), ("ln", 10.0, 0.0), ("sigmoid", 0.5, 0.2)])
def test_dpo_loss_and_gradient_match_torch_reference(setup, tiny_assets, kind, beta, smoothing):
    tok, hf, _, graphdef, params = setup
    exs = tokenize_dpo(read_rows([str(tiny_assets["dpo"])]), ChatTokenizer(tok), 128, DataReport())[:4]
    rows = [pad_dpo_example(e, 128, 5) for e in exs]
    ids = np.stack([r["input_ids"] for r in rows])  # [b, 2, L]
    mask = np.stack([r["loss_mask"] for r in rows])
    ref_logps = np.random.default_rng(0).normal(-80, 5, (len(rows), 2)).astype(np.float32)

    hf.zero_grad()
    pw, lw = _torch_seq_logps(hf, torch.tensor(ids[:, 0]).long(), torch.tensor(mask[:, 0]))
    pl, ll = _torch_seq_logps(hf, torch.tensor(ids[:, 1]).long(), torch.tensor(mask[:, 1]))
    ref = _torch_dpo(pw, pl, torch.tensor(ref_logps[:, 0]), torch.tensor(ref_logps[:, 1]), lw, ll, beta, kind,
                     smoothing)
    ref.backward()

    opts = StepOptions(stage="dpo", chunk=128, beta=beta, loss_type=kind, label_smoothing=smoothing)
    batch = {"input_ids": jnp.asarray(ids), "loss_mask": jnp.asarray(mask), "ref_logps": jnp.asarray(ref_logps)}
    (ours, _), grads = jax.value_and_grad(_dpo_loss, has_aux=True)(params, graphdef, batch, float(len(rows)), opts)
    assert abs(float(ours) - ref.item()) <= 1e-5
    # gradients: HF Linear weight [out, in] vs our kernel [in, out...]
    g_ref = hf.model.layers[1].mlp.down_proj.weight.grad.numpy().T
    g_ours = np.asarray(grads["layers"]["mlp"]["down_proj"]["kernel"][1])
    np.testing.assert_allclose(g_ours, g_ref, atol=1e-5 * max(1.0, np.abs(g_ref).max()), rtol=1e-4)
    g_ref_q = hf.model.layers[0].self_attn.q_proj.weight.grad.numpy().T.reshape(g_ours.shape[1], 4, -1)
    np.testing.assert_allclose(np.asarray(grads["layers"]["self_attn"]["q_proj"]["kernel"][0]), g_ref_q,
                               atol=1e-5 * max(1.0, np.abs(g_ref_q).max()), rtol=1e-4)


def test_ln_dpo_length_normalisation_hand_computed():
    # beta 10, chosen: policy -20 ref -22 over 4 tokens; rejected: policy -30 ref -29 over 2 tokens
    # z = 10 * (2/4 - (-1)/2) = 10; loss = -log sigmoid(10) = log(1 + e^-10)
    loss, rc, rr = losses.dpo_loss(jnp.array([-20.0]), jnp.array([-30.0]), jnp.array([-22.0]), jnp.array([-29.0]),
                                   jnp.array([4.0]), jnp.array([2.0]), 10.0, "ln")
    assert float(loss[0]) == pytest.approx(np.log1p(np.exp(-10.0)), rel=1e-6)
    assert float(rc[0]) == pytest.approx(5.0) and float(rr[0]) == pytest.approx(-5.0)
    # zero-length guard: no division by zero
    loss0, _, _ = losses.dpo_loss(jnp.array([0.0]), jnp.array([0.0]), jnp.array([0.0]), jnp.array([0.0]),
                                  jnp.array([0.0]), jnp.array([0.0]), 10.0, "ln")
    assert np.isfinite(float(loss0[0]))
