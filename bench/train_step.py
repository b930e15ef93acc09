"""SFT and DPO train steps (forward, backward, AdamW) on a Llama, CPU: fusejax vs transformers + torch doing the
same step in the same process, repetitions interleaved.

Prints the CPU model, tokens/s of both (wall clock), their ratio by wall clock and by process CPU time, and
fusejax's achieved FLOP/s against this CPU's float32 matmul peak (a jnp 2048 x 2048 matmul timed in the same
repetitions). Not a test.
Usage: python bench/train_step.py [--layers 8 --hidden 512 ... --dtype float32 --iters 3]
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np
from _common import add_shape_args, cpu_model, describe, tiny_llama
from _timing import interleaved


def matmul_probe():
    """(fn, flops): a jnp float32 2048 x 2048 matmul, timed alongside the steps to give this CPU's matmul peak."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    return (lambda: f(a).block_until_ready()), 2 * 2048**3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(ap)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    from flax import nnx

    from fusejax.models import RuntimeOptions, load_hf
    from fusejax.training.loop import flops_per_token
    from fusejax.training.step import StepOptions, make_optimizer, make_train_step

    hf, d = tiny_llama(args)
    B, T, V = args.batch, args.seq, args.vocab
    print(f"{cpu_model()}; torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}")
    print(f"{describe(args, hf)}; DPO: {B} pairs")
    print("command: python bench/train_step.py " + " ".join(sys.argv[1:]), flush=True)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bfloat16"
                else contextlib.nullcontext())
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    mask = np.zeros((B, T), np.int32)
    mask[:, T // 4:] = 1  # the last 3/4 of each row is the response
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-5)

    def torch_sft():
        opt.zero_grad(set_to_none=True)
        labels = torch.tensor(np.where(mask > 0, ids, -100)).long()
        with autocast:
            loss = hf(torch.tensor(ids).long(), labels=labels).loss
        loss.backward()
        opt.step()

    ids2 = rng.integers(0, V, (B, 2, T)).astype(np.int32)
    mask2 = np.stack([mask, mask], 1)
    ref = rng.normal(-2000, 10, (B, 2)).astype(np.float32)

    def torch_dpo():
        opt.zero_grad(set_to_none=True)
        x = torch.tensor(np.concatenate([ids2[:, 0], ids2[:, 1]])).long()
        m = torch.tensor(np.concatenate([mask2[:, 0], mask2[:, 1]]))[:, 1:].float()
        with autocast:
            logits = hf(x).logits
        logp = torch.log_softmax(logits.float()[:, :-1], -1).gather(-1, x[:, 1:, None])[..., 0]
        s = (logp * m).sum(-1)
        z = 0.1 * ((s[:B] - torch.tensor(ref[:, 0])) - (s[B:] - torch.tensor(ref[:, 1])))
        (-F.logsigmoid(z)).mean().backward()
        opt.step()

    model, cfg = load_hf(d, options=RuntimeOptions(compute_dtype=args.dtype))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tx, schedule = make_optimizer(1e-5, 100, 0.0, 0.0, 1.0)
    probe, probe_flops = matmul_probe()
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

        print(f"{stage.upper()}: compiling and warming up", flush=True)
        # Two warm-up calls: the first compiles, the second recompiles for the donated state's committed layout.
        times = interleaved({"fusejax": ours, "torch": torch_sft if stage == "sft" else torch_dpo,
                             "matmul": probe}, 2, args.iters)
        peak = probe_flops / times["matmul"][0]
        results[stage] = (tokens, times["fusejax"], times["torch"], flops_per_token(cfg, T) * tokens, peak)
    print(f"\n{cpu_model()}; {describe(args, hf)}")
    for stage, (tokens, (w_ours, c_ours), (w_torch, c_torch), flops, peak) in results.items():
        print(f"{stage.upper()} step: fusejax {tokens / w_ours:7.0f} tokens/s, transformers+torch "
              f"{tokens / w_torch:7.0f} tokens/s, ratio {w_torch / w_ours:.2f}x (by CPU time {c_torch / c_ours:.2f}x); "
              f"fusejax {flops / w_ours / 1e9:.1f} GFLOP/s = {flops / w_ours / peak:.0%} of the "
              f"{peak / 1e9:.0f} GFLOP/s float32 matmul peak")


if __name__ == "__main__":
    main()
