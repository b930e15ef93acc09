"""Ahead-of-time compile of the real train step for a TPU slice, on a machine without TPUs (needs libtpu:
`pip install 'fusejax[tpu]'`), reporting per-device memory against the chip's HBM.

    fusejax compile-check --config configs/train/llama3.1-8b-dpo.yaml --topology v5p-8

Exit status 0 when the step fits, 1 when it does not, 2 on bad input.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

# GCP accelerator type -> (topology name for libtpu, chip config, HBM bytes per chip).
# v4 and v5p names count TensorCores (2 per chip, run as one "megacore" device); v5e and v6e names count chips.
GIB = 1024**3
TOPOLOGIES = {
    "v4-8": ("v4:2x2x1", "megacore", 32 * GIB), "v4-16": ("v4:2x2x2", "megacore", 32 * GIB),
    "v4-32": ("v4:2x2x4", "megacore", 32 * GIB),
    "v5p-8": ("v5p:2x2x1", "megacore", 95 * GIB), "v5p-16": ("v5p:2x2x2", "megacore", 95 * GIB),
    "v5p-32": ("v5p:2x2x4", "megacore", 95 * GIB),
    "v5e-4": ("v5e:2x2", None, 16 * GIB), "v5e-8": ("v5e:2x4", None, 16 * GIB), "v5e-16": ("v5e:4x4", None, 16 * GIB),
    "v5e-32": ("v5e:4x8", None, 16 * GIB),
    "v6e-4": ("v6e:2x2", None, 32 * GIB), "v6e-8": ("v6e:2x4", None, 32 * GIB), "v6e-16": ("v6e:4x4", None, 32 * GIB),
}
# Hub ids of the recipe's targets -> presets, so the check needs no download.
HUB_PRESETS = {
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1-8b", "meta-llama/Llama-3.2-3B-Instruct": "llama3.2-3b",
    "meta-llama/Llama-3.2-1B-Instruct": "llama3.2-1b", "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b",
    "google/gemma-2-9b-it": "gemma2-9b",
}


class DoesNotFit(RuntimeError):
    """The TPU compiler ran out of HBM while compiling: the step cannot fit this slice."""


@dataclasses.dataclass
class CompileReport:
    topology: str
    devices: int
    stage: str
    model: str
    global_batch: int
    grad_accum: int
    max_length: int
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int
    peak_bytes: int
    hbm_bytes: int
    compile_s: float
    attention: str = "xla"
    splash_block: int | None = None  # the splash kernels' block size, when attention is splash
    vmem_limit_kib: int | None = None  # xla_tpu_scoped_vmem_limit_kib from LIBTPU_INIT_ARGS; None: libtpu default

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.hbm_bytes

    def line(self) -> str:
        g = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
        return (f"{self.model} {self.stage} on {self.topology} ({self.devices} devices), global batch "
                f"{self.global_batch} (accum {self.grad_accum}) x {self.max_length}: per device arguments "
                f"{g(self.argument_bytes)}, temporaries {g(self.temp_bytes)}, peak {g(self.peak_bytes)} of "
                f"{g(self.hbm_bytes)} HBM -> {'fits' if self.fits else 'DOES NOT FIT'} "
                f"(attention {self.attention}{self._kernel()}; compiled in {self.compile_s:.0f}s)")

    def _kernel(self) -> str:
        if self.attention != "splash":
            return ""
        vmem = f"{self.vmem_limit_kib} KiB" if self.vmem_limit_kib else "libtpu default"
        return f", blocks {self.splash_block}, scoped VMEM limit {vmem}"


def vmem_limit_kib() -> int | None:
    """The scoped VMEM limit passed to libtpu (LIBTPU_INIT_ARGS=--xla_tpu_scoped_vmem_limit_kib=N), if any."""
    for arg in os.environ.get("LIBTPU_INIT_ARGS", "").split():
        if arg.startswith("--xla_tpu_scoped_vmem_limit_kib="):
            return int(arg.split("=", 1)[1])
    return None


def largest_buffers(dump_dir: str | Path, n: int) -> list[str]:
    """The n largest allocations of the compiled train step, from XLA's memory-usage report in `dump_dir`
    (written with XLA_FLAGS=--xla_dump_to=DIR): size, then the shapes of the values that share the slot."""
    reports = sorted(Path(dump_dir).glob("*jit_step*memory-usage-report.txt"))
    if not reports:
        return []
    rows = []
    for line in reports[-1].read_text().splitlines()[4:]:  # the default (HBM) memory space comes first
        parts = [p.strip() for p in line.split(";")]
        if len(parts) < 5:
            break
        rows.append(f"{parts[1]:>10}  {parts[4]}")
    return rows[:n]


def _quiet_libtpu() -> None:
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # several compile-checks may run at once
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def model_config_for(cfg, preset: str | None):
    from fusejax.models import preset as get_preset, read_hf_config
    from fusejax.models.config import ConfigError

    if preset:
        return get_preset(preset), preset
    path = cfg.model.path
    if (Path(path) / "config.json").is_file():
        return read_hf_config(path)[0], Path(path).name
    if path in HUB_PRESETS:
        return get_preset(HUB_PRESETS[path]), HUB_PRESETS[path]
    raise ConfigError(f"compile-check: cannot tell the architecture of model.path '{path}' without downloading; "
                      "pass --preset (one of fusejax.models.PRESETS)")


def compile_step(cfg, model_cfg, devices, hbm_bytes: int, topology: str, model_name: str,
                 dump_dir: str | None = None) -> CompileReport:
    """Lower and compile the train step of `cfg` for `devices` (TPU topology devices or real ones).

    dump_dir: XLA writes the compiled step's buffer report there (see `largest_buffers`)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from fusejax.checkpoint import params_target
    from fusejax.sharding import make_mesh
    from fusejax.training.loop import batch_sharding
    from fusejax.training.step import StepOptions, make_optimizer, make_train_step, opt_state_shardings

    mesh = make_mesh(cfg.mesh, devices=devices)
    options = cfg.model.runtime_options()
    graphdef, _, params = params_target(model_cfg, options, mesh)  # ShapeDtypeStructs in their shardings
    o = cfg.optim
    tx, schedule = make_optimizer(o.learning_rate, 1000, o.warmup_ratio, o.weight_decay, o.max_grad_norm, o.b1, o.b2,
                                  o.eps, o.mu_dtype)
    opts = StepOptions.from_config(cfg)
    replicated = NamedSharding(mesh, P())
    opt_shapes = jax.eval_shape(tx.init, params)
    opt_shardings = opt_state_shardings(opt_shapes, jax.tree.map(lambda p: p.sharding, params), replicated)
    opt_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), opt_shapes,
                             opt_shardings)
    state = {"params": params, "opt_state": opt_state, "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)}
    if cfg.stage == "dpo" and cfg.dpo.reference == "model":
        state["ref_params"] = params

    A, L = cfg.train.grad_accum_steps, cfg.data.max_length
    b = cfg.train.global_batch_size // A
    row = (A, b, 2, L) if cfg.stage == "dpo" else (A, b, L)
    fields = ["input_ids", "loss_mask"] + (["segment_ids", "positions"] if cfg.stage == "sft" else [])
    batch = {k: jax.ShapeDtypeStruct(row, jnp.int32, sharding=batch_sharding(mesh, row)) for k in fields}
    if cfg.stage == "dpo" and cfg.dpo.reference == "precomputed":
        batch["ref_logps"] = jax.ShapeDtypeStruct((A, b, 2), jnp.float32, sharding=batch_sharding(mesh, (A, b, 2)))

    step = make_train_step(graphdef, tx, schedule, opts)
    t0 = time.time()
    try:
        with jax.set_mesh(mesh):
            options = {"xla_dump_to": dump_dir, "xla_dump_hlo_module_re": "jit_step"} if dump_dir else None
            compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as e:
        # The TPU compiler itself refuses programs that cannot fit in HBM.
        if "RESOURCE_EXHAUSTED" in str(e):
            raise DoesNotFit(str(e).strip().splitlines()[0]) from None
        raise
    mem = compiled.memory_analysis()
    args = int(mem.argument_size_in_bytes)
    out = int(mem.output_size_in_bytes)
    temp = int(mem.temp_size_in_bytes)
    alias = int(mem.alias_size_in_bytes)
    peak = int(getattr(mem, "peak_memory_in_bytes", 0) or (args + out + temp - alias))
    splash = cfg.model.attention == "splash"
    if splash:
        from fusejax.models.splash import block_size

        block = block_size(L, cfg.model.splash_block)  # the block the kernels really use for this length
    return CompileReport(topology, len(devices), cfg.stage, model_name, cfg.train.global_batch_size, A, L, args, out,
                         temp, alias, peak, hbm_bytes, time.time() - t0, cfg.model.attention,
                         block if splash else None, vmem_limit_kib() if splash else None)


def tpu_devices(topology: str):
    from jax.experimental import topologies

    from fusejax.models.config import ConfigError

    if topology not in TOPOLOGIES:
        raise ConfigError(f"--topology: unknown '{topology}' (known: {', '.join(TOPOLOGIES)})")
    name, chip_config, hbm = TOPOLOGIES[topology]
    kwargs = {"chip_config_name": chip_config} if chip_config else {}
    try:
        topo = topologies.get_topology_desc(topology_name=name, platform="tpu", **kwargs)
    except Exception as e:  # libtpu missing or too old: say how to get it
        raise ConfigError(f"compile-check needs libtpu (pip install 'fusejax[tpu]'): {type(e).__name__}: {e}") from None
    return list(topo.devices), hbm


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="fusejax compile-check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--topology", required=True, help=f"one of {', '.join(TOPOLOGIES)}")
    ap.add_argument("--preset", default=None, help="architecture preset (default: from model.path)")
    ap.add_argument("--json", default=None, help="also write the report as JSON to this file")
    ap.add_argument("--buffers", type=int, default=0, metavar="N",
                    help="also list the N largest allocations of the compiled step (where the memory goes)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.grad_accum_steps=16")
    args = ap.parse_args(argv)
    _quiet_libtpu()
    dump_dir = None
    if args.buffers:  # XLA writes its buffer report when it dumps the compiled module
        import tempfile

        dump_dir = tempfile.mkdtemp(prefix="fusejax-xla-dump-")

    from fusejax.models.config import ConfigError
    from fusejax.training.config import load_config

    try:
        cfg = load_config(args.config, args.overrides, check_paths=False)
        model_cfg, name = model_config_for(cfg, args.preset)
        devices, hbm = tpu_devices(args.topology)
        report = compile_step(cfg, model_cfg, devices, hbm, args.topology, name, dump_dir)
    except ConfigError as e:
        print(f"fusejax: error: {e}", file=sys.stderr)
        return 2
    except DoesNotFit as e:
        print(f"{name} {cfg.stage} on {args.topology}: DOES NOT FIT ({e})", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"topology": args.topology, "devices": len(devices),
                                                   "stage": cfg.stage, "model": name, "fits": False,
                                                   "error": str(e), "hbm_bytes": hbm}, indent=2) + "\n")
        return 1
    print(report.line(), flush=True)
    if dump_dir:
        import shutil

        print("largest allocations per device (arguments included; a slot may hold several values in turn):")
        for row in largest_buffers(dump_dir, args.buffers):
            print("  " + row)
        shutil.rmtree(dump_dir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**dataclasses.asdict(report), "fits": report.fits}, indent=2) + "\n")
    return 0 if report.fits else 1
