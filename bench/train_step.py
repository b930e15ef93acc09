"""SFT and DPO train steps on a small Llama, CPU: fusejax vs transformers + torch doing the same step, same run.

Prints tokens/s of both and their ratio, and fusejax's achieved FLOP/s against this CPU's matmul peak measured in
the same run (jnp float32 2048x2048). Not a test. Usage: python bench/train_step.py [--iters 5]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from _timing import median_time as _time


def matmul_peak() -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    t = _time(lambda: f(a).block_until_ready(), 2, 10)
    return 2 * 2048**3 / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    from flax import nnx

    from fusejax.models import load_hf
    from fusejax.training.loop import flops_per_token
    from fusejax.training.step import StepOptions, make_optimizer, make_train_step
    from fusejax.tiny import tiny_hf_model

    hf = tiny_hf_model("llama", vocab_size=4096, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=32, max_position_embeddings=4096)
    d = tempfile.mkdtemp()
    hf.save_pretrained(d)
    hf.train()
    B, T = args.batch, args.seq
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4096, (B, T)).astype(np.int32)
    mask = np.zeros((B, T), np.int32)
    mask[:, T // 4:] = 1  # the last 3/4 of each row is the response
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-5)

    def torch_sft():
        opt.zero_grad(set_to_none=True)
        labels = torch.tensor(np.where(mask > 0, ids, -100)).long()
        hf(torch.tensor(ids).long(), labels=labels).loss.backward()
        opt.step()

    ids2 = rng.integers(0, 4096, (B, 2, T)).astype(np.int32)
    mask2 = np.stack([mask, mask], 1)
    ref = rng.normal(-2000, 10, (B, 2)).astype(np.float32)

    def torch_dpo():
        opt.zero_grad(set_to_none=True)
        x = torch.tensor(np.concatenate([ids2[:, 0], ids2[:, 1]])).long()
        m = torch.tensor(np.concatenate([mask2[:, 0], mask2[:, 1]]))[:, 1:].float()
        logp = torch.log_softmax(hf(x).logits.float()[:, :-1], -1).gather(-1, x[:, 1:, None])[..., 0]
        s = (logp * m).sum(-1)
        z = 0.1 * ((s[:B] - torch.tensor(ref[:, 0])) - (s[B:] - torch.tensor(ref[:, 1])))
        (-F.logsigmoid(z)).mean().backward()
        opt.step()

    model, cfg = load_hf(d)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tx, schedule = make_optimizer(1e-5, 100, 0.0, 0.0, 1.0)
    results = {}
    for stage in ("sft", "dpo"):
        step = jax.jit(make_train_step(graphdef, tx, schedule, StepOptions(stage=stage, chunk=512)),
                       donate_argnums=0)
        st = {"params": jax.tree.map(jnp.copy, params), "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
        if stage == "sft":
            batch = {"input_ids": ids[None], "loss_mask": mask[None], "segment_ids": np.ones_like(ids)[None],
                     "positions": np.broadcast_to(np.arange(T, dtype=np.int32), (B, T))[None]}
            tokens = B * T
        else:
            batch = {"input_ids": ids2[None], "loss_mask": mask2[None], "ref_logps": ref[None]}
            tokens = 2 * B * T
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        holder = {"st": st}

        def ours():
            holder["st"], m = step(holder["st"], batch)
            jax.block_until_ready(m)

        t_ours = _time(ours, 2, args.iters)
        t_torch = _time(torch_sft if stage == "sft" else torch_dpo, 2, args.iters)
        results[stage] = (tokens / t_ours, tokens / t_torch, flops_per_token(cfg, T) * tokens / t_ours)
    peak = matmul_peak()
    print(f"Llama 4 layers, hidden 256, vocab 4096, {B} x {T} tokens (DPO: {B} pairs); "
          f"torch threads {torch.get_num_threads()}")
    for stage, (ours, theirs, flops) in results.items():
        print(f"{stage.upper()} step: fusejax {ours:8.0f} tokens/s, transformers+torch {theirs:8.0f} tokens/s, "
              f"ratio {ours / theirs:.2f}x; fusejax {flops / 1e9:.1f} GFLOP/s = {flops / peak:.0%} of the "
              f"{peak / 1e9:.0f} GFLOP/s float32 matmul peak")


if __name__ == "__main__":
    main()
