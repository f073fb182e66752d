"""Where a sweep's tasks run: processes on this machine, or a dask.distributed cluster.

Both executors have one small interface:

- `workers`: how many tasks run side by side (what tasks are cut for);
- `here`: how many of them run on this machine (what the memory guard multiplies by);
- `run(fn, calls, on_result, on_progress=None, *, connect_seconds=None)`: fn(**kwargs) for
  every kwargs of `calls`, an iterable read lazily, with a bounded number of tasks in flight,
  so that a grid of millions of points is never held whole. `on_result` sees each result in
  this process as it arrives. A result is sized (one item per step): an executor that cannot
  hear from its workers reports len(result) steps to `on_progress` when a task ends; the
  local one passes `fn` a `progress` keyword when it takes one. `connect_seconds`: how long a
  cluster may take to answer (executors that connect to nothing ignore it).

Tasks carry their own seeds, so which executor ran them, where and in what order changes no
byte of a result.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, Protocol

from .errors import InitcliError

CONNECT_SECONDS = 5  # how long a --scheduler may take to answer before the sweep gives up
TASKS_PER_WORKER = 4  # read ahead per worker: here, results waiting their turn; on Dask, tasks in flight


class Executor(Protocol):
    @property
    def workers(self) -> int: ...

    @property
    def here(self) -> int: ...

    def run(self, fn: Callable[..., Any], calls: Iterable[dict], on_result: Callable[[Any], None],
            on_progress: Callable[[int], None] | None = None, *, connect_seconds: float | None = None) -> None: ...


# -- processes here -----------------------------------------------------------------------------


@dataclass
class LocalExecutor:
    """Processes on this machine (spawned, one BLAS thread each, as `initcli.parallel.run_all`'s),
    fed from `calls` as they finish, results delivered in the order of `calls`."""

    jobs: int = 1

    @property
    def workers(self) -> int:
        return self.jobs

    @property
    def here(self) -> int:
        """Runs that go at once on this machine: what the memory guard multiplies by."""
        return self.jobs

    def run(self, fn: Callable[..., Any], calls: Iterable[dict], on_result: Callable[[Any], None],
            on_progress: Callable[[int], None] | None = None, *, connect_seconds: float | None = None) -> None:
        from .parallel import run_streamed

        calls = iter(calls)
        head = list(islice(calls, self.jobs))  # fewer tasks than jobs: no idle processes
        jobs = min(self.jobs, len(head))
        # TASKS_PER_WORKER·jobs read ahead at most: nothing is kept once on_result has it
        run_streamed(fn, chain(head, calls), jobs, on_result, on_progress, window=TASKS_PER_WORKER * jobs)


# -- dask.distributed ---------------------------------------------------------------------------


@dataclass
class DaskExecutor:
    """dask.distributed: a running scheduler (`scheduler` = tcp://host:port) or, without one,
    a local cluster of `jobs` worker processes with one thread each. A task whose worker is
    lost is rerun by the scheduler; one that raises is retried `retries` times."""

    scheduler: str | None = None
    jobs: int = 1
    retries: int = 2

    @property
    def workers(self) -> int:
        return self.jobs

    @property
    def here(self) -> int:
        """A local cluster's workers all run here; a scheduler's run on their own machines,
        each of which must hold one run, which is all this machine can check."""
        return self.jobs if self.scheduler is None else 1

    def run(self, fn: Callable[..., Any], calls: Iterable[dict], on_result: Callable[[Any], None],
            on_progress: Callable[[int], None] | None = None, *, connect_seconds: float | None = None) -> None:
        from .optional import require

        distributed = require("distributed", "executor", "sweep --executor dask")
        cluster = None
        try:
            if self.scheduler is None:
                with _workers_deaf_to_ctrl_c():
                    cluster = distributed.LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, silence_logs=40)
                client = distributed.Client(cluster)
            else:
                client = connect(distributed, self.scheduler, connect_seconds)
            try:
                self._submit_as_they_finish(distributed, client, fn, iter(calls), on_result, on_progress)
            finally:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    def _submit_as_they_finish(self, distributed, client, fn, calls: Iterator[dict], on_result, on_progress) -> None:
        """A few tasks per thread of the cluster out at once, the next one sent as one ends."""
        threads = sum(client.nthreads().values()) or self.jobs
        finished = distributed.as_completed()
        for kwargs in islice(calls, TASKS_PER_WORKER * max(threads, self.jobs)):
            finished.add(client.submit(fn, **kwargs, retries=self.retries, pure=False))
        for future in finished:
            result = future.result()
            on_result(result)
            if on_progress is not None:
                on_progress(len(result))
            for kwargs in islice(calls, 1):
                finished.add(client.submit(fn, **kwargs, retries=self.retries, pure=False))


@contextmanager
def _workers_deaf_to_ctrl_c() -> Iterator[None]:
    """Ctrl-C reaches the whole process group, and a local cluster's workers would each print a
    KeyboardInterrupt traceback; the parent answers it by closing the cluster. A process
    inherits an ignored SIGINT through exec (Python and asyncio then leave it ignored), so it
    is ignored while they start: a Ctrl-C in those seconds is missed, SIGTERM waits for them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from .interrupts import held

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held():
            yield
    finally:
        signal.signal(signal.SIGINT, before)


def check_scheduler(address: str) -> tuple[str, int] | None:
    """A scheduler address checked before any work: (host, port) for tcp:// and tls:// (or no
    protocol, which Dask reads as tcp), None for the protocols left to Dask (ucx://, …)."""
    from urllib.parse import urlsplit

    protocol, _, rest = str(address).strip().rpartition("://")
    if protocol not in ("", "tcp", "tls"):
        return None
    try:
        parts = urlsplit("//" + rest)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None or parts.path or parts.query:
        raise InitcliError("scheduler", f"must be an address such as tcp://host:8786, got '{address}'")
    return host, port


def probe(address: str, seconds: float | None = None) -> None:
    """Refuse a tcp:// or tls:// scheduler address that nothing answers at, at once: Dask's
    client would retry a refused connection until its timeout."""
    import socket

    seconds = CONNECT_SECONDS if seconds is None else seconds
    where = check_scheduler(address)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=seconds).close()
    except OSError as exc:
        why = exc.strerror or (f"no answer in {seconds:g} s" if isinstance(exc, TimeoutError) else type(exc).__name__)
        raise InitcliError("scheduler", f"cannot reach the Dask scheduler at {address}: {why}") from None


def connect(distributed, address: str, seconds: float | None = None):
    """A dask.distributed Client of the scheduler at `address`, or one InitcliError within
    about 2·`seconds` (CONNECT_SECONDS). Dask's own timeout covers the TCP connection only: a
    server that accepts it and never answers Dask's handshake would hold the client forever,
    so it is made in a thread that is given up on (left to die with the connection)."""
    seconds = CONNECT_SECONDS if seconds is None else seconds
    probe(address, seconds)
    made: dict = {}

    def make() -> None:
        try:
            made["client"] = distributed.Client(address, timeout=f"{seconds}s")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            made["error"] = exc

    thread = threading.Thread(target=make, name="initcli-dask-connect", daemon=True)
    thread.start()
    thread.join(2 * seconds)
    error = made.get("error")
    if thread.is_alive() or isinstance(error, OSError):  # OSError: Dask's connect timeout
        raise InitcliError("scheduler", f"no Dask scheduler answered at {address} within {2 * seconds:g} s")
    if isinstance(error, TypeError) and "ssl_context" in str(error):
        # Dask's TLS connector wants an SSL context, which it builds only from its configuration
        raise InitcliError("scheduler", f"connecting to {address} needs TLS settings, and Dask has none: set "
                                        "distributed.comm.tls.ca-file, .client.cert and .client.key in Dask's "
                                        "configuration (e.g. DASK_DISTRIBUTED__COMM__TLS__CA_FILE)")
    if error is not None:  # another server's bytes read as a Dask message length ask for exabytes
        raise InitcliError("scheduler", f"something answers at {address}, but not a Dask scheduler")
    return made["client"]


def make_executor(name: str = "local", *, jobs: int | None = None, scheduler: str | None = None) -> Executor:
    from .parallel import check_jobs

    key = str(name).strip().lower()
    if key == "local":
        if scheduler is not None:
            raise InitcliError("scheduler", "only applies with --executor dask")
        return LocalExecutor(check_jobs(jobs))
    if key == "dask":
        if scheduler is not None:
            check_scheduler(scheduler)
        return DaskExecutor(scheduler, check_jobs(jobs))
    raise InitcliError("executor", f"unknown executor '{name}'; choose from local, dask")
