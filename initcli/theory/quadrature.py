"""Gaussian expectations for any activation: Gauss–Legendre panels on each side of 0 growing
geometrically to 12σ, and E[φ(h)²], E[φ'(h)²] on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from ..activations import Activation

_NODES_PER_PANEL = 24
_TAIL_SDS = 12.0  # P(|z| > 12) ≈ 4e-33: nothing beyond matters
_MAX_PANEL = 0.25  # widest first panel, in units of the activation's own scale


@lru_cache(maxsize=1)
def _legendre():
    return np.polynomial.legendre.leggauss(_NODES_PER_PANEL)


def _offsets(sd: float) -> np.ndarray:
    """Panel edges relative to the mean: 0, ±first, ±2·first, ±4·first, … up to ±12sd."""
    first = min(_MAX_PANEL, sd / 8)
    steps = [0.0]
    while steps[-1] < _TAIL_SDS * sd:
        steps.append(min(first * 2 ** (len(steps) - 1), _TAIL_SDS * sd))
    steps = np.array(steps)
    return np.concatenate([-steps[::-1], steps[1:]])


def _batched_nodes(means: np.ndarray, var: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights, one row per mean, for E[f(h)] with h ~ N(mean, var).

    Each row's panels are the geometric ones around its mean plus an edge at 0 (clipped into
    the range, where it makes an empty panel), so no panel ever straddles a kink at 0.
    """
    sd = math.sqrt(var)
    x, w = _legendre()
    edges = means[:, None] + _offsets(sd)[None, :]
    zero = np.clip(0.0, edges[:, :1], edges[:, -1:])
    edges = np.sort(np.concatenate([edges, zero], axis=1), axis=1)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    half = (hi - lo) / 2
    nodes = (lo + hi) / 2 + half * x
    z = (nodes - means[:, None, None]) / sd
    weights = half * w * np.exp(-0.5 * z * z) / (sd * math.sqrt(2 * math.pi))
    return nodes.reshape(len(means), -1), weights.reshape(len(means), -1)


def gaussian_nodes(mean: float, var: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes h and weights w with Σ w·f(h) ≈ E[f(h)], h ~ N(mean, var), for f smooth on
    each side of 0. var = 0 gives the single node h = mean. `var` must be finite (see
    `gauss_expect` for what an infinite one means)."""
    if var <= 0 or not math.isfinite(mean):
        return np.array([mean], dtype=np.float64), np.array([1.0])
    nodes, weights = _batched_nodes(np.array([float(mean)]), var)
    return nodes[0], weights[0]


# Past this variance, φ(h)² at the outer nodes (|h| ≤ 12√q, so φ² up to ~144q for φ that grow
# like |h|) could pass float64's 1.8e308; phi_sq then integrates (φ/√q)² and multiplies back.
_RESCALE_ABOVE = 1e200
_FAR = 1e300  # stands in for ±∞ where φ(±∞) is 0·∞ in floating point (gelu(−∞) = −∞·Φ(−∞))


def _at_infinity(f: Callable[[np.ndarray], np.ndarray], points: np.ndarray) -> np.ndarray:
    """f at ±∞, taking f(±_FAR) where f(±∞) itself is nan."""
    with np.errstate(all="ignore"):
        values = np.asarray(f(points), dtype=np.float64)
        nan = np.isnan(values)
        if nan.any():
            values = np.where(nan, np.asarray(f(np.copysign(_FAR, points)), dtype=np.float64), values)
    return values


def gauss_expect(f: Callable[[np.ndarray], np.ndarray], q: float, mean: float = 0.0) -> float:
    """E[f(h)] for h ~ N(mean, q).

    Variances that overflowed upstream are results, not errors: for q = ∞ (or an infinite
    mean) the expectation is its limit, (f(−∞) + f(+∞))/2 (all the mass goes to the two ends
    of the line, or to the mean's end), so E[relu'(h)²] → 1/2 and E[tanh(h)²] → 1 while
    E[relu(h)²] → ∞. A nan q or mean gives nan. Nothing raises or warns.
    """
    q, mean = float(q), float(mean)
    if math.isnan(q) or math.isnan(mean):
        return math.nan
    if math.isinf(mean) or math.isinf(q):
        points = np.array([mean]) if math.isinf(mean) else np.array([-math.inf, math.inf])
        with np.errstate(all="ignore"):  # E[h] = (−∞ + ∞)/2 is nan, quietly
            return float(np.mean(_at_infinity(f, points)))
    nodes, weights = gaussian_nodes(mean, q)
    with np.errstate(all="ignore"):
        values = f(nodes)
        return float(np.dot(weights, values))


def gauss_expect_pair(f: Callable, g: Callable, q: float, c: float) -> float:
    """E[f(u1)·g(u2)] for (u1, u2) Gaussian with variances q and correlation c:
    u2 = c·u1 + √(1−c²)·√q·z2, so the inner expectation is over N(c·u1, (1−c²)q).
    nan unless q is finite."""
    if not math.isfinite(q):
        return math.nan
    outer, outer_w = gaussian_nodes(0.0, q)
    inner_var = max(0.0, 1 - c * c) * q
    with np.errstate(all="ignore"):
        if inner_var == 0:
            inner = g(c * outer)
        else:
            nodes, weights = _batched_nodes(c * outer, inner_var)
            inner = np.sum(weights * g(nodes), axis=1)
        return float(np.dot(outer_w, f(outer) * inner))


def phi_sq(act: Activation, q: float) -> float:
    """E[φ(h)²], h ~ N(0, q) (∞ when q overflowed and φ is unbounded)."""
    if _RESCALE_ABOVE < q < math.inf:
        sd = math.sqrt(q)
        return gauss_expect(lambda h: (act.fn(h) / sd) ** 2, q) * q
    return gauss_expect(lambda h: act.fn(h) ** 2, q)


def dphi_sq(act: Activation, q: float) -> float:
    """E[φ'(h)²], h ~ N(0, q)."""
    return gauss_expect(lambda h: act.derivative(h, act.fn(h)) ** 2, q)
