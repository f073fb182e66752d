"""The distribution families a scheme draws from (uniform, normal, the normal truncated at ±2σ):
their excess kurtosis and its sampling variance, their CDFs and densities, and the
Kolmogorov–Smirnov test against one of them. A reading's std, kurtosis and mean are accepted
within `Z_ACCEPT` standard errors (see `matching`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..schemes import TRUNCATED_NORMAL_STD, TRUNCATION_BOUND

if TYPE_CHECKING:
    from .records import TensorReport

Z_ACCEPT = 4.0  # standard errors within which a reading is accepted (two-sided 6e-5 per test)
FAMILIES = ("uniform", "normal", "truncated-normal")


def _family_moments(family: str) -> tuple[float, float]:
    """(excess kurtosis κ, n·Var(sample excess kurtosis)) of a zero-mean family, from its
    even moments μ2…μ8: Var(m4/m2²) ≈ [(μ8−μ4²)/μ2⁴ − 4μ4(μ6−μ2μ4)/μ2⁵ + 4μ4²(μ4−μ2²)/μ2⁶]/n."""
    if family == "normal":
        mu = {2: 1.0, 4: 3.0, 6: 15.0, 8: 105.0}
    elif family == "uniform":  # U(−1, 1): μ_k = 1/(k+1)
        mu = {k: 1 / (k + 1) for k in (2, 4, 6, 8)}
    else:  # N(0, 1) cut at ±2, by Gauss–Legendre quadrature (exact for these smooth integrands)
        nodes, weights = np.polynomial.legendre.leggauss(64)
        x = TRUNCATION_BOUND * nodes
        density = weights * np.exp(-0.5 * x * x)
        mu = {k: float(density @ x**k / density.sum()) for k in (2, 4, 6, 8)}
    m2, m4, m6, m8 = mu[2], mu[4], mu[6], mu[8]
    kurtosis = m4 / m2**2 - 3
    variance = (m8 - m4**2) / m2**4 - 4 * m4 * (m6 - m2 * m4) / m2**5 + 4 * m4**2 * (m4 - m2**2) / m2**6
    return kurtosis, variance


FAMILY_MOMENTS = {family: _family_moments(family) for family in FAMILIES}


_CDF_GRID = np.linspace(-9.0, 9.0, 1 << 15)
_CDF_TABLE: list = []


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Φ by linear interpolation in a table of initcli's norm_cdf: step h = 5.5e-4, error
    ≤ h²/8·max|φ'| ≈ 1e-8, far below any KS statistic a million draws can resolve (1e-3), at
    a fraction of the cost of evaluating erf a million times."""
    if not _CDF_TABLE:
        from ..activations import norm_cdf

        _CDF_TABLE.append(norm_cdf(_CDF_GRID))
    return np.interp(x, _CDF_GRID, _CDF_TABLE[0], left=0.0, right=1.0)


def _norm_cdf_scaled(x: np.ndarray, std: float) -> np.ndarray:
    """Φ(x/std), interpolated on the grid scaled by std (the same table, one division fewer per x)."""
    _norm_cdf(np.zeros(1))  # the table, built once
    return np.interp(x, _CDF_GRID * std, _CDF_TABLE[0], left=0.0, right=1.0)


def family_cdf(family: str, std: float):
    """The CDF of a zero-mean member of `family` with this std."""
    if family == "uniform":
        half = math.sqrt(3) * std
        return lambda x: np.clip((x + half) / (2 * half), 0.0, 1.0)
    if family == "normal" and 1e-280 < std < 1e280:  # the grid scaled by std, not every x divided by it
        return lambda x: _norm_cdf_scaled(x, std)
    if family == "normal":  # (a scaled grid would underflow or overflow)
        return lambda x: _norm_cdf(x / std)
    sigma = std / TRUNCATED_NORMAL_STD
    low = float(_norm_cdf(np.array(-TRUNCATION_BOUND)))
    mass = 1 - 2 * low
    return lambda x: np.clip((_norm_cdf(np.clip(x / sigma, -TRUNCATION_BOUND, TRUNCATION_BOUND)) - low) / mass,
                             0.0, 1.0)


_STEPS: dict = {}


def _ecdf_steps(n: int) -> np.ndarray:
    """i/n for i = 1…n, kept for the last size asked (most KS samples are KS_SAMPLE long)."""
    if n not in _STEPS:
        _STEPS.clear()
        _STEPS[n] = np.arange(1, n + 1) / n
    return _STEPS[n]


def ks_p_value(sorted_sample: np.ndarray, cdf) -> float:
    """Kolmogorov–Smirnov test of a sorted sample against a fully specified CDF: the
    statistic D and its asymptotic p-value with Stephens' (1970) small-n correction,
    p = 2 Σ (−1)^(k−1) exp(−2k²λ²), λ = (√n + 0.12 + 0.11/√n)·D."""
    n = sorted_sample.size
    if n == 0:
        return math.nan
    f = np.asarray(cdf(sorted_sample), dtype=np.float64)
    if np.may_share_memory(f, sorted_sample):  # a CDF that hands its input back: never change the caller's
        f = f.copy()
    f -= _ecdf_steps(n)  # F(x_i) − i/n: D⁺ = max(i/n − F), D⁻ = max(F − (i−1)/n) = max(F − i/n) + 1/n
    d = max(-float(f.min()), float(f.max()) + 1 / n)
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if lam < 0.2:
        return 1.0
    k = np.arange(1, 101)
    p = 2 * float(np.sum((-1.0) ** (k - 1) * np.exp(-2 * k * k * lam * lam)))
    return min(max(p, 0.0), 1.0)


def density_for(report: TensorReport):
    """The density of the first matched reading (for histograms), or None: a zero-mean normal,
    uniform or ±2σ-truncated normal at the expected std."""
    if not report.match or not report.expected_std:
        return None
    first = report.match.split("|")[0]
    std = report.expected_std
    if "truncated-normal" in first:
        family = "truncated-normal"
    elif "uniform" in first or first.startswith("torch-default"):
        family = "uniform"
    else:
        family = "normal"
    if family == "uniform":
        half = math.sqrt(3) * std
        return lambda w: 1 / (2 * half) if abs(w) <= half else 0.0
    sigma = std / TRUNCATED_NORMAL_STD if family == "truncated-normal" else std
    bound = TRUNCATION_BOUND * sigma if family == "truncated-normal" else math.inf
    mass = math.erf(TRUNCATION_BOUND / math.sqrt(2)) if family == "truncated-normal" else 1.0

    def pdf(w: float) -> float:
        if abs(w) > bound:
            return 0.0
        z = w / sigma
        return math.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi) * mass)

    return pdf
