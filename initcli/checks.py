"""Input checks shared by every command that builds a stack, and the memory guard.

It imports only the error type and `schemes.check_number`, so that every domain module
(propagation, sampling, weight files, training, sweeps) can use it without an import circle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .engines.mlp import MEMORY_OPTIONS as STACK_OPTIONS  # the MLP engine declares what shrinks its runs
from .errors import InitcliError
from .schemes import check_number

DTYPES = ("float32", "float64")

# Far beyond any run that fits in memory, but small enough that sizes and loops over them
# can be formed before the memory guard gives its answer in GiB.
MAX_DEPTH = 100_000
MAX_SIZE = 10**9


def positive_int(param: str, value, maximum: int = MAX_SIZE) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InitcliError(param, f"must be a positive integer, got {value!r}")
    if value > maximum:
        raise InitcliError(param, f"must be at most {maximum:,}, got {value:,}")
    return int(value)


def stack_sizes(sizes: Sequence[int] | None = None, depth: int | None = None, width: int | None = None,
                *, default_depth: int = 10, default_width: int = 256) -> tuple[int, ...]:
    """Layer sizes [n_0, n_1, …, n_L]: `sizes` as given, or depth+1 copies of width."""
    if sizes is not None:
        if depth is not None or width is not None:
            raise InitcliError("sizes", "give either --sizes or --depth/--width, not both")
        if len(sizes) > MAX_DEPTH + 1:
            raise InitcliError("sizes", f"must list at most {MAX_DEPTH + 1:,} sizes, got {len(sizes):,}")
        sizes = tuple(positive_int("sizes", s) for s in sizes)
        if len(sizes) < 2:
            raise InitcliError("sizes", f"needs at least two sizes (input and one layer), got {list(sizes)}")
        return sizes
    depth = positive_int("depth", default_depth if depth is None else depth, MAX_DEPTH)
    width = positive_int("width", default_width if width is None else width)
    return (width,) * (depth + 1)


def check_dtype(dtype: str) -> np.dtype:
    name = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype.strip().lower()
    if name not in DTYPES:
        raise InitcliError("dtype", f"unknown dtype '{dtype}'; choose from {', '.join(DTYPES)}")
    return np.dtype(name)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InitcliError("seed", f"must be an integer ≥ 0, got {seed!r}")
    return int(seed)


def check_std(param: str, value) -> float:
    """A standard deviation: a finite number ≥ 0."""
    return check_number(param, value)


# -- memory guard ---------------------------------------------------------------------------


def available_bytes() -> int | None:
    """Memory the run may use: MemAvailable from /proc/meminfo, where there is one, and no
    more than the address space `ulimit -v` leaves this process."""
    physical = _physical_available()
    room = _address_space_left()
    if physical is None or room is None:
        return physical if room is None else room
    return min(physical, room)


def _address_space_left() -> int | None:
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError, AttributeError):
        return None
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return max(0, limit - int(line.split()[1]) * 1024)
    except OSError:
        pass
    return limit


def _physical_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None



def check_memory(needed: int, available: int | None = None, *, dtype: np.dtype | None = None,
                 options: Sequence[str] = STACK_OPTIONS) -> None:
    """Refuse, before allocating, a run that would not fit in 90% of available memory.
    `options` are the command's options that make the run smaller, named in the refusal."""
    available = available_bytes() if available is None else available
    if available is not None and needed > 0.9 * available:
        lower = ", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else options[0]
        raise InitcliError(
            None,
            f"this run needs about {needed / 2**30:.1f} GiB of memory but {available / 2**30:.1f} GiB "
            f"are available; lower {lower}"
            + (" (or use --dtype float32)" if dtype is not None and np.dtype(dtype).itemsize > 4 else ""),
        )
