"""Timing shared by the benchmark scripts (not collected by pytest: no test_ prefix)."""

from __future__ import annotations

import statistics
import time


def median_times(functions, repeats, clock=time.perf_counter):
    """Median seconds of each callable over `repeats` rounds, the callables interleaved within
    a round so that the machine's drift hits all alike; None for a callable given as None.
    `clock` is wall time by default; time.process_time gives this process's CPU time, which
    other processes' load does not inflate (for runs on one thread it is their wall time on an
    idle machine)."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            if fn is None:
                continue
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) if t else None for name, t in times.items()}
