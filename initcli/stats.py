"""Per-layer statistics, computed in one or two passes over the data.

Each statistic has a fast path that reads a float32 array once or twice with float32 row
sums accumulated in float64, and falls back to an exact float64 computation, a block at a
time, where the fast path could lose precision (a mean that dwarfs the spread) or overflow
(squares of values past 1e19 in float32). So the numbers are float64-accurate for every
input, and the common case costs little more than reading the array.

Reductions over a vector use numpy's own loops (einsum, pairwise sums), never BLAS level-1
(dot, vdot): OpenBLAS splits those across threads, so their rounding would depend on the
thread count, and `--jobs` must give the same bytes as a serial run.
"""

from __future__ import annotations

import functools
import math

import numpy as np

STAT_BLOCK = 1 << 16  # elements cast to float64 at a time on the exact path (memory estimates count it)
# Above this mean²/variance the one-pass E[x²] − E[x]² could lose more than ~1e-6 relative
# in float32 row sums: use the exact two-pass path.
_CANCELLATION = 16.0
# effective_rank reads at most this many inputs (the first ones of the batch): its Gram
# matrix then costs at most 256²·width, against batch·width² for each of a layer's products.
RANK_INPUTS = 256


def _quiet(fn):
    """Overflow here is detected and handled by the fallbacks, so numpy need not warn of it."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(*args, **kwargs)
    return wrapper


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)


@_quiet
def exact_moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and variance in float64, two-pass, a block at a time (no full float64 copy)."""
    flat = x.reshape(-1)
    if flat.size == 0:
        return math.nan, math.nan
    mean = flat.mean(dtype=np.float64)
    total = 0.0
    for start in range(0, flat.size, STAT_BLOCK):
        block = flat[start:start + STAT_BLOCK].astype(np.float64)
        block -= mean
        total += float(np.einsum("i,i->", block, block))
    return float(mean), total / flat.size


@_quiet
def moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and variance of every entry of x, float64-accurate."""
    if x.size == 0:
        return math.nan, math.nan
    rows = _rows(x)
    total = _row_sums(rows)
    total_sq = float(np.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64))
    n = x.size
    mean = total / n
    var = total_sq / n - mean * mean
    if not (math.isfinite(total) and math.isfinite(total_sq)) or var <= 0 or mean * mean > _CANCELLATION * var:
        return exact_moments(x)
    return mean, var


def _row_sums(rows: np.ndarray) -> float:
    """Σ of every entry: per-row sums by a BLAS matrix–vector product (the fastest single read
    of a large array), added up in float64."""
    return float((rows @ np.ones(rows.shape[1], dtype=rows.dtype)).sum(dtype=np.float64))


@_quiet
def all_finite(x: np.ndarray) -> bool:
    """Whether x holds no inf or nan; a sum first, the elementwise check only if it is not finite
    (a sum of huge finite values can overflow)."""
    return math.isfinite(_row_sums(_rows(x))) or bool(np.isfinite(x).all())


@_quiet
def dead_fraction(deriv: np.ndarray) -> float:
    """Share of units (columns) whose derivative is 0 for every input (row)."""
    if deriv.shape[0] == 0:
        return math.nan
    candidates = np.flatnonzero(deriv.max(axis=0) == 0)
    if candidates.size == 0:
        return 0.0
    dead = np.count_nonzero(deriv[:, candidates].min(axis=0) == 0)
    return dead / deriv.shape[1]


@_quiet
def effective_rank(acts: np.ndarray, max_inputs: int | None = RANK_INPUTS) -> float:
    """Participation ratio (tr C)²/tr(C²) of the centered covariance of acts (inputs × units),
    over the first `max_inputs` inputs (all with None).

    tr(C²) = ‖AᵀA‖²_F = ‖AAᵀ‖²_F for centered A, so the smaller Gram matrix serves, formed in
    the array's dtype (float32: BLAS syrk) and summed in float64. The ratio is scale-free;
    where float32 would overflow, A is scaled by its largest entry in float64 instead.
    0 when C = 0 (every input gives the same activations).
    """
    sample = acts if max_inputs is None else acts[:max_inputs]
    centered = sample - sample.mean(axis=0, dtype=np.float64).astype(sample.dtype)
    gram = centered @ centered.T if centered.shape[0] <= centered.shape[1] else centered.T @ centered
    trace = float(np.trace(gram, dtype=np.float64))
    if not math.isfinite(trace):
        return _effective_rank_scaled(sample)
    if trace == 0:
        return 0.0
    frobenius_sq = float(np.einsum("ij,ij->", gram, gram, dtype=np.float64))
    if not math.isfinite(frobenius_sq):
        return _effective_rank_scaled(sample)
    return trace * trace / frobenius_sq


def _effective_rank_scaled(sample: np.ndarray) -> float:
    centered = sample.astype(np.float64)
    centered -= centered.mean(axis=0)
    largest = max(centered.max(), -centered.min()) if centered.size else 0.0
    if not math.isfinite(largest):
        return math.nan
    if largest == 0:
        return 0.0
    centered /= largest
    gram = centered @ centered.T if centered.shape[0] <= centered.shape[1] else centered.T @ centered
    trace = np.trace(gram)
    return float(trace * trace / np.einsum("ij,ij->", gram, gram))


@_quiet
def mean_input_cosine(acts: np.ndarray) -> float:
    """Mean cosine similarity between the activation vectors of distinct inputs.

    With unit rows u_i: Σ_{i≠j} u_i·u_j = ‖Σ u_i‖² − m, and Σ u_i = Aᵀ(1/‖a_i‖) is one
    matrix–vector product, so no batch×batch matrix is formed. Inputs whose activations are
    all zero have no direction and are left out; nan when fewer than two remain.
    """
    norms_sq = np.einsum("ij,ij->i", acts, acts).astype(np.float64)
    if not np.isfinite(norms_sq).all():
        return _mean_input_cosine_scaled(acts)
    keep = norms_sq > 0
    m = int(np.count_nonzero(keep))
    if m < 2:
        return math.nan
    inverse = np.zeros_like(norms_sq)
    inverse[keep] = 1 / np.sqrt(norms_sq[keep])
    total = (acts.T @ inverse.astype(acts.dtype)).astype(np.float64)
    cosine = float((np.einsum("i,i->", total, total) - m) / (m * (m - 1)))
    return min(1.0, max(-1.0, cosine))  # float32 rounding can step past ±1 by ~1e-7


def _mean_input_cosine_scaled(acts: np.ndarray) -> float:
    a = acts.astype(np.float64)
    largest = max(a.max(), -a.min()) if a.size else 0.0
    if not math.isfinite(largest) or largest == 0:
        return math.nan
    a /= largest
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))
    m = int(np.count_nonzero(norms))
    if m < 2:
        return math.nan
    a /= np.where(norms > 0, norms, 1.0)[:, None]
    total = a.sum(axis=0)
    return float((np.einsum("i,i->", total, total) - m) / (m * (m - 1)))
