"""Run independent pieces of work in parallel processes, with the same bytes as in series.

The rule that makes `--jobs` change nothing: every call runs with numpy's BLAS on one thread,
in series as in a worker. A matrix product's rounding can depend on how BLAS splits it
across threads, so a run on two threads and a run on one may differ in the last bits; with
one thread per call, the process count cannot change a bit. The cores are used by running
calls side by side instead.
"""

from __future__ import annotations

import inspect
import os
import queue as queue_module
from collections.abc import Callable, Sequence
from contextlib import contextmanager, suppress
from multiprocessing import get_context
from typing import Any

from .errors import InitcliError
from .interrupts import held
from .threads import blas_threads_limited, set_blas_threads

_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_POLL_SECONDS = 0.1  # how often the parent looks at the workers' progress while it waits
MAX_JOBS = 256


def default_jobs() -> int:
    return os.cpu_count() or 1


def check_jobs(jobs: int | None) -> int:
    if jobs is None:
        return default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1 or jobs > MAX_JOBS:
        raise InitcliError("jobs", f"must be an integer from 1 to {MAX_JOBS}, got {jobs!r}")
    return jobs


@contextmanager
def _one_thread_per_worker():
    """Children read their BLAS thread count from the environment when they import numpy."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def takes_progress(fn: Callable[..., Any]) -> bool:
    return "progress" in inspect.signature(fn).parameters


def run_all(fn: Callable[..., Any], calls: Sequence[dict], jobs: int | None = None,
            on_result: Callable[[Any], None] | None = None,
            on_progress: Callable[[int], None] | None = None) -> list[Any]:
    """[fn(**kwargs) for kwargs in calls], in `jobs` processes when that is more than one.

    Every call runs with numpy's BLAS on one thread (see the module docstring), so the
    results equal a serial run's to the last bit. Results come back in the order of `calls`;
    `on_result` sees each as it arrives. When `fn` takes a `progress` keyword, each call gets
    a callable to report steps done, which reaches `on_progress` in this process (from
    workers through a queue). A worker's exception is raised here; Ctrl-C, SIGTERM or an
    error stops every worker at once, and workers die with their parent even if it is killed
    outright.
    """
    jobs = min(check_jobs(jobs), len(calls))
    with_progress = takes_progress(fn)
    if jobs <= 1:
        results = []
        for kwargs in calls:
            extra = {"progress": on_progress} if with_progress else {}
            with blas_threads_limited(1):
                result = fn(**kwargs, **extra)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results
    context = get_context("spawn")  # fresh processes: forking would copy BLAS thread state
    progress_queue = context.SimpleQueue() if with_progress else None
    pool = None
    try:
        with _one_thread_per_worker(), held():  # a signal now would leave workers half started
            pool = context.Pool(jobs, initializer=_start_worker, initargs=(progress_queue, os.getpid()))
        results = []
        workers = _worker_pids(pool)
        pending = pool.imap(_call_packed, [(fn, kwargs) for kwargs in calls])  # in order, as they finish
        while len(results) < len(calls):
            try:
                result = pending.next(timeout=_POLL_SECONDS)
            except StopIteration:
                break
            except Exception as exc:
                if type(exc).__name__ != "TimeoutError":
                    raise
                _drain(progress_queue, on_progress)
                if not workers <= _worker_pids(pool):
                    # a pool replaces a dead worker but never reruns its task: waiting would be forever
                    raise InitcliError("jobs", "a worker process died (killed from outside, or out of memory); "
                                               "try fewer --jobs or a smaller run") from None
                continue
            _drain(progress_queue, on_progress)
            results.append(result)
            if on_result is not None:
                on_result(result)
    except BaseException:  # Ctrl-C, SIGTERM (raised as an exception by the CLI) or an error
        # SIGKILL, not SIGTERM: a worker still starting up would print a traceback on finding
        # the pool's queues gone. terminate() stops the pool from replacing workers before it
        # ends them, so the kill goes through it.
        if pool is not None:
            for worker in getattr(pool, "_pool", ()):
                worker.terminate = worker.kill
            pool.terminate()
            pool.join()
        raise
    pool.close()
    pool.join()
    _drain(progress_queue, on_progress)
    return results


def _worker_pids(pool) -> set[int]:
    """The pool's worker processes; workers never exit on their own here (no maxtasksperchild)."""
    return {worker.pid for worker in getattr(pool, "_pool", ())}


def _drain(progress_queue, on_progress: Callable[[int], None] | None) -> None:
    if progress_queue is None:
        return
    while not progress_queue.empty():
        steps = progress_queue.get()
        if on_progress is not None:
            on_progress(steps)


_WORKER_QUEUE = None


def _report(steps: int) -> None:
    with suppress(OSError, ValueError, queue_module.Full):  # the parent is gone: nothing to tell
        _WORKER_QUEUE.put(steps)


def _call_packed(packed: tuple[Callable[..., Any], dict]) -> Any:
    fn, kwargs = packed
    extra = {"progress": _report} if _WORKER_QUEUE is not None else {}
    return fn(**kwargs, **extra)


def _start_worker(progress_queue, parent: int) -> None:
    """Ctrl-C reaches the whole process group: the parent answers it, the workers must not
    each print a traceback. A worker must not outlive its parent: on Linux the kernel kills
    it when the parent dies (PR_SET_PDEATHSIG), however the parent died."""
    import signal

    global _WORKER_QUEUE
    _WORKER_QUEUE = progress_queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    set_blas_threads(1)
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:  # before this, a parent killed outright leaves the worker waiting on a queue it also holds
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect: we were adopted
        os._exit(1)
