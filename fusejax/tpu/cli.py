"""`fusejax tpu ...`: a TRC session on one slice, from queued resource to deletion.

    fusejax tpu create  --name NAME --zone ZONE --type v4-32 [--on-demand] [--wait]
    fusejax tpu run     --name NAME --zone ZONE --type v4-32 --config CFG [key=value ...]   # supervised stage
    fusejax tpu setup | launch | status | logs | stop | delete ...

Slice flags default from the environment: FUSEJAX_TPU_NAME, FUSEJAX_TPU_ZONE (else CLOUDSDK_COMPUTE_ZONE),
FUSEJAX_TPU_PROJECT (else CLOUDSDK_CORE_PROJECT, else gcloud's configured project), FUSEJAX_TPU_TYPE,
FUSEJAX_TPU_RUNTIME, FUSEJAX_TPU_SPOT (1/0). --dry-run prints every gcloud command instead of running it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fusejax.tpu import ops, remote
from fusejax.tpu.gcloud import Gcloud, GcloudError, Slice, worker_count
from fusejax.tpu.supervisor import Policy, Stage, supervise


def _env(*names: str, default=None):
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return default


def _slice(args) -> Slice:
    if not args.name or not args.zone:
        raise GcloudError("--name and --zone are required (or FUSEJAX_TPU_NAME / FUSEJAX_TPU_ZONE)")
    return Slice(name=args.name, zone=args.zone, accelerator_type=args.type, runtime_version=args.runtime,
                 project=args.project, spot=args.spot)


def _env_pairs(items: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        if "=" not in item:
            raise GcloudError(f"--env {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        pairs.append((k, v))
    return tuple(pairs)


def _forwarded_env(args) -> tuple[tuple[str, str], ...]:
    """--env pairs, plus HF_TOKEN from here when --forward-hf-token (hub pushes from the workers)."""
    pairs = _env_pairs(args.env)
    if getattr(args, "forward_hf_token", False) and os.environ.get("HF_TOKEN"):
        pairs += (("HF_TOKEN", os.environ["HF_TOKEN"]),)
    return pairs


def _run_name(args) -> str:
    return remote.check_run_name(args.run or Path(args.config).stem)


def _repo(args) -> tuple[str, str]:
    if args.repo and args.revision:
        return args.repo, args.revision
    url, rev = ops.git_revision()
    return args.repo or url, args.revision or rev


def cmd_create(args, gc, s, log) -> int:
    ops.create(gc, s, log)
    if args.wait:
        ops.wait_ready(gc, s, log, poll_s=args.poll)
    return 0


def cmd_wait(args, gc, s, log) -> int:
    node = ops.wait_ready(gc, s, log, poll_s=args.poll)
    if node is not None:
        log("ready", f"{s.name}: {worker_count(node)} worker(s)")
    return 0


def cmd_setup(args, gc, s, log) -> int:
    url, rev = _repo(args)
    return ops.setup(gc, s, url, rev, log)


def cmd_launch(args, gc, s, log) -> int:
    run = _run_name(args)
    return ops.launch(gc, s, run, remote.train_command(args.config, args.overrides, args.resume), log,
                      dict(_forwarded_env(args)))


def cmd_status(args, gc, s, log) -> int:
    if gc.dry_run:
        gc.run(s.describe_queued())
        gc.run(s.describe_node())
        if args.run:
            ops.poll(gc, s, args.run)
        return 0
    state, node = ops.slice_state(gc, s)
    line = f"slice {s.name}: {state}" + (f", node {node.get('state')}, {worker_count(node)} worker(s)" if node else "")
    if args.run and state == "ready":
        line += f"; run {args.run}: {ops.poll(gc, s, remote.check_run_name(args.run))}"
    print(line)
    return 0


def cmd_logs(args, gc, s, log) -> int:
    run = remote.check_run_name(args.run)
    workers = args.workers
    if workers is None:
        workers = 1 if gc.dry_run else worker_count(gc.describe(s.describe_node()))
    got = ops.collect_logs(gc, s, run, args.out or Path("tpu-runs") / run / "logs" / "latest", workers)
    for p in got:
        print(p)
    return 0 if gc.dry_run or len(got) == workers else 1


def cmd_stop(args, gc, s, log) -> int:
    return ops.stop(gc, s, remote.check_run_name(args.run), log)


def cmd_delete(args, gc, s, log) -> int:
    ops.delete(gc, s, log, poll_s=args.poll)
    return 0


def cmd_run(args, gc, s, log) -> int:
    run = _run_name(args)
    url, rev = _repo(args)
    stage = Stage(run=run, config=args.config, overrides=tuple(args.overrides), resume=args.resume, repo_url=url,
                  revision=rev, env=_forwarded_env(args))
    policy = Policy(poll_s=args.poll, max_retries=args.max_retries, backoff_s=args.backoff,
                    backoff_max_s=args.backoff_max)
    if gc.dry_run:  # the commands of one uneventful pass, in order
        ops.create(gc, s, log)
        ops.wait_ready(gc, s, log)
        ops.setup(gc, s, url, rev, log)
        ops.launch(gc, s, run, remote.train_command(args.config, args.overrides, args.resume), log, dict(stage.env))
        ops.poll(gc, s, run)
        ops.collect_logs(gc, s, run, Path("tpu-runs") / run / "logs" / "slice-1", 1)
        print(f"# then: poll every {args.poll:g}s; when preempted: delete, create, setup, launch with --resume "
              f"(at most {args.max_retries} retries)")
        return 0
    outcome = supervise(gc, s, stage, policy, log, args.local_dir or Path("tpu-runs") / run)
    if args.delete_when_done and outcome.status == "finished":
        ops.delete(gc, s, log, poll_s=args.poll)
    return outcome.exit_code


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("slice")
    g.add_argument("--name", default=_env("FUSEJAX_TPU_NAME"), help="queued resource and node name")
    g.add_argument("--zone", default=_env("FUSEJAX_TPU_ZONE", "CLOUDSDK_COMPUTE_ZONE"))
    g.add_argument("--project", default=_env("FUSEJAX_TPU_PROJECT", "CLOUDSDK_CORE_PROJECT"))
    g.add_argument("--type", default=_env("FUSEJAX_TPU_TYPE", default="v4-8"),
                   help="accelerator type: v4-8, v5litepod-16, v5p-8, v6e-8, ...")
    g.add_argument("--runtime", default=_env("FUSEJAX_TPU_RUNTIME"),
                   help="runtime (software) version; default per generation")
    spot = g.add_mutually_exclusive_group()
    spot.add_argument("--spot", dest="spot", action="store_true", default=_env("FUSEJAX_TPU_SPOT", default="1") != "0",
                      help="spot capacity (the default)")
    spot.add_argument("--on-demand", dest="spot", action="store_false")
    common.add_argument("--dry-run", action="store_true", help="print the gcloud commands, run nothing")
    common.add_argument("--poll", type=float, default=30.0, help="seconds between state checks")
    common.add_argument("--event-log", default=None, help="append timestamped events to this file too")

    stage = argparse.ArgumentParser(add_help=False)
    stage.add_argument("--config", required=True, help="training config (path inside the repository)")
    stage.add_argument("--run", default=None, help="run name (default: the config's file name)")
    stage.add_argument("--resume", action="store_true", help="pass --resume on the first launch too")
    stage.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="exported on the workers")
    stage.add_argument("--forward-hf-token", action="store_true",
                       help="export this machine's HF_TOKEN on the workers (for push_to_hub in the config)")
    stage.add_argument("overrides", nargs="*", help="key=value config overrides, as for train.py")

    repo = argparse.ArgumentParser(add_help=False)
    repo.add_argument("--repo", default=None, help="git URL the workers clone (default: this checkout's origin)")
    repo.add_argument("--revision", default=None, help="commit to install (default: this checkout's HEAD)")

    p = argparse.ArgumentParser(prog="fusejax tpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="tpu_command", required=True)
    c = sub.add_parser("create", parents=[common], help="request a slice (queued resource)")
    c.add_argument("--wait", action="store_true", help="then wait until it is READY")
    c.set_defaults(func=cmd_create)
    sub.add_parser("wait", parents=[common], help="wait until the slice is READY").set_defaults(func=cmd_wait)
    sub.add_parser("setup", parents=[common, repo],
                   help="every worker: clone, check out the revision, pip install -e '.[tpu]'").set_defaults(
        func=cmd_setup)
    sub.add_parser("launch", parents=[common, stage],
                   help="start a training stage on every worker, detached").set_defaults(func=cmd_launch)
    st = sub.add_parser("status", parents=[common], help="slice state (and a run's state on worker 0)")
    st.add_argument("--run", default=None)
    st.set_defaults(func=cmd_status)
    lg = sub.add_parser("logs", parents=[common], help="copy every worker's log of a run here")
    lg.add_argument("--run", required=True)
    lg.add_argument("--out", default=None, help="folder (default tpu-runs/RUN/logs/latest)")
    lg.add_argument("--workers", type=int, default=None, help="default: from the node")
    lg.set_defaults(func=cmd_logs)
    sp = sub.add_parser("stop", parents=[common], help="SIGTERM a run: it saves a checkpoint and exits")
    sp.add_argument("--run", required=True)
    sp.set_defaults(func=cmd_stop)
    sub.add_parser("delete", parents=[common], help="delete the queued resource and its TPU VMs").set_defaults(
        func=cmd_delete)
    r = sub.add_parser("run", parents=[common, stage, repo],
                       help="supervised stage: create, wait, setup, launch; recreate and resume after preemption")
    r.add_argument("--max-retries", type=int, default=10)
    r.add_argument("--backoff", type=float, default=60.0, help="first retry delay (s), doubling, capped")
    r.add_argument("--backoff-max", type=float, default=1800.0)
    r.add_argument("--local-dir", default=None, help="events and collected logs (default tpu-runs/RUN)")
    r.add_argument("--delete-when-done", action="store_true", help="delete the slice once the stage finished")
    r.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    gc = Gcloud(dry_run=args.dry_run)
    event_log = args.event_log
    if event_log is None and args.tpu_command == "run" and not args.dry_run:
        event_log = Path(args.local_dir or Path("tpu-runs") / _run_name(args)) / "events.log"
    log = ops.EventLog(event_log, out=sys.stderr if args.dry_run else sys.stdout)
    try:
        return args.func(args, gc, _slice(args), log)
    except (GcloudError, ValueError) as e:
        print(f"fusejax tpu: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log("interrupted", "the slice and any running stage are left as they are (fusejax tpu status / delete)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
