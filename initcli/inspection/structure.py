"""Tensors recognised exactly rather than by their statistics: orthogonal matrices (W·Wᵀ = g²·I
on the short side, within the dtype's rounding), value·I and value·dirac."""

from __future__ import annotations

import math

import numpy as np

from .roles import torch_shape
from .tensor_stats import Stats

# The orthogonality test. Let V hold s vectors of the short side (length L) and E = G/c − I,
# G = V·Vᵀ, c = mean(diag G) = g². For a Gaussian matrix each off-diagonal of E is ≈ N(0, 1/L)
# and each diagonal ≈ N(0, 2/L): E's root mean square is ≈ 1/√L. For an orthogonal matrix
# rounded to the dtype, entries q(1 + δ) with |δ| ≤ eps (truncation; rounding to nearest is
# half), sd(δ) ≤ eps/√3, and entries of size ~1/√L (Σq⁴ ≈ 3/L):
#   off-diagonal Σ q_i q_j (δ_i + δ_j): sd ≤ √2·eps/√(3L);  diagonal 2Σ q² δ: sd ≤ 2·eps/√L,
# so E's RMS ≤ ρ/√L, ρ = eps·√(2/3 + 4/s); the float32 QR behind orthogonal_ adds ≈ 1.4·2⁻²⁴·√L
# (measured; 4× that is allowed). Measured ρ: bf16 0.002-0.003, fp8 e4m3 0.04 (0.23 once its
# entries fall among its subnormals, L ≳ 2¹²), e5m2 0.075 — the bound holds in each.
# A matrix is orthogonal when RMS(E)·√L ≤ τ = min(4ρ, 0.5): four times the rounding, never
# above half a Gaussian's. A Gaussian passes only if χ²_k/k < τ² (k ≈ s(s+1)/2 independent
# entries): by Chernoff with probability ≤ (τ²·e^(1−τ²))^(k/2); short sides too short for that
# to be under ORTHOGONAL_FALSE_PASS are not tested.
ORTHOGONAL_FALSE_PASS = 1e-6
ORTHOGONAL_FLOPS = 1 << 30  # s²·L bound on the Gram's cost: s ≤ 256 vectors, ≥ 16 where there are
ORTHOGONAL_CHUNK = 1 << 20  # elements of the short side's vectors held at once (8 MiB of float64)


def _gram(matrix: np.ndarray, rows: int) -> np.ndarray:
    """V·Vᵀ of the first `rows` vectors of the short side of a 2-D matrix, in float64, reading
    at most ORTHOGONAL_CHUNK elements at a time along the long side."""
    r, c = matrix.shape
    wide = r <= c
    long_side = c if wide else r
    step = max(1, ORTHOGONAL_CHUNK // rows)
    gram = np.zeros((rows, rows))
    with np.errstate(all="ignore"):  # entries near float64's limit: an inf Gram, not orthogonal
        for start in range(0, long_side, step):
            part = matrix[:rows, start:start + step] if wide else matrix[start:start + step, :rows].T
            part = np.asarray(part, dtype=np.float64)
            gram += part @ part.T
            del part
    return gram


def rounding_rms(eps: float, rows: int, long_side: int) -> float:
    """ρ: RMS(E)·√L an orthogonal matrix rounded to a dtype of this eps can reach (above)."""
    return eps * math.sqrt(2 / 3 + 4 / rows) + 4 * 1.4 * 2.0**-24 * math.sqrt(long_side)


def orthogonal_gain(matrix: np.ndarray, eps: float) -> float | None:
    """g when the short side of `matrix` is orthonormal up to g (W·Wᵀ = g²·I) within its dtype's
    rounding, else None (see the derivation above ORTHOGONAL_FALSE_PASS)."""
    short, long_side = min(matrix.shape), max(matrix.shape)
    if short < 2:
        return None
    budget = int(math.isqrt(ORTHOGONAL_FLOPS // long_side))
    rows = min(short, 256, max(16, budget))
    tau = min(4 * rounding_rms(eps, rows, long_side), 0.5)
    k = rows * (rows + 1) // 2
    if (k / 2) * math.log(tau * tau * math.exp(1 - tau * tau)) > math.log(ORTHOGONAL_FALSE_PASS):
        return None  # too few vectors to tell orthogonal from Gaussian at this dtype
    found = None
    for stage in sorted({min(rows, 8), rows}):  # a few vectors first: a random matrix fails at once
        stage_tau = min(4 * rounding_rms(eps, stage, long_side), 0.5)
        found = _orthonormal_up_to(_gram(matrix, stage), stage_tau / math.sqrt(long_side))
        if found is None:
            return None
    return found


def _orthonormal_up_to(gram: np.ndarray, tol: float) -> float | None:
    """√c when RMS(G/c − I) ≤ tol, c the mean of G's diagonal, else None."""
    c = float(np.diag(gram).mean())
    if not c > 0 or not math.isfinite(c):
        return None
    with np.errstate(all="ignore"):
        error = gram / c
        error[np.diag_indices_from(error)] -= 1
        rms = math.sqrt(float(np.mean(error * error)))
    if not rms <= tol:
        return None
    return math.sqrt(c)


def exact_structure(array: np.ndarray, stats: Stats, role: str, layout: str) -> tuple[str, float] | None:
    """('identity' | 'dirac', value) when the tensor is value·I or value·dirac, else None."""
    shape = array.shape
    zeros = round(stats.zero_frac * stats.n)
    nonzero = stats.n - zeros
    if len(shape) == 2 and nonzero == min(shape) and shape[0] > 1:
        diag = np.diagonal(array)
        if diag.size and np.all(diag == diag[0]) and diag[0] != 0:
            return "identity", float(diag[0])
    if len(shape) >= 3:
        t = shape if layout == "torch" else torch_shape(shape, layout)
        taps = min(t[0], t[1])
        if nonzero == taps:
            centre = tuple(d // 2 for d in t[2:])
            i = np.arange(taps)
            if layout == "torch":
                values = np.asarray(array[(i, i, *centre)])
            else:
                values = np.asarray(array[(*centre, i, i)])
            if values.size and np.all(values == values[0]) and values[0] != 0:
                return "dirac", float(values[0])
    return None


def as_matrix(array: np.ndarray, layout: str) -> np.ndarray:
    """(out, in·kernel) as torch's orthogonal_ flattens it, for a tensor stored in `layout`."""
    if layout == "keras" and array.ndim >= 2:
        array = np.moveaxis(array, -1, 0)
        if array.ndim >= 3:  # (out, *kernel, in) -> (out, in, *kernel)
            array = np.moveaxis(array, -1, 1)
    return array.reshape(array.shape[0], -1)


def dtype_eps(dtype: str) -> float:
    """How finely a dtype (as the file spells it) rounds near 1, for the orthogonality test's
    tolerance; float32's when the spelling says nothing else."""
    d = dtype.lower()
    if "bf16" in d or "bfloat" in d:
        return 2.0**-8
    if "f16" in d or "float16" in d or "half" in d:
        return 2.0**-11
    if "e8m0" in d:  # powers of two only
        return 1.0
    if "e5m2" in d:  # two mantissa bits
        return 2.0**-2
    if "f8" in d or "float8" in d:  # e4m3: three
        return 2.0**-3
    if "64" in d or "double" in d:
        return 2.0**-53
    return 2.0**-24
