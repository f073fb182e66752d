"""How many threads numpy's BLAS may use, set from inside the process.

Two reasons to pin it. Many small matrix products or LAPACK calls (one Jacobian per input,
one SVD per layer) run far slower under a multithreaded BLAS on a busy machine than on one
thread: the threads wait for each other more than they work. And a product's rounding can
depend on how BLAS splits it across threads, so runs that must give the same bytes whatever
`--jobs` is (compare, train, sweep points) each run on one thread.

The BLAS library numpy loaded is found in /proc/self/maps and driven through its own
`*_set_num_threads` entry point (the mechanism threadpoolctl uses), so no extra dependency is
needed. Where no known BLAS is found (another OS, another BLAS) pinning does nothing, and the
environment variables set for worker processes are the only control.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Entry points of the BLAS builds numpy ships or links: OpenBLAS (plain, 64-bit-integer
# suffixed, and the scipy-openblas wheels numpy ≥ 2 bundles), MKL and BLIS.
_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads", "MKL_Set_Num_Threads", "bli_thread_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
            "openblas_get_num_threads", "MKL_Get_Max_Threads", "bli_thread_get_num_threads")
_LIBRARY_NAMES = ("openblas", "mkl_rt", "libblis")


@functools.lru_cache(maxsize=1)
def _controls() -> tuple[tuple[Callable[[int], object], Callable[[], int]], ...]:
    """(set, get) pairs for every BLAS library loaded in this process."""
    import numpy  # noqa: F401  (loads the BLAS library whose threads are pinned)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return ()
    controls = []
    for path in sorted(paths):
        if not any(name in path.rsplit("/", 1)[-1].lower() for name in _LIBRARY_NAMES):
            continue
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for setter, getter in zip(_SETTERS, _GETTERS):
            if hasattr(library, setter) and hasattr(library, getter):
                set_fn, get_fn = getattr(library, setter), getattr(library, getter)
                set_fn.restype, get_fn.restype = None, ctypes.c_int
                set_fn.argtypes = [ctypes.c_int]
                controls.append((set_fn, get_fn))
                break
    return tuple(controls)


def blas_threads() -> int | None:
    """The thread count of numpy's BLAS, or None where it cannot be read."""
    controls = _controls()
    return int(controls[0][1]()) if controls else None


def set_blas_threads(count: int) -> None:
    for set_fn, _ in _controls():
        set_fn(int(count))


@contextmanager
def blas_threads_limited(count: int = 1) -> Iterator[None]:
    """Run the body with numpy's BLAS on at most `count` threads, then restore the count."""
    controls = _controls()
    saved = [int(get_fn()) for _, get_fn in controls]
    try:
        for (set_fn, _), before in zip(controls, saved):
            set_fn(min(int(count), before))
        yield
    finally:
        for (set_fn, _), before in zip(controls, saved):
            set_fn(before)


def single_threaded(fn: Callable) -> Callable:
    """Decorator: `fn` runs with numpy's BLAS on one thread."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_threads_limited(1):
            return fn(*args, **kwargs)
    return wrapper
