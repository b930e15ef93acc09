"""The training loop: a thin driver around the pure jitted step.

    python train.py --config configs/train/llama3.1-8b-dpo.yaml [key=value ...] [--resume]

Multi-host: call on every host of a TPU pod (`--worker=all`); each host feeds only its shard of every global batch;
process 0 alone writes logs, data reports and exports. Checkpoints are Orbax (collective, every host takes part).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from fusejax import checkpoint as ckpt
from fusejax.models import ModelConfig, load_hf
from fusejax.models.config import ConfigError
from fusejax.sharding import logical_to_spec, make_mesh
from fusejax.training import data as data_lib
from fusejax.training.config import TrainConfig, to_dict
from fusejax.training.step import (StepOptions, finish_eval, make_eval_step, make_optimizer, make_reference_step,
                                   make_train_step, opt_state_shardings)

# Peak dense bf16 FLOP/s per chip, for the MFU estimate (public spec sheets).
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5": 459e12, "TPU v5p": 459e12,
              "TPU v6 lite": 918e12, "TPU v6e": 918e12, "TPU7x": 2307e12}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; no checkpoint was written for that step."""


def log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def maybe_initialize_distributed() -> None:
    """jax.distributed on TPU pods (several hosts); a no-op on one host."""
    if os.environ.get("FUSEJAX_NO_DISTRIBUTED"):
        return
    if jax.distributed.is_initialized():
        return
    if os.environ.get("TPU_WORKER_HOSTNAMES", "localhost").count(",") > 0 or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 * (non-embedding params) + attention (12 * layers * heads * head_dim * seq)."""
    D, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    attn = D * (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim + cfg.num_heads * cfg.head_dim * D
    dense = L * (attn + 3 * D * F) + D * cfg.vocab_size
    return 6.0 * dense + 12.0 * L * cfg.num_heads * cfg.head_dim * seq_len


# ---------------------------------------------------------------- model and tokenizer


def _resolve(path_or_id: str, patterns: list[str]) -> str:
    from fusejax import storage

    if storage.is_url(path_or_id):  # an HF directory on gs://: a local copy on every host
        return storage.localize_dir(path_or_id)
    if Path(path_or_id).exists():
        return path_or_id
    from huggingface_hub import snapshot_download

    return snapshot_download(path_or_id, allow_patterns=patterns)


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    src = cfg.model.tokenizer or cfg.model.path
    if Path(src).is_dir() and not any((Path(src) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ConfigError(f"model.tokenizer: no tokenizer files in {src} (an Orbax checkpoint needs model.tokenizer "
                          "set to an HF directory or hub id)")
    tok = AutoTokenizer.from_pretrained(_resolve(src, ["*.json", "*.model", "*.jinja", "*.txt"]))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: TrainConfig, mesh):
    options = cfg.model.runtime_options()
    path = cfg.model.path
    from fusejax import storage

    if storage.is_url(path) and not storage.exists(path.rstrip("/") + "/config.json"):
        return ckpt.load_model(path, mesh=mesh, options=options)  # an Orbax checkpoint on gs://
    if Path(path).is_dir() and not (Path(path) / "config.json").exists():
        return ckpt.load_model(path, mesh=mesh, options=options)  # an Orbax checkpoint (e.g. the SFT run's)
    model, _ = load_hf(_resolve(path, ["*.safetensors", "*.json"]), dtype=cfg.model.param_dtype, mesh=mesh,
                       options=options)
    return model


# ---------------------------------------------------------------- data


def build_examples(cfg: TrainConfig, tokenizer, out_dir: Path):
    chat = data_lib.ChatTokenizer(tokenizer)
    tokenize = data_lib.tokenize_sft if cfg.stage == "sft" else data_lib.tokenize_dpo
    report = data_lib.DataReport()
    train = tokenize(data_lib.read_rows(cfg.data.train, cfg.data.split, report), chat, cfg.data.max_length, report)
    log(f"data (train): {report.summary()}")
    reports = {"train": report.to_json()}
    evals = []
    if cfg.data.eval:
        eval_report = data_lib.DataReport()
        evals = tokenize(data_lib.read_rows(cfg.data.eval, cfg.data.split, eval_report), chat, cfg.data.max_length,
                         eval_report)
        log(f"data (eval): {eval_report.summary()}")
        reports["eval"] = eval_report.to_json()
    elif cfg.data.eval_fraction > 0:
        train, evals = data_lib.split_eval(train, cfg.data.eval_fraction, cfg.data.seed)
    if jax.process_index() == 0:
        _write_json(out_dir / "data_report.json", reports)
    if not train:
        raise ConfigError(f"data.train: no usable rows ({report.summary()})")
    return train, evals


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def batch_sharding(mesh, shape: tuple[int, ...]) -> NamedSharding:
    """[A, b, ...] batches: b over (data, fsdp); replicated where the micro-batch does not divide (warned at start)."""
    return NamedSharding(mesh, logical_to_spec((None, "batch") + (None,) * (len(shape) - 2), shape, mesh))


def to_global(host_batch: dict, accum: int, mesh) -> dict:
    """Host rows [b_host, ...] -> global arrays [A, b, ...] sharded over (data, fsdp) on the b axis."""
    out = {}
    for k, v in host_batch.items():
        v = np.asarray(v)
        local = v.reshape(accum, v.shape[0] // accum, *v.shape[1:])
        global_shape = (accum, local.shape[1] * jax.process_count(), *local.shape[2:])
        out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, global_shape), local, global_shape)
    return out


def replicate(x: np.ndarray, mesh) -> jax.Array:
    """The same host array on every process -> one global array replicated over the mesh (multi-host safe)."""
    return jax.make_array_from_process_local_data(NamedSharding(mesh, P()), x, x.shape)


def replicated_batches(examples: list[dict], b: int, to_row, mesh, fill_last: bool = False, micro_axis: bool = False):
    """(rows in batch, batch) over `examples` in order, b rows at a time, replicated over the mesh.

    fill_last repeats the last row so every batch has the same shape (callers drop the extra outputs);
    micro_axis adds the leading accumulation axis the train/eval steps expect."""
    for start in range(0, len(examples), b):
        rows = [to_row(ex) for ex in examples[start:start + b]]
        n = len(rows)
        if fill_last:
            rows += [rows[-1]] * (b - n)
        stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != "index"}
        yield n, {k: replicate(v[None] if micro_axis else v, mesh) for k, v in stacked.items()}


def _stop_requested(flag: bool) -> bool:
    """Every host must agree to stop (the checkpoint save is collective): any host's signal stops all."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.array([flag]))).any())


def precompute_reference(examples: list[dict], params, graphdef, cfg: TrainConfig, pad_id: int, mesh,
                         cache: Path) -> None:
    """Attach reference log-probs [2] (chosen, rejected) to each DPO example; cached beside the run's outputs and
    reused only when the reference model and the tokenised pairs are the same (fingerprint)."""
    import hashlib

    h = hashlib.sha256(f"{cfg.model.path}|{cfg.model.compute_dtype}|{cfg.data.max_length}".encode())
    for ex in examples:
        h.update(ex["chosen_ids"].tobytes() + b"|" + ex["rejected_ids"].tobytes() + b"|")
    fingerprint = h.hexdigest()
    stamp = cache.with_name(cache.name + ".fingerprint")
    if cache.exists() and stamp.exists() and stamp.read_text().strip() == fingerprint:
        cached = np.load(cache)
        for ex, r in zip(examples, cached):
            ex["ref_logps"] = r
        log(f"reference log-probs: loaded {len(cached)} from {cache}")
        return
    ref_step = jax.jit(make_reference_step(graphdef, cfg.data.loss_chunk))
    b = max(1, cfg.train.global_batch_size // cfg.train.grad_accum_steps)
    out = np.zeros((len(examples), 2), np.float32)
    t0 = time.time()
    start = 0
    to_row = lambda ex: data_lib.pad_dpo_example(ex, cfg.data.max_length, pad_id)  # noqa: E731
    for n, batch in replicated_batches(examples, b, to_row, mesh, fill_last=True):
        with jax.set_mesh(mesh):
            logps = np.asarray(ref_step(params, batch))
        out[start:start + n] = logps[:n]
        start += n
    for ex, r in zip(examples, out):
        ex["ref_logps"] = r
    if jax.process_index() == 0:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, cache)
        stamp.write_text(fingerprint + "\n")
    log(f"reference log-probs: computed {len(examples)} pairs in {time.time() - t0:.1f}s -> {cache}")


# ---------------------------------------------------------------- logging


class MetricsLog:
    """stdout progress lines, OUTPUT_DIR/metrics.jsonl and TensorBoard events (process 0 only)."""

    def __init__(self, out_dir: Path, resume_step: int):
        self.enabled = jax.process_index() == 0
        self.path = out_dir / "metrics.jsonl"
        self.tb = None
        if not self.enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # drop lines past the step we resume from (they will be recomputed)
            keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            os.replace(tmp, self.path)
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, record: dict, total_steps: int) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])
        shown = " ".join(f"{k} {v:.4g}" for k, v in record.items()
                         if k in ("loss", "accuracy", "preference_accuracy", "margin", "grad_norm", "learning_rate",
                                  "tokens_per_s", "mfu"))
        print(f"[step {record['step']}/{total_steps}] {shown}", flush=True)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------- the run


@dataclasses.dataclass
class RunResult:
    status: str  # "finished" | "preempted" (SIGTERM) | "stopped" (stop_after)
    step: int
    losses: list[float]
    best_step: int | None = None


def run(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None) -> RunResult:
    """Train per `cfg`. stop_after: stop (with a checkpoint) after this many steps of this invocation — for tests
    and for time-boxed jobs; the run resumes from there with --resume."""
    maybe_initialize_distributed()
    out_dir = Path(cfg.output_dir)
    mgr = ckpt.manager(cfg.checkpoint_dir, max_to_keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    existing = mgr.latest_step()
    if existing is not None and not resume:
        raise ConfigError(f"{cfg.checkpoint_dir}: holds checkpoints (latest step {existing}); pass --resume to "
                          "continue, or choose another output_dir")
    mesh = make_mesh(cfg.mesh)
    log(f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].device_kind} devices, "
        f"{jax.process_count()} host(s)")

    tokenizer = load_tokenizer(cfg)
    train_examples, eval_examples = build_examples(cfg, tokenizer, out_dir)
    model = load_model(cfg, mesh)
    if len(tokenizer) > model.config.vocab_size:
        raise ConfigError(f"model.tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
                          f"{model.config.vocab_size}: tokenizer and model do not belong together")
    graphdef, state_obj = nnx.split(model)
    params = nnx.to_pure_dict(state_obj)
    model_cfg: ModelConfig = model.config
    del model

    opts = StepOptions.from_config(cfg)
    pad_id = tokenizer.pad_token_id
    if cfg.stage == "dpo" and cfg.dpo.reference == "precomputed":
        for name, exs in (("train", train_examples), ("eval", eval_examples)):
            if exs:
                precompute_reference(exs, params, graphdef, cfg, pad_id, mesh, out_dir / f"reference_logps_{name}.npy")

    feed_args = dict(max_length=cfg.data.max_length, global_batch=cfg.train.global_batch_size,
                     epochs=cfg.train.epochs, seed=cfg.data.seed, pad_id=pad_id,
                     process_index=jax.process_index(), process_count=jax.process_count())
    if cfg.stage == "sft":
        feed = data_lib.sft_feed(train_examples, packing=cfg.data.packing, **feed_args)
    else:
        feed = data_lib.dpo_feed(train_examples, **feed_args)
    total_steps = feed.steps if cfg.train.max_steps is None else min(feed.steps, cfg.train.max_steps)
    if total_steps <= 0:
        raise ConfigError(f"data: {len(train_examples)} usable examples make no full global batch of "
                          f"{cfg.train.global_batch_size}")
    micro = cfg.train.global_batch_size // cfg.train.grad_accum_steps
    data_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if micro % data_ways:
        log(f"warning: micro-batch {micro} (global batch / accumulation) is not divisible by data x fsdp = "
            f"{data_ways}: batches are replicated, not split, over those axes (slow)")
    tx, schedule = make_optimizer(cfg.optim.learning_rate, total_steps, cfg.optim.warmup_ratio,
                                  cfg.optim.weight_decay, cfg.optim.max_grad_norm, cfg.optim.b1, cfg.optim.b2,
                                  cfg.optim.eps, cfg.optim.mu_dtype)

    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    opt_shardings = opt_state_shardings(jax.eval_shape(tx.init, params), param_shardings, NamedSharding(mesh, P()))
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    state = {"params": params, "opt_state": opt_state, "step": jnp.zeros((), jnp.int32)}
    if cfg.stage == "dpo" and cfg.dpo.reference == "model":
        state["ref_params"] = jax.tree.map(jnp.copy, params)

    replicated = NamedSharding(mesh, P())
    state = jax.tree.map(
        lambda x: x if isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh
        else jax.device_put(x, replicated), state)
    start = 0
    if existing is not None:
        state, start, data_state = _restore(mgr, existing, state)
        feed.iterator.set_state(data_state)
        log(f"resumed from step {start} ({cfg.checkpoint_dir})")
    state_shardings_tree = jax.tree.map(lambda x: x.sharding, state)

    step_fn = jax.jit(make_train_step(graphdef, tx, schedule, opts), donate_argnums=0,
                      out_shardings=(state_shardings_tree, None))
    metrics_log = MetricsLog(out_dir, start)
    if jax.process_index() == 0:
        _write_json(out_dir / "train_config.json", to_dict(cfg))

    stop = {"signal": None}

    def on_sigterm(signum, frame):
        stop["signal"] = signum
        log("SIGTERM received: saving a checkpoint at the end of this step, then exiting")

    previous_handler = signal.signal(signal.SIGTERM, on_sigterm) if _main_thread() else None
    peak = cfg.peak_flops_per_device or PEAK_FLOPS.get(jax.devices()[0].device_kind)
    seq = cfg.data.max_length
    losses: list[float] = []
    status = "finished"
    step = start
    log(f"training {cfg.stage}: steps {start}..{total_steps}, global batch {cfg.train.global_batch_size} "
        f"(accumulation {cfg.train.grad_accum_steps}), max length {seq}")
    try:
        while step < total_steps:
            t0 = time.perf_counter()
            host_batch = next(feed.iterator)
            batch = to_global(host_batch, cfg.train.grad_accum_steps, mesh)
            with jax.set_mesh(mesh):
                state, metrics = step_fn(state, batch)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            step += 1
            if not math.isfinite(metrics["loss"]):
                last = mgr.latest_step()
                raise TrainingDiverged(
                    f"step {step}: loss is {metrics['loss']} (grad norm {metrics['grad_norm']}); stopped without "
                    f"saving. Last good checkpoint: {last if last is not None else 'none'} in {cfg.checkpoint_dir}")
            losses.append(metrics["loss"])
            dt = time.perf_counter() - t0
            record = {"step": step, **metrics, "step_time_s": dt}
            record["tokens_per_s"] = metrics["tokens"] / dt
            if peak:
                processed = cfg.train.global_batch_size * seq * (2 if cfg.stage == "dpo" else 1)
                record["mfu"] = flops_per_token(model_cfg, seq) * processed / dt / (peak * jax.device_count())
            if step % cfg.train.log_every == 0 or step == total_steps:
                metrics_log.write(record, total_steps)
            preempted = _stop_requested(stop["signal"] is not None)
            stopping = preempted or (stop_after is not None and step - start >= stop_after)
            if step % cfg.checkpoint.save_every == 0 or step == total_steps or stopping:
                _save(mgr, step, state, feed.iterator.get_state(), model_cfg, cfg)
            if stopping:
                status = "preempted" if preempted else "stopped"
                break
        mgr.wait_until_finished()
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        metrics_log.close()

    result = RunResult(status=status, step=step, losses=losses)
    if status == "finished":
        result.best_step = _finish(cfg, mgr, graphdef, state, eval_examples, opts, pad_id, mesh, model_cfg,
                                   tokenizer, out_dir, total_steps)
    mgr.close()
    return result


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _save(mgr, step: int, state: dict, data_state: dict, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    items = dict(
        params=ocp.args.StandardSave(state["params"]),
        opt_state=ocp.args.StandardSave(state["opt_state"]),
        train_state=ocp.args.JsonSave({"step": step, "data_iterator": data_state}),
        model_config=ocp.args.JsonSave(ckpt.config_to_json(model_cfg)),
        train_config=ocp.args.JsonSave(to_dict(cfg)),
    )
    mgr.save(step, args=ocp.args.Composite(**items), force=True)


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _restore(mgr, step: int, state: dict):
    restored = mgr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(state["params"])),
        opt_state=ocp.args.StandardRestore(_abstract(state["opt_state"])),
        train_state=ocp.args.JsonRestore(),
    ))
    new_state = dict(state, params=restored["params"], opt_state=restored["opt_state"],
                     step=jax.device_put(jnp.asarray(restored["train_state"]["step"], jnp.int32),
                                         state["step"].sharding))
    return new_state, int(restored["train_state"]["step"]), restored["train_state"]["data_iterator"]


def _evaluate(params, graphdef, examples, opts: StepOptions, cfg: TrainConfig, pad_id: int, mesh, ref_params=None):
    """Metrics of `params` on held-out examples (DPO pairs or SFT rows), micro-batch by micro-batch."""
    evaluate = jax.jit(make_eval_step(graphdef, opts))
    b = max(1, cfg.train.global_batch_size // cfg.train.grad_accum_steps)
    pad = data_lib.pad_dpo_example if opts.stage == "dpo" else data_lib.pad_sft_example
    sums = None
    for _, batch in replicated_batches(examples, b, lambda ex: pad(ex, cfg.data.max_length, pad_id), mesh,
                                       micro_axis=True):
        with jax.set_mesh(mesh):
            s = evaluate(params, batch, ref_params)
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    return finish_eval(opts.stage, sums)


def _finish(cfg, mgr, graphdef, state, eval_examples, opts, pad_id, mesh, model_cfg, tokenizer, out_dir,
            total_steps) -> int:
    """DPO: score the last two checkpoints on the held-out pairs and keep the better (FuseChat-3.0); export."""
    best_step, params = total_steps, state["params"]
    if cfg.stage == "dpo" and eval_examples:
        steps = sorted(mgr.all_steps())[-2:]
        candidates, scores = {}, {}
        for s in steps:
            candidates[s] = state["params"] if s == total_steps else mgr.restore(s, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract(state["params"]))))["params"]
            scores[s] = _evaluate(candidates[s], graphdef, eval_examples, opts, cfg, pad_id, mesh,
                                  state.get("ref_params"))
            log(f"held-out preference eval, step {s}: " + " ".join(f"{k} {v:.4g}" for k, v in scores[s].items()))
        # Better = lower held-out DPO loss (ties: the later step).
        best_step = min(steps, key=lambda s: (scores[s]["loss"], -s))
        params = candidates[best_step]
        if jax.process_index() == 0:
            _write_json(out_dir / "best_checkpoint.json",
                        {"step": best_step, "criterion": "held-out DPO loss", "scores": scores})
        log(f"best checkpoint: step {best_step}")
    if cfg.export_hf:
        from fusejax import hub, storage

        model = nnx.merge(graphdef, params)
        local = storage.save_hf_to(model, cfg.export_hf, tokenizer_dir=_tokenizer_dir(cfg, tokenizer, out_dir),
                                   staging=out_dir / "export_staging")  # used when export_hf is gs://...
        log(f"exported step {best_step} to {cfg.export_hf}")
        if cfg.push_to_hub and jax.process_index() == 0:
            try:
                url = hub.publish(local, cfg.push_to_hub, to_dict(cfg), private=cfg.push_to_hub_private)
            except hub.HubError as e:
                raise hub.HubError(f"{e} (the export is complete in {local}; nothing else is lost)") from None
            log(f"pushed {cfg.export_hf} to the hub: {url}")
    return best_step


def _tokenizer_dir(cfg: TrainConfig, tokenizer, out_dir: Path) -> str:
    d = out_dir / "tokenizer"
    if jax.process_index() == 0:
        tokenizer.save_pretrained(d)
    return str(d)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from fusejax.hub import HubError
    from fusejax.training.config import load_config

    ap = argparse.ArgumentParser(prog="train.py", description="SFT / DPO training (FuseChat-3.0 recipe)")
    ap.add_argument("--config", required=True, help="YAML config (see configs/train/)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output dir")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.learning_rate=1e-6")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        result = run(cfg, resume=args.resume)
    except (ConfigError, FileExistsError, FileNotFoundError, HubError) as e:
        print(f"fusejax: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"fusejax: training diverged: {e}", file=sys.stderr)
        return 3
    log(f"{result.status} at step {result.step}")
    return 0
