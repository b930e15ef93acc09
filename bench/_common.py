"""Shared setup for the benchmarks: the model shape as command-line options, the HF model, the CPU's name."""

from __future__ import annotations

import argparse
import platform
import subprocess


def add_shape_args(ap: argparse.ArgumentParser) -> None:
    """The Llama shape to benchmark; the defaults are the 56.4M-parameter model of the README's table."""
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="compute dtype (fusejax compute_dtype; torch autocast); weights stay float32")
    ap.add_argument("--iters", type=int, default=3)


def tiny_llama(args):
    """A random transformers Llama of the requested shape, in training mode, and its saved directory."""
    import tempfile

    from fusejax.tiny import tiny_hf_model

    hf = tiny_hf_model("llama", vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       num_key_value_heads=args.kv_heads, head_dim=args.hidden // args.heads,
                       max_position_embeddings=max(4096, args.seq))
    d = tempfile.mkdtemp()
    hf.save_pretrained(d)
    hf.train()
    return hf, d


def describe(args, hf) -> str:
    n = sum(p.numel() for p in hf.parameters())
    return (f"Llama {n / 1e6:.1f}M parameters ({args.layers} layers, hidden {args.hidden}, {args.heads}/"
            f"{args.kv_heads} heads, intermediate {args.intermediate}, vocab {args.vocab}), "
            f"{args.batch} x {args.seq} tokens, {args.dtype} compute")


def cpu_model() -> str:
    """The CPU's model name and core count (lscpu), for the record next to every figure."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        name = fields.get("Model name", platform.processor()).strip()
        return f"{name}, {fields.get('CPU(s)', '?').strip()} CPUs"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
