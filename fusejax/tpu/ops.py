"""One TRC session's steps on a slice, each a function of (gcloud runner, slice): create, wait until ready, set up
every worker at one git revision, launch a stage, poll, collect per-worker logs, stop, delete."""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path

from fusejax.tpu import remote
from fusejax.tpu.gcloud import (NODE_LOST, NODE_READY, QR_ACTIVE, QR_LOST, Gcloud, GcloudError, Slice,
                                queued_state)

SSH_FAILED = 255  # ssh's own failure status (connection refused / reset: a VM going away)


class EventLog:
    """Timestamped event lines on stdout and appended to a file."""

    def __init__(self, path: str | Path | None = None, out=None):
        self.path = Path(path) if path else None
        self.out = out or sys.stdout
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: str, detail: str = "") -> None:
        line = f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')} {event:<12} {detail}"
        print(line, file=self.out, flush=True)
        if self.path:
            with self.path.open("a") as f:
                f.write(line + "\n")


def slice_state(gc: Gcloud, s: Slice) -> tuple[str, dict | None]:
    """('absent' | 'waiting' | 'lost' | 'starting' | 'ready', node JSON) from the queued resource and its node."""
    q = queued_state(gc.describe(s.describe_queued()))
    if q is None:
        return "absent", None
    if q in QR_LOST:
        return "lost", None
    if q != QR_ACTIVE:
        return "waiting", None
    node = gc.describe(s.describe_node())
    if node is None or node.get("state") in NODE_LOST:
        return "lost", node
    return ("ready" if node.get("state") == NODE_READY else "starting"), node


def create(gc: Gcloud, s: Slice, log: EventLog) -> None:
    gc.run(s.create())
    log("create", f"queued resource {s.name}: {s.accelerator_type}, {'spot' if s.spot else 'on-demand'}, {s.zone}")


def delete(gc: Gcloud, s: Slice, log: EventLog, wait_s: float = 600, poll_s: float = 10) -> None:
    """Delete the queued resource and its node, and wait until the name is free again."""
    gc.run(s.delete(), check=False)
    log("delete", f"queued resource {s.name}")
    if gc.dry_run:
        return
    deadline = time.monotonic() + wait_s
    while queued_state(gc.describe(s.describe_queued())) is not None:
        if time.monotonic() > deadline:
            raise GcloudError(f"{s.name}: still present {wait_s:.0f}s after delete")
        time.sleep(poll_s)


def wait_ready(gc: Gcloud, s: Slice, log: EventLog, timeout_s: float = 86400, poll_s: float = 30) -> dict | None:
    """Poll until the slice is READY (returns the node JSON); raises when it fails or the timeout passes."""
    if gc.dry_run:
        gc.run(s.describe_queued())
        gc.run(s.describe_node())
        return None
    t0, last = time.monotonic(), None
    while True:
        state, node = slice_state(gc, s)
        if state != last:
            log("slice", f"{s.name}: {state}")
            last = state
        if state == "ready":
            return node
        if state in ("absent", "lost"):
            raise GcloudError(f"{s.name}: {state} while waiting for it to become ready")
        if time.monotonic() - t0 > timeout_s:
            raise GcloudError(f"{s.name}: not ready after {timeout_s:.0f}s (state {state})")
        time.sleep(poll_s)


def setup(gc: Gcloud, s: Slice, repo_url: str, revision: str, log: EventLog) -> int:
    log("setup", f"all workers -> {repo_url} @ {revision[:12]}, pip install -e '.[tpu]'")
    r = gc.run(s.ssh(remote.setup(repo_url, revision)), check=False, capture=False, timeout=3600)
    return r.returncode


def launch(gc: Gcloud, s: Slice, run: str, command: list[str], log: EventLog, env: dict | None = None) -> int:
    log("launch", f"run {run} on all workers: {' '.join(command)}")
    return gc.run(s.ssh(remote.launch(run, command, env)), check=False, timeout=600).returncode


def poll(gc: Gcloud, s: Slice, run: str, timeout_s: float = 120) -> str | int:
    """Worker 0's view of the run (remote.poll); 'ssh-failed' when the worker could not be reached."""
    r = gc.run(s.ssh(remote.poll(run), worker=0), check=False, timeout=timeout_s)
    if gc.dry_run:
        return "running"
    if r.returncode != 0:
        return "ssh-failed"
    return remote.parse_poll(r.stdout)


def stop(gc: Gcloud, s: Slice, run: str, log: EventLog) -> int:
    log("stop", f"run {run}: SIGTERM on all workers (checkpoint, then exit)")
    return gc.run(s.ssh(remote.stop(run)), check=False, capture=False).returncode


def collect_logs(gc: Gcloud, s: Slice, run: str, dest: str | Path, workers: int) -> list[Path]:
    """Copy each worker's log to DEST/worker-I.log (written aside, renamed into place)."""
    dest = Path(dest)
    if not gc.dry_run:
        dest.mkdir(parents=True, exist_ok=True)
    got = []
    for i in range(workers):
        tmp, final = dest / f".worker-{i}.log.tmp", dest / f"worker-{i}.log"
        r = gc.run(s.scp_from(f"~/{remote.log_path(run)}", str(tmp), worker=i), check=False, timeout=300)
        if r.returncode == 0 and tmp.exists():
            tmp.replace(final)
            got.append(final)
    return got


def git_revision(repo_dir: str = ".") -> tuple[str, str]:
    """(origin URL, HEAD commit) of the local checkout: the workers install exactly this revision."""
    def git(*a):
        return subprocess.run(["git", "-C", repo_dir, *a], capture_output=True, text=True, check=True).stdout.strip()

    try:
        url, rev = git("config", "--get", "remote.origin.url"), git("rev-parse", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError):
        raise GcloudError("--repo/--revision: not given and the current directory is not a git checkout with an "
                          "origin remote") from None
    if git("status", "--porcelain", "--untracked-files=no"):
        print(f"warning: uncommitted changes in {repo_dir} do not reach the workers (they install {rev[:12]})",
              file=sys.stderr)
    return url, rev
