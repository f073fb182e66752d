"""Ctrl-C, SIGTERM and SIGHUP as exceptions, and short stretches where they must wait.

The CLI installs handlers (`install`) that raise KeyboardInterrupt for SIGINT and
`Terminated` for SIGTERM/SIGHUP in the main thread, so that every `finally` runs: workers are
stopped, temporary files removed. A few steps must not be cut in half (creating a temporary
file and recording its name, renaming it over the target, starting a process pool); inside
`held()` a signal is recorded and raised when the stretch ends. Blocking the signal with
pthread_sigmask would not do: it blocks only the calling thread, BLAS threads still take the
signal, and child processes inherit the mask.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_held = 0
_pending: list[int] = []
_installed = False


class Terminated(BaseException):
    """SIGTERM or SIGHUP: a BaseException, so that `except Exception` does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _handler(signum, _frame) -> None:
    if _held:
        _pending.append(signum)
        return
    _raise_for(signum)


def install() -> None:
    """Handlers for SIGINT, SIGTERM and SIGHUP (main thread only)."""
    global _installed
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _handler)
    _installed = True


@contextmanager
def held() -> Iterator[None]:
    """Delay the signals above until the body is done (a no-op without `install`)."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if _held == 0 and _pending:
            signum = _pending[0]
            _pending.clear()
            _raise_for(signum)
