"""Forward+backward tokens/s: fusejax (jax.jit) vs transformers (PyTorch eager) on the same small Llama, same run.

Not a test. Prints both throughputs and their ratio. Usage: python bench/model_throughput.py [--layers 4 ...]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from _timing import median_time as _time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import optax
    import torch
    from flax import nnx

    from fusejax.models import load_hf
    from fusejax.tiny import tiny_hf_model

    hf = tiny_hf_model("llama", vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                       num_hidden_layers=args.layers, num_attention_heads=args.hidden // 32,
                       num_key_value_heads=max(1, args.hidden // 64), head_dim=32, max_position_embeddings=4096)
    hf.train()
    d = tempfile.mkdtemp()
    hf.save_pretrained(d)
    ids_np = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.seq))
    tokens = args.batch * args.seq

    ids_t = torch.tensor(ids_np)

    def torch_step():
        hf.zero_grad(set_to_none=True)
        loss = hf(ids_t, labels=ids_t).loss
        loss.backward()

    model, _ = load_hf(d)
    graphdef, params = nnx.split(model)
    ids = jnp.asarray(ids_np)

    @jax.jit
    def grad_step(params, ids):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(ids)
            return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:]).mean()

        return jax.value_and_grad(loss_fn)(params)

    def jax_step():
        jax.block_until_ready(grad_step(params, ids))

    print(f"Llama {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, batch {args.batch} x {args.seq}; "
          f"torch threads {torch.get_num_threads()}, jax devices {jax.devices()[0].platform} x {len(jax.devices())}")
    t_torch = _time(torch_step, 2, args.iters)
    t_jax = _time(jax_step, 2, args.iters)
    print(f"transformers+torch : {tokens / t_torch:10.0f} tokens/s  ({t_torch * 1e3:.0f} ms/step)")
    print(f"fusejax (jax.jit)  : {tokens / t_jax:10.0f} tokens/s  ({t_jax * 1e3:.0f} ms/step)")
    print(f"ratio fusejax / transformers: {t_torch / t_jax:.2f}x")


if __name__ == "__main__":
    main()
