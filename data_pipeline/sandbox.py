"""Run untrusted Python (model-written code + tests) in a sandbox.

Layers, each covering what the others might miss:
  - bubblewrap: a read-only view of the system directories only (/usr, /etc, /lib*, the interpreter's prefix: no
    home directories, no project or data folders), fresh /tmp, a fresh writable working directory, new
    PID/network/IPC/UTS namespaces (no network at all), cleared environment (no secrets of the caller), dies with
    its parent;
  - an unprivileged identity: an unprivileged user namespace with every capability dropped and no further user
    namespaces allowed (no setuid helper needed); a root caller first drops to user nobody (setpriv), so the
    program cannot read root-only files. Where the kernel refuses unprivileged user namespaces, root falls back to
    running bubblewrap itself and dropping the program to nobody inside (`mode()`); other users cannot verify code;
  - resource limits: address space (memory bombs), CPU time, file size (output cap), process count (RLIMIT_NPROC,
    counted inside each sandbox's own user namespace, so a fork bomb in one sandbox does not starve the others
    running beside it, nor does the caller's own process count matter);
  - a wall-clock timeout, after which the whole process group is SIGKILLed (and the PID namespace with it).

`run_python` runs one script and reports its exit status; `run_files` runs a script among other files and can hand
the program a secret on a pipe and read back what it writes on a second pipe (the code-test harness uses this to
tell "the tests finished" apart from "the program exited": see `data_pipeline/harness.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOBODY = 65534
SANDBOX_DIR = "/tmp/sandbox"  # the program's working directory inside the sandbox
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_REPORT_CAP = 16 * 1024


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
    report: str = ""  # what the program wrote on its report pipe (run_files with a secret), capped at 16 KiB

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def mode() -> str:
    """How programs are isolated here (raises SandboxUnavailable when they cannot be):
    "userns": the caller is not root; bubblewrap runs the program in an unprivileged user namespace;
    "nobody-userns": the caller is root; it drops to user nobody, then bubblewrap makes the user namespace;
    "nobody": root on a kernel without unprivileged user namespaces; bubblewrap runs as root and setpriv drops the
    program to nobody inside (the process limit is then shared by every sandbox running at the same moment)."""
    return _mode()


def check_available() -> None:
    _mode()


_TO_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
              "--bounding-set=-all", "--"]


@functools.cache
def _mode() -> str:
    root = os.geteuid() == 0
    missing = [t for t in ("bwrap", "prlimit", *(["setpriv"] if root else [])) if shutil.which(t) is None]
    if missing:
        raise SandboxUnavailable(f"code verification needs {', '.join(missing)} (Debian/Ubuntu: apt-get install "
                                 "bubblewrap util-linux)")
    probe = subprocess.run([*(_TO_NOBODY if root else []), "bwrap", "--unshare-user", "--unshare-pid",
                            "--unshare-net", "--ro-bind", "/", "/", "--proc", "/proc", "true"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if probe.returncode == 0:
        return "nobody-userns" if root else "userns"
    if root:
        return "nobody"
    said = (probe.stderr.strip().splitlines() or ["no message"])[-1]
    raise SandboxUnavailable(
        "code verification needs root or unprivileged user namespaces for bubblewrap, and this kernel refused them "
        f"(bwrap: {said}; enable with sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces>0 or, on "
        "Ubuntu, kernel.apparmor_restrict_unprivileged_userns=0)")


def _preexec(limits: Limits, nproc: bool):
    def apply():
        os.setsid()
        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        # SIGXCPU at the soft limit (the verdict can name the cause), SIGKILL a second later if it is ignored
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_procs, limits.max_procs))

    return apply


def _filesystem(python: str) -> list[str]:
    """bwrap arguments: the system directories read-only (symlinks kept as symlinks), plus the interpreter's prefix."""
    args: list[str] = []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    if not any(prefix == d or prefix.startswith(d + "/") for d in _SYSTEM_DIRS):
        args += ["--ro-bind", prefix, prefix]
    return args


def _command(python: str, script: str, extra_args: list[str], limits: Limits, how: str) -> list[str]:
    cmd = ["bwrap", *_filesystem(python), "--tmpfs", "/tmp", "--bind", "WORK", SANDBOX_DIR, "--chdir", SANDBOX_DIR,
           "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--die-with-parent", "--new-session",
           "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", SANDBOX_DIR,
           "--setenv", "PYTHONDONTWRITEBYTECODE", "1"]
    if how == "nobody":
        cmd += _TO_NOBODY
    else:  # the process count is limited inside the new user namespace, where only this sandbox's processes count
        cmd[1:1] = ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        cmd += ["prlimit", f"--nproc={limits.max_procs}:{limits.max_procs}", "--"]
        if how == "nobody-userns":
            cmd[:0] = _TO_NOBODY
    return cmd + [python, "-I", "-S", script, *extra_args]


def run_python(source: str, limits: Limits = Limits(), python: str | None = None) -> Result:
    """Run `source` as a script in the sandbox; passed = exit status 0 within the limits."""
    return run_files({"main.py": source}, "main.py", limits, python)


def run_files(files: dict[str, str], script: str, limits: Limits = Limits(), python: str | None = None,
              secret: bytes | None = None) -> Result:
    """Write `files` into a fresh working directory and run `python -I -S script` there in the sandbox.

    With `secret`, the program gets two more arguments: a file descriptor to read `secret` from (a pipe, written
    and closed before the program starts) and one to write a short report on (read into `Result.report`).
    """
    how = _mode()
    python = python or _system_python()
    base = Path(tempfile.mkdtemp(prefix="fusejax-sbx-"))  # the caller's: holds the logs and the program's `work`
    work = base / "work"
    pipes: list[int] = []
    try:
        work.mkdir()
        for name, text in files.items():
            (work / name).write_text(text)
        if how != "userns":
            os.chmod(base, 0o711)  # nobody starts bwrap in the nobody-userns mode: it must reach `work`
            for p in (work, *(work / name for name in files)):
                os.chown(p, NOBODY, NOBODY)
        extra, keep, report_r = [], (), None
        if secret is not None:
            secret_r, secret_w = os.pipe()
            report_r, report_w = os.pipe()
            pipes += [secret_r, secret_w, report_r, report_w]
            os.write(secret_w, secret)  # small: fits the pipe buffer
            os.close(secret_w)
            pipes.remove(secret_w)
            extra, keep = [str(secret_r), str(report_w)], (secret_r, report_w)
        cmd = _command(python, script, extra, limits, how)
        cmd[cmd.index("WORK")] = str(work)
        start = time.monotonic()
        with open(base / "out", "wb") as out, open(base / "err", "wb") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    preexec_fn=_preexec(limits, nproc=how == "nobody"), close_fds=True, pass_fds=keep,
                                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            for fd in keep:  # only the program holds them now: the report pipe reaches EOF when it is gone
                os.close(fd)
                pipes.remove(fd)
            status = None
            try:
                rc = _wait(proc, limits.wall_s)
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
        report = ""
        if report_r is not None:
            os.set_blocking(report_r, False)  # a writer that escaped the kill must not hang us
            try:
                report = os.read(report_r, _REPORT_CAP).decode("utf-8", "replace")
            except BlockingIOError:
                pass
        read = lambda p: p.read_bytes()[: limits.output_bytes].decode("utf-8", "replace")  # noqa: E731
        return Result(status, rc, read(base / "out"), read(base / "err"), seconds, report)
    finally:
        for fd in pipes:
            os.close(fd)
        shutil.rmtree(base, ignore_errors=True)


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    """Popen.wait(timeout) without its polling loop (sleeps of up to 50 ms, a third of a short test's run)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return proc.wait(timeout=timeout)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        return proc.wait()
    finally:
        os.close(pidfd)


def _system_python() -> str:
    """A Python that the sandboxed user can execute (interpreters under /root, e.g. pyenv's, are out of nobody's
    reach)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", os.path.realpath(sys.executable)):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) and not candidate.startswith("/root/"):
            return candidate
    raise SandboxUnavailable("no Python interpreter outside /root for the sandboxed user (install python3)")
