"""Run untrusted Python (model-written code + tests) in a sandbox.

Layers, each covering what the others might miss:
  - bubblewrap: read-only host filesystem, fresh /tmp, a fresh writable working directory, new PID/network/IPC/UTS
    namespaces (no network at all), cleared environment (no secrets of the caller), dies with its parent;
  - setpriv: the program runs as an unprivileged user (nobody), so it cannot read root-only files or write anywhere
    but its directory, and RLIMIT_NPROC bounds fork bombs;
  - resource limits: address space (memory bombs), CPU time, file size (output cap), process count;
  - a wall-clock timeout, after which the whole process group is SIGKILLed (and the PID namespace with it).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOBODY = 65534


class SandboxUnavailable(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    max_procs: int = 64
    output_bytes: int = 64 * 1024


@dataclasses.dataclass
class Result:
    status: str  # "passed" | "failed" | "timeout" | "killed"
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def check_available() -> None:
    missing = [t for t in ("bwrap", "setpriv") if shutil.which(t) is None]
    if missing:
        raise SandboxUnavailable(f"code verification needs {', '.join(missing)} (Debian: apt-get install bubblewrap "
                                 "util-linux)")
    if os.geteuid() != 0:
        # bwrap can run unprivileged with user namespaces, but dropping to `nobody` needs root.
        raise SandboxUnavailable("code verification must run as root (it drops each program to user nobody)")


def _limits(limits: Limits):
    def apply():
        os.setsid()
        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_procs, limits.max_procs))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_python(source: str, limits: Limits = Limits(), python: str | None = None) -> Result:
    """Run `source` as a script in the sandbox; passed = exit status 0 within the limits."""
    check_available()
    python = python or _system_python()
    work = Path(tempfile.mkdtemp(prefix="fusejax-sbx-"))
    logs = Path(tempfile.mkdtemp(prefix="fusejax-sbx-logs-"))
    try:
        os.chown(work, NOBODY, NOBODY)
        (work / "main.py").write_text(source)
        os.chown(work / "main.py", NOBODY, NOBODY)
        cmd = [
            "bwrap", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--bind", str(work), "/tmp/sandbox", "--chdir", "/tmp/sandbox",
            "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session",
            "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp/sandbox",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--",
            python, "-I", "-S", "main.py",
        ]
        start = time.monotonic()
        with open(logs / "out", "wb") as out, open(logs / "err", "wb") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, preexec_fn=_limits(limits),
                                    close_fds=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            status = None
            try:
                rc = proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                status, rc = "timeout", None
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # everything it started, whatever happened
                except ProcessLookupError:
                    pass
                proc.wait()
        seconds = time.monotonic() - start
        if status is None:
            status = "passed" if rc == 0 else ("killed" if rc is not None and rc < 0 else "failed")
        read = lambda p: p.read_bytes()[: limits.output_bytes].decode("utf-8", "replace")  # noqa: E731
        return Result(status, rc, read(logs / "out"), read(logs / "err"), seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)


def _system_python() -> str:
    """A Python that user nobody can execute (interpreters under /root, e.g. pyenv's, are out of its reach)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", os.path.realpath(sys.executable)):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) and not candidate.startswith("/root/"):
            return candidate
    raise SandboxUnavailable("no Python interpreter outside /root for the sandboxed user (install python3)")
