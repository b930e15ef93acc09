"""`fusejax` command line: convert, train, compile-check, tiny-assets, demo."""

from __future__ import annotations

import argparse
import sys


def _convert(args) -> None:
    from fusejax import checkpoint
    from fusejax.models import load_hf
    from fusejax.sharding import make_mesh

    if args.direction == "gguf-to-hf":
        from fusejax.models.gguf import gguf_to_hf

        print(f"wrote {gguf_to_hf(args.src, args.dst, dtype=args.dtype or 'float32')}")
        return
    mesh = make_mesh() if args.mesh_all_devices else None
    if args.direction == "hf-to-orbax":
        checkpoint.ensure_empty_destination(args.dst)
        model, cfg = load_hf(args.src, dtype=args.dtype, mesh=mesh)
        checkpoint.save_model(args.dst, model, step=0)
        print(f"wrote {args.dst} ({cfg.model_type}, {cfg.num_layers} layers, params {args.dtype})")
    else:
        from fusejax import hub, storage

        model = checkpoint.load_model(args.src, step=args.step, mesh=mesh)
        out = storage.save_hf_to(model, args.dst, tokenizer_dir=args.tokenizer, dtype=args.dtype)
        print(f"wrote {args.dst}")
        if args.push_to_hub:
            url = hub.publish(out, args.push_to_hub, hub.checkpoint_train_config(args.src, args.step),
                              private=args.private, eval_results=args.eval_results, base_model=args.base_model)
            print(f"pushed {out} to the hub: {url}")


def _tiny_assets(args) -> None:
    from pathlib import Path

    from fusejax.tiny import save_tiny_model, tiny_datasets, tiny_pipeline_assets

    out = Path(args.out)
    if (out / "model" / "config.json").exists():
        print(f"{out}: tiny assets already there")
        return
    save_tiny_model(out / "model", "llama")
    paths = tiny_datasets(out / "data")
    tiny_pipeline_assets(out / "pipeline")
    print(f"wrote {out}: model/ (tiny Llama + tokenizer), data/ ({paths['sft'].name}, {paths['dpo'].name}), "
          "pipeline/ (source models, reward model, prompt files)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusejax", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="HF safetensors <-> Orbax checkpoint; GGUF -> HF")
    c.add_argument("direction", choices=["hf-to-orbax", "orbax-to-hf", "gguf-to-hf"])
    c.add_argument("src", help="HF model directory (hf-to-orbax), checkpoint directory (orbax-to-hf) or .gguf "
                                 "file or a directory with one (gguf-to-hf)")
    c.add_argument("dst", help="destination directory (must not exist or be empty)")
    c.add_argument("--tokenizer", help="orbax-to-hf: HF directory whose tokenizer files and chat template to copy")
    c.add_argument("--step", type=int, default=None, help="orbax-to-hf: checkpoint step (default: latest)")
    c.add_argument("--dtype", default=None,
                   help="hf-to-orbax: parameter dtype (default float32); orbax-to-hf: tensor dtype "
                        "(default: the dtype the model was published in)")
    c.add_argument("--mesh-all-devices", action="store_true",
                   help="shard over all local devices while converting (for models larger than one device)")
    c.add_argument("--push-to-hub", metavar="ORG/NAME", default=None,
                   help="orbax-to-hf: upload the HF directory with a generated model card (token: HF_TOKEN or login)")
    c.add_argument("--private", action="store_true", help="--push-to-hub: create the repository private")
    c.add_argument("--eval-results", default=None,
                   help="--push-to-hub: `fusejax eval` results.json for the card (default: DST/eval/results.json)")
    c.add_argument("--base-model", default=None, help="--push-to-hub: hub id of the starting model, for the card")
    c.set_defaults(func=_convert)

    # Subcommands with their own parsers (see main): listed here for --help.
    sub.add_parser("train", help="SFT / DPO training from a YAML config (same as train.py)")
    sub.add_parser("compile-check", help="ahead-of-time TPU compile of the train step: memory vs HBM")
    sub.add_parser("eval", help="FuseEval's benchmarks for a model directory or hub id (vLLM, resumable)")
    sub.add_parser("eval-compare", help="several `fusejax eval` runs side by side: Markdown table and PNG")
    sub.add_parser("tpu", help="TPU slices: create, set up, launch, supervise through preemptions, delete")

    ta = sub.add_parser("tiny-assets", help="tiny random models, tokenizer, prompts and SFT/DPO JSONL (CPU runs)")
    ta.add_argument("out", nargs="?", default="runs/tiny/assets")
    ta.set_defaults(func=_tiny_assets)

    sub.add_parser("demo", help="model fusion end to end and measured, on tiny models (CPU, ~10 min)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":
        from fusejax.training.loop import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "tpu":
        from fusejax.tpu.cli import main as tpu_main

        return tpu_main(argv[1:])
    if argv and argv[0] in ("eval", "eval-compare"):
        from fusejax.eval.cli import main as eval_main

        return eval_main(argv)
    if argv and argv[0] == "compile-check":
        from fusejax.training.compile_check import main as check_main

        return check_main(argv[1:])
    if argv and argv[0] == "demo":
        from fusejax.demo import main as demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "convert" and args.dtype is None and args.direction == "hf-to-orbax":
        args.dtype = "float32"
    from fusejax.models.config import ConfigError
    from fusejax.hub import HubError
    from fusejax.models.hf_io import WeightsError

    try:
        args.func(args)
    except (ConfigError, WeightsError, FileExistsError, FileNotFoundError, HubError) as e:
        print(f"fusejax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
