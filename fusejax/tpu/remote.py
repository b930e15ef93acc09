"""Shell commands run on the TPU workers: set up the repository at one git revision, launch a stage detached, poll
it, stop it. One line each, so --dry-run prints one line per gcloud call. Layout on every worker: ~/fusejax (the
checkout), ~/fusejax-runs/RUN/{log,pid,exit_code}."""

from __future__ import annotations

import re
import shlex

REPO_DIR = "fusejax"
RUNS_DIR = "fusejax-runs"
# tpu_scripts/run_stage.sh's exit codes: 0 the stage finished; RESUMABLE it stopped early with a checkpoint
# (SIGTERM or `stop`) and continues with --resume.
RESUMABLE = 75
_RUN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def check_run_name(run: str) -> str:
    if not _RUN_NAME.match(run):
        raise ValueError(f"--run: {run!r} must be letters, digits, '.', '_' or '-' (it names a directory)")
    return run


def setup(repo_url: str, revision: str, extra: str = "tpu") -> str:
    """Clone (once) and check out `revision`, then install the package with `[extra]` into ~/fusejax/.venv."""
    q = shlex.quote
    return "; ".join([
        "set -e",
        f"if [ ! -d {REPO_DIR}/.git ]; then git clone --quiet {q(repo_url)} {REPO_DIR}; fi",
        f"cd {REPO_DIR}",
        "git fetch --quiet origin || true",
        f"git cat-file -e {q(revision)}^{{commit}} 2>/dev/null || "
        f"{{ echo 'commit {revision} is not on {repo_url}: push it first' >&2; exit 3; }}",
        f"git checkout --quiet --force --detach {q(revision)}",
        "[ -x .venv/bin/python ] || python3 -m venv .venv || { sudo apt-get update -qq && "  # Ubuntu images may
        "sudo apt-get install -y -qq python3-venv && python3 -m venv .venv; }",  # lack the venv module
        ".venv/bin/pip install -q --upgrade pip",
        f".venv/bin/pip install -q -e {q('.[' + extra + ']')}",
        ".venv/bin/python -c 'import jax; print(\"worker\", jax.process_index(), \"sees\", jax.device_count(), "
        "\"devices\", flush=True)'",
    ])


def train_command(config: str, overrides: list[str], resume: bool) -> list[str]:
    return [".venv/bin/python", "train.py", "--config", config, *overrides] + (["--resume"] if resume else [])


def launch(run: str, command: list[str], env: dict[str, str] | None = None) -> str:
    """Start `command` in ~/fusejax detached (setsid nohup) under tpu_scripts/run_stage.sh; refuses when the run is
    still going on this worker."""
    d = f"$HOME/{RUNS_DIR}/{check_run_name(run)}"
    exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
    return "; ".join([
        f"cd $HOME/{REPO_DIR} && mkdir -p {d}",
        f"if [ -f {d}/pid ] && [ ! -f {d}/exit_code ] && kill -0 $(cat {d}/pid) 2>/dev/null; then "
        f"echo 'run {run} is still going (pid '$(cat {d}/pid)')' >&2; exit 3; fi",
        f"rm -f {d}/exit_code; echo \"=== launch $(date -u +%Y-%m-%dT%H:%M:%SZ): {shlex.join(command)}\" >> {d}/log",
        f"{exports}setsid nohup tpu_scripts/run_stage.sh {d} {shlex.join(command)} >/dev/null 2>&1 </dev/null & "
        "echo launched",
    ])


def poll(run: str) -> str:
    """Prints the run's state on this worker: an exit code, 'running', 'dead' (gone without an exit code) or
    'absent' (never launched here: a fresh VM)."""
    d = f"$HOME/{RUNS_DIR}/{check_run_name(run)}"
    return (f"if [ -f {d}/exit_code ]; then cat {d}/exit_code; elif [ ! -f {d}/pid ]; then echo absent; "
            f"elif kill -0 $(cat {d}/pid) 2>/dev/null; then echo running; else echo dead; fi")


def stop(run: str) -> str:
    """SIGTERM to the run's process group: the trainer saves a checkpoint and exits (resumable)."""
    d = f"$HOME/{RUNS_DIR}/{check_run_name(run)}"
    return (f"if [ -f {d}/pid ] && kill -0 $(cat {d}/pid) 2>/dev/null; then kill -TERM -- -$(cat {d}/pid) && "
            f"echo stopping; else echo 'not running'; fi")


def log_path(run: str) -> str:
    return f"{RUNS_DIR}/{check_run_name(run)}/log"


def parse_poll(stdout: str) -> str | int:
    """The last line of poll()'s output as an int exit code or a word."""
    lines = [ln.strip() for ln in stdout.strip().splitlines() if ln.strip()]
    if not lines:
        return "unknown"
    last = lines[-1]
    return int(last) if last.lstrip("-").isdigit() else last
