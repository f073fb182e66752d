"""Timing shared by the benchmark scripts (not collected by pytest: no test_ prefix)."""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

from initcli.threads import blas_threads_limited


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


@contextmanager
def one_thread():
    """numpy's BLAS and torch (when installed) on one thread."""
    try:
        import torch
    except ImportError:
        torch = None
    saved = torch.get_num_threads() if torch is not None else None
    with blas_threads_limited(1):
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(saved)
