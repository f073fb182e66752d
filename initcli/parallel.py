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
from collections.abc import Callable, Iterable, Sequence
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
    a callable to report steps done, which reaches `on_progress` in this process. The
    workers and their failures are `run_streamed`'s.
    """
    jobs = min(check_jobs(jobs), len(calls))
    results: list[Any] = []

    def keep(result: Any) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    run_streamed(fn, calls, jobs, keep, on_progress, window=len(calls))
    return results


def run_streamed(fn: Callable[..., Any], calls: Iterable[dict], jobs: int, on_result: Callable[[Any], None],
                 on_progress: Callable[[int], None] | None = None, *, window: int = 0) -> None:
    """fn(**kwargs) for every kwargs of `calls`, an iterable read only as workers free up, in
    `jobs` spawned processes with one BLAS thread each; `on_result` gets the results in the
    order of `calls`. At most max(window, jobs) calls are read beyond the oldest result not
    yet delivered, so a stream of millions of tasks is never held.

    Each worker has a pipe of its own and one task at a time: no lock is shared between
    processes, so a worker killed at any moment (the OOM killer, a user) cannot leave the
    others or the parent waiting on a lock it held. A worker's exception is raised here at
    its place in the order (the results before it are delivered first, as in series); a
    worker that dies is an error naming --jobs; Ctrl-C, SIGTERM or an error kills every
    worker at once, and workers die with their parent even if it is killed outright.
    """
    with_progress = takes_progress(fn)
    if jobs <= 1:
        for kwargs in calls:
            with blas_threads_limited(1):
                result = fn(**kwargs, **({"progress": on_progress} if with_progress else {}))
            on_result(result)
        return
    from multiprocessing.connection import wait

    calls = iter(calls)
    window = max(window, jobs)
    context = get_context("spawn")  # fresh processes: forking would copy BLAS thread state
    workers: list[_Worker] = []
    try:
        with _one_thread_per_worker(), held():  # a signal now would leave workers half started
            workers = [_Worker(context, with_progress) for _ in range(jobs)]
        idle = list(reversed(workers))
        running: dict[_Worker, int] = {}  # worker → index of the call it runs
        done: dict[int, tuple[bool, Any]] = {}  # index → (failed, result or exception), not yet delivered
        read = delivered = 0
        exhausted = False
        while True:
            while idle and not exhausted and read - delivered < window:
                kwargs = next(calls, None)
                if kwargs is None:
                    exhausted = True
                    break
                worker = idle.pop()
                worker.send((fn, kwargs))
                running[worker] = read
                read += 1
            if not running:
                break
            ready = set(wait([w.connection for w in running] + [w.process.sentinel for w in running],
                             timeout=_POLL_SECONDS))
            for worker in list(running):
                if worker.connection in ready or worker.connection.poll():
                    kind, value = worker.receive()
                    if kind == "progress":
                        if on_progress is not None:
                            on_progress(value)
                        continue
                    done[running.pop(worker)] = (kind == "error", value)
                    idle.append(worker)
                elif worker.process.sentinel in ready:
                    raise _died()
            while delivered in done:
                failed, value = done.pop(delivered)
                if failed:
                    raise value
                delivered += 1
                on_result(value)
    except BaseException:  # Ctrl-C, SIGTERM (raised as an exception by the CLI) or an error
        # SIGKILL, not SIGTERM: a worker still starting up would print a traceback
        for worker in workers:
            worker.kill()
        raise
    for worker in workers:
        worker.stop()


def _died() -> InitcliError:
    return InitcliError("jobs", "a worker process died (killed from outside, or out of memory); "
                                "try fewer --jobs or a smaller run")


class _Worker:
    """One spawned process and the parent's end of its pipe."""

    def __init__(self, context, with_progress: bool) -> None:
        self.connection, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_serve, args=(child, os.getpid(), with_progress), daemon=True)
        self.process.start()
        child.close()  # the child's end lives in the child only: its death is this end's EOF

    def send(self, task: tuple[Callable[..., Any], dict]) -> None:
        try:
            self.connection.send(task)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise _died() from None

    def receive(self) -> tuple[str, Any]:
        try:
            return self.connection.recv()
        except (EOFError, ConnectionResetError, OSError):
            raise _died() from None

    def stop(self) -> None:
        with suppress(OSError, ValueError):
            self.connection.send(None)
        self.process.join(timeout=10)
        self.kill()

    def kill(self) -> None:
        with suppress(OSError, ValueError, AttributeError):
            if self.process.exitcode is None:
                self.process.kill()
            self.process.join(timeout=10)
        with suppress(OSError):
            self.connection.close()


def _serve(connection, parent: int, with_progress: bool) -> None:
    """A worker's life: tasks from its pipe until None or the pipe closes, each answered by
    ("result", value) or ("error", exception), after any ("progress", steps) it reports."""
    _start_worker(parent)

    def report(steps: int) -> None:
        with suppress(OSError, ValueError):  # the parent is gone: nothing to tell
            connection.send(("progress", steps))

    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        fn, kwargs = task
        try:
            message = ("result", fn(**kwargs, **({"progress": report} if with_progress else {})))
        except Exception as exc:  # raised in the parent, at its place in the order
            message = ("error", exc)
        try:
            connection.send(message)
        except (OSError, ValueError):
            return
        except Exception as exc:  # a result or exception that does not pickle
            connection.send(("error", RuntimeError(f"a worker's {message[0]} could not be sent back: {exc}")))


def _start_worker(parent: int) -> None:
    """Ctrl-C reaches the whole process group: the parent answers it, the workers must not
    each print a traceback. A worker must not outlive its parent: on Linux the kernel kills
    it when the parent dies (PR_SET_PDEATHSIG), however the parent died."""
    import signal

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
