"""Run independent pieces of work in parallel processes, with the same results as in series."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

from .errors import InitcliError

_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_jobs() -> int:
    return os.cpu_count() or 1


def check_jobs(jobs: int | None) -> int:
    if jobs is None:
        return default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InitcliError("jobs", f"must be a positive integer, got {jobs!r}")
    return jobs


@contextmanager
def _threads_per_worker(count: int):
    """Children read their BLAS thread count from the environment when they import numpy."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(count)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_all(fn: Callable[..., Any], calls: Sequence[dict], jobs: int | None = None,
            on_result: Callable[[Any], None] | None = None) -> list[Any]:
    """[fn(**kwargs) for kwargs in calls], in `jobs` processes when that is more than one.

    Results come back in the order of `calls`; `on_result` sees each as it arrives. Every call is deterministic (its own seed)
    and its arithmetic does not depend on the BLAS thread count (matrix products split
    their outputs, not their sums, across threads; see initcli.stats), so the results equal
    a serial run's to the last bit. The workers share the cores instead of each starting a
    BLAS thread per core; fresh (spawned) processes avoid forking BLAS threads.
    """
    jobs = min(check_jobs(jobs), len(calls))
    if jobs <= 1:
        return [fn(**kwargs) for kwargs in calls]
    with _threads_per_worker(max(1, default_jobs() // jobs)):
        pool = get_context("spawn").Pool(jobs, initializer=_ignore_interrupts)
    try:
        results = []
        for result in pool.imap(_call_packed, [(fn, kwargs) for kwargs in calls]):  # in order, as they finish
            results.append(result)
            if on_result is not None:
                on_result(result)
    except BaseException:
        pool.terminate()  # Ctrl-C (or an error) stops every worker at once
        pool.join()
        raise
    pool.close()
    pool.join()
    return results


def _call_packed(packed: tuple[Callable[..., Any], dict]) -> Any:
    fn, kwargs = packed
    return fn(**kwargs)


def _ignore_interrupts() -> None:
    """Ctrl-C reaches the whole process group: the parent answers it, the workers must not
    each print a traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
