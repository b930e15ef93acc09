"""Shared timing helpers for the benchmarks: interleaved repetitions, wall and CPU time."""

from __future__ import annotations

import statistics
import time


def interleaved(fns: dict, warmup: int, iters: int) -> dict[str, tuple[float, float]]:
    """{name: fn} -> {name: (median wall seconds, median process CPU seconds)} per call.

    The functions alternate within each repetition, so load from other processes on a shared machine hits all of
    them alike; compare their ratios, not the absolute figures of different runs. CPU time (all threads of this
    process) is less sensitive to being descheduled than wall time.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for i in range(iters):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
        print(f"  repetition {i + 1}/{iters}: " + ", ".join(f"{n} {wall[n][-1]:.2f} s" for n in fns), flush=True)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in fns}


def median_time(fn, warmup: int, iters: int) -> float:
    """Median wall time of fn() over `iters` runs after `warmup` runs."""
    return interleaved({"fn": fn}, warmup, iters)["fn"][0]
