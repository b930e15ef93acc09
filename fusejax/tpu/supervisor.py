"""Bring a stage on a spot slice to its end: recreate the slice when it is preempted or lost, set it up again and
relaunch the stage with --resume, with bounded retries and exponential backoff. Runs on the user's machine.

Each pass: slice state (queued resource + node) -> if lost: delete, back off, create; if waiting: wait; if ready:
ask worker 0 how the run is ('absent' on a fresh VM -> set up + launch; 'running'; 0 -> done; 75 -> relaunch with
--resume; other exit code -> the stage itself failed, stop).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from fusejax.tpu import ops, remote
from fusejax.tpu.gcloud import Gcloud, GcloudError, Slice, worker_count


@dataclasses.dataclass(frozen=True)
class Policy:
    poll_s: float = 60.0
    max_retries: int = 10  # slice recreations + relaunches together
    backoff_s: float = 60.0  # before the n-th retry: backoff_s * 2**(n-1), at most backoff_max_s
    backoff_max_s: float = 1800.0
    max_ssh_failures: int = 10  # consecutive unreachable polls of a READY slice before it is recreated
    wait_ready_s: float = 86400.0  # queued long enough: give up
    collect_logs_every: int = 10  # polls

    def backoff(self, retry: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2 ** max(0, retry - 1))


@dataclasses.dataclass(frozen=True)
class Stage:
    run: str  # names ~/fusejax-runs/RUN on the workers and the local log folder
    config: str
    overrides: tuple[str, ...] = ()
    resume: bool = False  # pass --resume on the first launch too (continuing an earlier session)
    repo_url: str = ""
    revision: str = ""
    env: tuple[tuple[str, str], ...] = ()  # exported on the workers before the stage (HF_TOKEN, ...)


@dataclasses.dataclass
class Outcome:
    status: str  # "finished" | "failed" | "gave-up"
    exit_code: int
    retries: int
    launches: int


def supervise(gc: Gcloud, s: Slice, stage: Stage, policy: Policy, log: ops.EventLog, local_dir: str | Path,
              sleep: Callable[[float], None] = time.sleep) -> Outcome:
    local_dir = Path(local_dir)
    retries = launches = ssh_failures = polls = 0
    incarnation, set_up, launched_here, workers, waiting_since, last_state = 0, False, False, 1, None, None
    log("supervise", f"run {stage.run}: {stage.config} on {s.name} ({s.accelerator_type}, {s.zone}); "
                     f"retries <= {policy.max_retries}, poll every {policy.poll_s:g}s")

    def retry(reason: str) -> bool:
        nonlocal retries
        retries += 1
        if retries > policy.max_retries:
            log("give-up", f"{reason}; {policy.max_retries} retries used")
            return False
        delay = policy.backoff(retries)
        log("retry", f"{reason}; retry {retries}/{policy.max_retries} after {delay:g}s")
        sleep(delay)
        return True

    def logs_dir() -> Path:
        return local_dir / "logs" / f"slice-{incarnation}"

    api_errors = 0
    while True:
        try:
            state, node = ops.slice_state(gc, s)
        except GcloudError as e:  # an API hiccup (UNAVAILABLE, a timeout): look again, unless it persists
            api_errors += 1
            log("gcloud-error", f"{e} ({api_errors}/{policy.max_ssh_failures})")
            if api_errors >= policy.max_ssh_failures:
                log("give-up", f"gcloud failed {api_errors} times in a row")
                return Outcome("gave-up", 1, retries, launches)
            sleep(policy.poll_s)
            continue
        api_errors = 0
        if state != last_state:
            log("slice", f"{s.name}: {state}" + (f" ({node.get('state')})" if node else ""))
            last_state = state
        if state in ("absent", "lost"):
            if state == "lost" or incarnation > 0:
                if not retry(f"slice {s.name} {'preempted or failed' if state == 'lost' else 'disappeared'}"):
                    return Outcome("gave-up", 1, retries, launches)
            try:
                if state == "lost":
                    ops.delete(gc, s, log, poll_s=min(10.0, policy.poll_s))
                ops.create(gc, s, log)
            except GcloudError as e:  # quota, stockout, a name still being deleted: counts as a retry
                if not retry(f"create/delete failed: {e}"):
                    return Outcome("gave-up", 1, retries, launches)
                continue
            incarnation += 1
            set_up, launched_here, ssh_failures, waiting_since, last_state = False, False, 0, time.monotonic(), None
            sleep(policy.poll_s)
            continue
        if state in ("waiting", "starting"):
            waiting_since = waiting_since or time.monotonic()
            if time.monotonic() - waiting_since > policy.wait_ready_s:
                log("give-up", f"{s.name} not ready after {policy.wait_ready_s:g}s")
                return Outcome("gave-up", 1, retries, launches)
            sleep(policy.poll_s)
            continue
        waiting_since = None
        workers = worker_count(node)
        status = ops.poll(gc, s, stage.run)
        polls += 1
        if status == "ssh-failed":
            ssh_failures += 1
            log("unreachable", f"worker 0 ({ssh_failures}/{policy.max_ssh_failures})")
            if ssh_failures >= policy.max_ssh_failures:
                log("unreachable", f"{s.name} READY but worker 0 unreachable: deleting it to recreate it")
                ops.delete(gc, s, log, poll_s=min(10.0, policy.poll_s))
                incarnation = max(incarnation, 1)  # the 'absent' pass counts the retry and recreates
            sleep(policy.poll_s)
            continue
        ssh_failures = 0
        if status == "running":
            if policy.collect_logs_every and polls % policy.collect_logs_every == 0:
                ops.collect_logs(gc, s, stage.run, logs_dir(), workers)
            sleep(policy.poll_s)
            continue
        if status == 0:
            got = ops.collect_logs(gc, s, stage.run, logs_dir(), workers)
            log("finished", f"run {stage.run} after {launches} launch(es), {retries} retries; logs: "
                            f"{got[0].parent if got else 'not collected'}")
            return Outcome("finished", 0, retries, launches)
        if isinstance(status, int) and status != remote.RESUMABLE:
            got = ops.collect_logs(gc, s, stage.run, logs_dir(), workers)
            log("failed", f"run {stage.run} exited {status} on worker 0 (not a preemption); see "
                          f"{got[0] if got else 'the workers'}")
            return Outcome("failed", status, retries, launches)
        # 'absent' (fresh VM), 'dead' (killed without an exit code) or RESUMABLE (stopped early with a checkpoint).
        if status == "absent" and launched_here:
            set_up = False  # the VM was replaced under the same name: nothing of ours is on it
        if launched_here or status == "dead":
            if not retry(f"run {stage.run} ended early on a live slice ({status})"):
                return Outcome("gave-up", 1, retries, launches)
        if not set_up:
            rc = ops.setup(gc, s, stage.repo_url, stage.revision, log)
            if rc == ops.SSH_FAILED:
                log("unreachable", "setup: ssh failed")
                sleep(policy.poll_s)
                continue
            if rc != 0:
                log("failed", f"setup exited {rc} (see the output above)")
                return Outcome("failed", rc, retries, launches)
            set_up = True
        resume = stage.resume or launches > 0 or status != "absent"  # checkpoints exist: continue from them
        rc = ops.launch(gc, s, stage.run, remote.train_command(stage.config, list(stage.overrides), resume), log,
                        dict(stage.env))
        if rc == 0:
            launches += 1
            launched_here = True
        else:
            log("unreachable" if rc == ops.SSH_FAILED else "launch", f"launch exited {rc}")
        sleep(policy.poll_s)
