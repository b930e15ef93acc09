"""Sample and score on a Ray cluster (`--ray [ADDRESS]`): engine actors fed units of work by one driver.

The driver plans exactly the units a single-process run would (per source model, `vllm.batch_prompts` prompts; for
scoring, the same response batches), hands them to a pool of replicas (Ray actors, one engine each, tensor parallel
inside it) and stays the only writer of the part-file store (`data_pipeline/store.py`): rows come back through Ray's
object store and each unit is written aside and renamed into place under the name a single-process run gives it.
Exactly-once and resume are therefore the store's: `kill -9` of the driver loses only the units in flight, a rerun
skips finished ones, and per-prompt seeds make rows independent of the replica, the batching and the retries. No
shared filesystem is needed: only the driver reads and writes OUT.

Faults: a replica that dies (process killed, node gone) or raises fails its unit; the replica is replaced and the
unit goes back in the queue for another replica, up to `max_attempts` attempts. Units that keep failing are reported
with their prompt ids and errors (OUT/ray/<stage>-failed.json) once the rest has finished, and the stage raises
UnitsFailed. Replicas are killed when the stage ends, and Ray kills a job's actors when its driver dies.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import os
import sys
import time
from pathlib import Path

from data_pipeline.config import ModelSpec, PipelineConfig
from data_pipeline.store import write_json_atomic, write_jsonl_atomic
from fusejax.models.config import ConfigError

_FORWARDED_ENV = ("VLLM_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_")


@dataclasses.dataclass(frozen=True)
class FaultInjection:
    """For tests only: make replicas fail on units that hold a given prompt id."""

    exit_on_prompt: str | None = None  # the replica process exits (os._exit) mid-unit, on the unit's first attempt
    raise_on_prompt: str | None = None  # the unit raises on every attempt


@dataclasses.dataclass
class RayOptions:
    address: str | None = None  # None: join the running local cluster or start one; "host:port" joins that one
    replicas: int | None = None  # engines per model; default: per node, its GPUs // tensor-parallel size (one per
    #                              node on CPU-only clusters)
    max_attempts: int = 3  # per unit, counting the first
    num_cpus: int | None = None  # only when starting a local cluster
    fault: FaultInjection | None = None


@dataclasses.dataclass
class Unit:
    part: Path  # the part file this unit's rows go to (the single-process run's name)
    items: list  # prompts (sample) or responses (score)
    prompt_ids: list[str]
    attempts: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


class UnitsFailed(RuntimeError):
    """Some units failed `max_attempts` times; everything else finished."""


# ---------------------------------------------------------------------------------------------------------------
# Unit planning (what a single-process run with --shard 0/1 would do, in the same batches)

def sample_units(cfg: PipelineConfig, out_dir: Path, spec: ModelSpec, prompts: list[dict]) -> tuple[int, list[Unit]]:
    """(prompts this model samples, units still to do) for one source model."""
    from data_pipeline.sample import model_prompts
    from data_pipeline.store import done_keys, part_name

    wanted = model_prompts(cfg, spec, prompts, (0, 1))
    done = done_keys(out_dir / "sample" / spec.name, lambda r: r["prompt_id"])
    todo = [p for p in wanted if p["id"] not in done]
    step = cfg.vllm.batch_prompts
    units = []
    for start in range(0, len(todo), step):
        batch = todo[start:start + step]
        ids = [p["id"] for p in batch]
        units.append(Unit(out_dir / "sample" / spec.name / part_name(ids, "0of1-"), batch, ids))
    return len(wanted), units


def score_units(cfg: PipelineConfig, out_dir: Path) -> tuple[dict, int, list[Unit]]:
    """(prompts by id, responses in total, units still to do) for the reward model."""
    from data_pipeline.sample import pending_responses, response_key
    from data_pipeline.store import part_name

    prompts, todo, total = pending_responses(out_dir, "score", (0, 1))
    step = max(1, cfg.reward.batch_size) * 16  # as score()
    units = []
    for start in range(0, len(todo), step):
        batch = todo[start:start + step]
        names = ["|".join(map(str, response_key(r))) for r in batch]
        units.append(Unit(out_dir / "score" / part_name(names, "0of1-"), batch,
                          sorted({r["prompt_id"] for r in batch})))
    return prompts, total, units


# ---------------------------------------------------------------------------------------------------------------
# The actor

class Replica:
    """One engine in one Ray actor process: a source model (task "sample") or the reward model ("score").
    One model at a time: `load` releases the previous engine first."""

    def __init__(self, fault: FaultInjection | None = None):
        self.fault = fault
        self.task = self.engine = self.cfg = self.spec = None

    def load(self, task: str, cfg: PipelineConfig, spec: ModelSpec | None) -> dict:
        import ray

        from data_pipeline.sample import source_llm
        from data_pipeline.score import open_scorer

        self.release()
        self.engine = source_llm(spec, cfg) if task == "sample" else open_scorer(cfg)
        self.task, self.cfg, self.spec = task, cfg, spec
        return {"node": ray.util.get_node_ip_address(), "pid": os.getpid()}

    def run(self, items: list[dict], attempt: int, prompts: dict | None = None) -> tuple[list[dict], dict]:
        t0 = time.time()
        ids = {p["id"] if self.task == "sample" else p["prompt_id"] for p in items}
        if self.fault and self.fault.raise_on_prompt in ids:
            raise RuntimeError(f"injected failure (prompt {self.fault.raise_on_prompt})")
        from data_pipeline.sample import sample_batch
        from data_pipeline.score import score_batch

        if self.task == "sample":
            rows = sample_batch(self.engine, self.cfg, self.spec, items)
        else:
            rows = score_batch(self.engine, self.cfg, prompts, items)
        if self.fault and self.fault.exit_on_prompt in ids and attempt == 0:
            os._exit(1)  # as a crash or a lost node would: the work is done but never returned
        tokens = sum(r.get("num_tokens", 0) for r in rows)
        return rows, {"seconds": time.time() - t0, "items": len(items), "tokens": tokens}

    def release(self) -> None:
        """Drop the engine and give its accelerator memory back before the next model loads."""
        if self.engine is None:
            return
        self.engine = None
        gc.collect()
        if "vllm" in sys.modules:  # vLLM's process groups outlive its engine; this also empties the CUDA cache
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        elif "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------
# The driver

def connect(opts: RayOptions, log=print) -> bool:
    """Join (or start) the cluster unless this process is already connected. True if this call connected."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(address=opts.address, include_dashboard=False, log_to_driver=True)
    if opts.num_cpus is not None:
        kwargs["num_cpus"] = opts.num_cpus
    ctx = ray.init(**kwargs)
    resources = ray.cluster_resources()
    log(f"ray: {ctx.address_info.get('address')}, {len([n for n in ray.nodes() if n['Alive']])} nodes, "
        f"{resources.get('CPU', 0):.0f} CPUs, {resources.get('GPU', 0):.0f} GPUs; replica logs in "
        f"{ctx.address_info.get('session_dir')}/logs here and /tmp/ray/session_latest/logs on the other nodes")
    return True


def replica_plan(nodes: list[dict], tensor_parallel_size: int, requested: int | None, what: str) -> tuple[int, dict]:
    """(number of replicas, Ray actor resources) for a model: each replica takes `tensor_parallel_size` GPUs of one
    node. On clusters without GPUs (tests, development) one replica per node, holding one CPU: Ray then gives it one
    OpenMP thread unless the driver's environment sets OMP_NUM_THREADS (forwarded to the replicas)."""
    alive = [n for n in nodes if n.get("Alive", True)]
    gpus = [int(n.get("Resources", {}).get("GPU", 0)) for n in alive]
    if sum(gpus) == 0:
        count, resources = len(alive), {"num_cpus": 1, "num_gpus": 0}
    else:
        count = sum(g // tensor_parallel_size for g in gpus)
        if count == 0:
            raise ConfigError(f"{what}: tensor_parallel_size {tensor_parallel_size} needs that many GPUs on one node;"
                              f" the largest node has {max(gpus)}")
        resources = {"num_cpus": 1, "num_gpus": tensor_parallel_size}
    return (requested or count), resources


def _actor_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV)}
    # The engine runs inside the actor process, so killing the actor (or losing its node) frees the accelerators:
    # no engine-core process outlives it.
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return env


def _short(error: BaseException) -> str:
    """One line: the replica's own exception for a task error, else Ray's (ActorDiedError, ObjectLostError ...)."""
    cause = getattr(error, "cause", None) or error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


_REMOTE_REPLICA = None


class ReplicaPool:
    """Replicas of one resource shape; kept across models of the same shape, engines released in between."""

    def __init__(self, opts: RayOptions, log=print):
        self.opts, self.log = opts, log
        self.resources: dict | None = None
        self.actors: list = []
        self.names: dict = {}  # actor -> "replica N"
        self.count = 0

    def _new_actor(self):
        global _REMOTE_REPLICA
        import ray

        _REMOTE_REPLICA = _REMOTE_REPLICA or ray.remote(Replica)
        actor = _REMOTE_REPLICA.options(max_restarts=0, max_task_retries=0, runtime_env={"env_vars": _actor_env()},
                                            **self.resources).remote(self.opts.fault)
        self.count += 1
        self.names[actor] = f"replica {self.count}"
        self.actors.append(actor)
        return actor

    def kill(self, actor) -> None:
        import ray

        if actor in self.actors:
            self.actors.remove(actor)
        ray.kill(actor, no_restart=True)

    def shutdown(self) -> None:
        for actor in list(self.actors):
            self.kill(actor)

    def run(self, label: str, task: str, cfg: PipelineConfig, spec, units: list[Unit], size: int, resources: dict,
            write, prompts: dict | None = None) -> tuple[list[Unit], dict]:
        """Run `units` on `size` replicas loaded with (task, spec); `write(unit, rows)` for each finished unit.
        Returns (units that failed max_attempts times, per-replica throughput)."""
        import ray

        if resources != self.resources:
            self.shutdown()
            self.resources = resources
        size = max(1, min(size, len(units)))
        while len(self.actors) > size:
            self.kill(self.actors[-1])
        while len(self.actors) < size:
            self._new_actor()
        loading = {a.load.remote(task, cfg, spec): a for a in self.actors}
        queue = collections.deque(units)
        running: dict = {}  # ref -> (actor, unit)
        idle: list = []
        failed: list[Unit] = []
        where: dict = {}
        load_failures: list[str] = []
        per_replica: dict = {}
        total_items = sum(len(u.items) for u in units)
        done_items = done_units = tokens = 0
        t_start = time.time()
        t_first = None
        last_wait_log = 0.0

        def replace() -> None:
            """A fresh replica for a lost one, unless the others can finish the queue as soon as it could start."""
            live = len(idle) + len(running) + len(loading)
            if queue and (live == 0 or len(queue) > live):
                replacement = self._new_actor()
                loading[replacement.load.remote(task, cfg, spec)] = replacement

        while queue or running:
            while idle and queue:
                actor, unit = idle.pop(), queue.popleft()
                running[actor.run.remote(unit.items, unit.attempts, _subset(prompts, unit))] = (actor, unit)
            if not running and not loading:
                if queue:  # nothing can take the work: every replica failed to load
                    for unit in queue:
                        unit.errors.append(f"no replica could load the model: {load_failures[-1]}")
                    failed.extend(queue)
                break
            ready, _ = ray.wait(list(loading) + list(running), num_returns=1, timeout=30)
            if not ready:
                if not running and time.time() - last_wait_log > 300:
                    self.log(f"  {label}: waiting for cluster resources ({resources}) to start replicas")
                    last_wait_log = time.time()
                continue
            ref = ready[0]
            if ref in loading:
                actor = loading.pop(ref)
                try:
                    info = ray.get(ref)
                    where[actor] = f"{self.names[actor]} ({info['node']}, pid {info['pid']})"
                    idle.append(actor)
                    t_first = t_first or time.time()
                except ray.exceptions.RayError as e:
                    load_failures.append(_short(e))
                    self.log(f"  {label}: {self.names[actor]} failed to load: {load_failures[-1]}")
                    self.kill(actor)
                    if len(load_failures) < self.opts.max_attempts * size:
                        replace()
                continue
            actor, unit = running.pop(ref)
            try:
                rows, stats = ray.get(ref)
            except ray.exceptions.RayError as e:
                unit.attempts += 1
                unit.errors.append(f"{where.get(actor, self.names[actor])}: {_short(e)}")
                verdict = "giving up" if unit.attempts >= self.opts.max_attempts else "will retry on another replica"
                self.log(f"  {label}: unit {unit.part.name} ({len(unit.items)} items) failed on attempt "
                         f"{unit.attempts}/{self.opts.max_attempts}: {unit.errors[-1]}; {verdict}")
                (failed if unit.attempts >= self.opts.max_attempts else queue).append(unit)
                self.kill(actor)  # its engine may be broken (or hold the failed call's requests)
                replace()
                continue
            write(unit, rows)
            idle.append(actor)
            name = where[actor]
            mine = per_replica.setdefault(name, {"units": 0, "items": 0, "tokens": 0, "seconds": 0.0})
            for k, v in (("units", 1), ("items", stats["items"]), ("tokens", stats["tokens"]),
                         ("seconds", stats["seconds"])):
                mine[k] += v
            done_units += 1
            done_items += stats["items"]
            tokens += stats["tokens"]
            dt = max(time.time() - (t_first or t_start), 1e-9)
            rate = done_items / dt
            eta = (total_items - done_items - sum(len(u.items) for u in failed)) / rate if rate else 0
            self.log(f"  {label}: {done_units}/{len(units)} units, {done_items}/{total_items} items, "
                     f"{rate:.2f} items/s" + (f", {tokens / dt:.1f} generated tokens/s" if tokens else "")
                     + f", {len(idle) + len(running)} replicas, ETA {_duration(eta)}")
        for ref, actor in loading.items():  # replicas still starting (e.g. waiting for a node that left)
            self.kill(actor)
        for actor in self.actors:
            actor.release.remote()
        return failed, per_replica


def _subset(prompts: dict | None, unit: Unit) -> dict | None:
    return None if prompts is None else {pid: prompts[pid] for pid in unit.prompt_ids}


def _throughput_table(label: str, per_replica: dict, log) -> list[dict]:
    rows = []
    for name, s in sorted(per_replica.items()):
        sec = max(s["seconds"], 1e-9)
        rows.append({"replica": name, "units": s["units"], "items": s["items"], "busy_s": round(s["seconds"], 2),
                     "items_per_s": round(s["items"] / sec, 3), "generated_tokens_per_s": round(s["tokens"] / sec, 1)})
        log(f"    {label} {name}: {s['units']} units, {s['items']} items, {s['items'] / sec:.2f} items/s"
            + (f", {s['tokens'] / sec:.1f} generated tokens/s" if s["tokens"] else ""))
    return rows


def _finish(out_dir: Path, stage: str, failed: list[dict], throughput: dict, log) -> None:
    report_dir = out_dir / "ray"
    write_json_atomic(report_dir / f"{stage}-throughput.json", throughput)
    failed_path = report_dir / f"{stage}-failed.json"
    if not failed:
        failed_path.unlink(missing_ok=True)
        return
    write_json_atomic(failed_path, failed)
    for f in failed:
        log(f"  FAILED {f['model']} {Path(f['part']).name}: prompts {f['prompt_ids']}: {f['errors'][-1]}")
    raise UnitsFailed(f"{stage}: {len(failed)} units failed (listed with their prompts and errors in {failed_path}); "
                      f"the rest is done; rerun to retry them")


def _record(unit: Unit, model: str) -> dict:
    return {"model": model, "part": str(unit.part), "prompt_ids": unit.prompt_ids, "attempts": unit.attempts,
            "errors": unit.errors}


@contextlib.contextmanager
def session(opts: RayOptions, log=print):
    """Connected to the cluster, with a replica pool that is shut down on the way out (and the cluster too, when
    this call started it)."""
    import ray

    connected = connect(opts, log)
    pool = ReplicaPool(opts, log)
    try:
        yield pool
    finally:
        pool.shutdown()
        if connected:
            ray.shutdown()


def sample_on_ray(cfg: PipelineConfig, out_dir: Path, opts: RayOptions, log=print,
                  pool: ReplicaPool | None = None) -> dict:
    """The sample stage on a Ray cluster; the same part files as `data_pipeline.sample.sample(cfg, out_dir)`."""
    import ray

    from data_pipeline.sample import load_prompts

    prompts = load_prompts(out_dir)
    if pool is None:
        with session(opts, log) as pool:
            return sample_on_ray(cfg, out_dir, opts, log, pool)
    stats, failed, throughput = {}, [], {}
    for spec in cfg.models:
        wanted, units = sample_units(cfg, out_dir, spec, prompts)
        todo = sum(len(u.items) for u in units)
        log(f"sample {spec.name}: {wanted} prompts, {wanted - todo} done, {todo} to do in {len(units)} units")
        if not units:
            continue
        size, resources = replica_plan(ray.nodes(), spec.tensor_parallel_size, opts.replicas, spec.name)
        t0 = time.time()
        bad, per_replica = pool.run(f"sample {spec.name}", "sample", cfg, spec, units, size, resources,
                                    lambda unit, rows: write_jsonl_atomic(unit.part, rows))
        failed += [_record(u, spec.name) for u in bad]
        throughput[spec.name] = _throughput_table(f"sample {spec.name}", per_replica, log)
        stats[spec.name] = {"prompts": todo - sum(len(u.items) for u in bad), "seconds": time.time() - t0,
                            "tokens": sum(s["tokens"] for s in per_replica.values())}
    _finish(out_dir, "sample", failed, throughput, log)
    return stats


def score_on_ray(cfg: PipelineConfig, out_dir: Path, opts: RayOptions, log=print,
                 pool: ReplicaPool | None = None) -> dict:
    """The score stage on a Ray cluster; the same part files as `data_pipeline.score.score(cfg, out_dir)`."""
    import ray

    prompts, total, units = score_units(cfg, out_dir)
    todo = sum(len(u.items) for u in units)
    log(f"score: {total} responses, {todo} to score in {len(units)} units")
    if not units:
        return {"scored": 0}
    if pool is None:
        with session(opts, log) as pool:
            return score_on_ray(cfg, out_dir, opts, log, pool)
    t0 = time.time()
    size, resources = replica_plan(ray.nodes(), 1, opts.replicas, "reward")
    bad, per_replica = pool.run("score", "score", cfg, None, units, size, resources,
                                lambda unit, rows: write_jsonl_atomic(unit.part, rows), prompts=prompts)
    _finish(out_dir, "score", [_record(u, "reward") for u in bad],
            {"reward": _throughput_table("score", per_replica, log)}, log)
    return {"scored": todo - sum(len(u.items) for u in bad), "seconds": time.time() - t0}
