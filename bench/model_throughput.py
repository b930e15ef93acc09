"""Forward + backward tokens/s: fusejax (jax.jit) vs transformers (PyTorch eager) on the same Llama, same process,
repetitions interleaved. Two rows: the whole model with its LM head and a cross-entropy loss, and the transformer body
alone (final hidden states, no LM head).

Not a test. Usage: python bench/model_throughput.py [--layers 8 --hidden 512 ... --dtype float32 --iters 3]
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np
from _common import add_shape_args, cpu_model, describe, tiny_llama
from _timing import interleaved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(ap)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import optax
    import torch
    from flax import nnx

    from fusejax.models import RuntimeOptions, load_hf

    hf, d = tiny_llama(args)
    print(f"{cpu_model()}; torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}")
    print(describe(args, hf))
    print("command: python bench/model_throughput.py " + " ".join(sys.argv[1:]), flush=True)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bfloat16"
                else contextlib.nullcontext())
    ids_np = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.seq))
    tokens = args.batch * args.seq
    ids_t = torch.tensor(ids_np)

    def torch_full():
        hf.zero_grad(set_to_none=True)
        with autocast:
            loss = hf(ids_t, labels=ids_t).loss
        loss.backward()

    def torch_body():
        hf.zero_grad(set_to_none=True)
        with autocast:
            h = hf.model(ids_t).last_hidden_state
        (h.float() ** 2).mean().backward()

    model, _ = load_hf(d, options=RuntimeOptions(compute_dtype=args.dtype))
    graphdef, params = nnx.split(model)
    ids = jnp.asarray(ids_np)

    @jax.jit
    def full_grad(params, ids):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(ids)
            return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:]).mean()

        return jax.value_and_grad(loss_fn)(params)

    @jax.jit
    def body_grad(params, ids):
        def loss_fn(p):
            h = nnx.merge(graphdef, p)(ids, return_hidden=True)
            return (h.astype(jnp.float32) ** 2).mean()

        return jax.value_and_grad(loss_fn)(params)

    rows = {}
    for name, ours, theirs in (("forward + backward, whole model", full_grad, torch_full),
                               ("forward + backward, body only (no LM head)", body_grad, torch_body)):
        print(f"{name}: compiling and warming up", flush=True)
        rows[name] = interleaved({"fusejax": lambda f=ours: jax.block_until_ready(f(params, ids)),
                                  "torch": theirs}, 2, args.iters)
    print(f"\n{cpu_model()}; {describe(args, hf)}")
    for name, t in rows.items():
        (w_ours, c_ours), (w_torch, c_torch) = t["fusejax"], t["torch"]
        print(f"{name}: fusejax {tokens / w_ours:7.0f} tokens/s, transformers+torch {tokens / w_torch:7.0f} "
              f"tokens/s, ratio {w_torch / w_ours:.2f}x (by CPU time {c_torch / c_ours:.2f}x)")


if __name__ == "__main__":
    main()
