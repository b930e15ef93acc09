"""Shared timing helper for the benchmarks."""

import statistics
import time


def median_time(fn, warmup: int, iters: int) -> float:
    """Median wall time of fn() over `iters` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
