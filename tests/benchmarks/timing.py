"""Timing shared by the benchmark scripts (not collected by pytest: no test_ prefix)."""

from __future__ import annotations

import statistics
import time


def median_times(functions, repeats):
    """Median seconds of each callable over `repeats` rounds, the callables interleaved within
    a round so that the machine's drift hits all alike; None for a callable given as None."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            if fn is None:
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) if t else None for name, t in times.items()}
