"""torch's trunc_normal_ distribution, N(mean, std²) restricted to [low, high]: its moments,
density and sampler, exact far into a tail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Gauss–Legendre nodes for the truncated-normal moments: 8 panels of 24 nodes on [0, 1] are
# exact to float64 rounding for a Gaussian piece spanning at most 2·√80 ≈ 18 std units.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)
_PANELS = 8
_T = ((np.arange(_PANELS)[:, None] + (_GL_NODES[None, :] + 1) / 2) / _PANELS).ravel()
_TW = np.tile(_GL_WEIGHTS / (2 * _PANELS), _PANELS)
_LOG_CUTOFF = 40.0  # e⁻⁴⁰ ≈ 4e-18: density beyond this (relative to the peak) is below float64's eps


@dataclass(frozen=True)
class TruncatedNormal:
    """N(mean, std²) restricted to [low, high] (torch's trunc_normal_), with its moments and
    density computed without cancellation or overflow, even far in a tail.

    m = clip(mean, low, high) is the support's most likely point; κ = (m − mean)/std; in
    units u = (x − m)/std the log-density relative to m is −u(u + 2κ)/2. The support that
    matters ([lo, hi], where that is ≥ −40) is integrated by Gauss–Legendre quadrature."""

    mean: float
    std: float
    low: float
    high: float

    def _span(self) -> tuple[float, float, float, float, float, float]:
        """(m, κ, u0, du, lo, width): the support that matters is u ∈ [u0, u0 + du] in std
        units about m, i.e. x ∈ [lo, lo + width]. The width is taken in x units where both
        cut-offs bound it (a std far above high − low) and in std units otherwise (a tail far
        from the mean, where lo + width would round to lo)."""
        mean, std, low, high = self.mean, self.std, self.low, self.high
        m = min(max(mean, low), high)
        with np.errstate(all="ignore"):
            kappa = float(np.float64(m - mean) / std)
            span = float(np.float64(high - low) / std)  # may be inf: that is fine below
        if not math.isfinite(kappa):
            kappa = math.copysign(1e300, kappa)  # beyond any draw: a point mass at m
        # the largest |u| on the far side of m with −|u|(|u| + 2|κ|)/2 ≥ −40 (stable root)
        reach = 2 * _LOG_CUTOFF / (abs(kappa) + math.sqrt(kappa * kappa + 2 * _LOG_CUTOFF))
        if low <= mean <= high:
            with np.errstate(all="ignore"):
                below, above = float(np.float64(mean - low) / std), float(np.float64(high - mean) / std)
            u0, u1 = -min(below, reach), min(above, reach)
            lo = low if below <= reach else mean + u0 * std
            width = (high - lo) if above <= reach else (mean + u1 * std) - lo
            if below <= reach and above <= reach:
                width = high - low
            elif below > reach and above > reach:
                width = (u1 - u0) * std
        elif mean < low:
            u0, u1 = 0.0, min(span, reach)
            lo, width = low, (high - low) if span <= reach else u1 * std
        else:
            u0, u1 = -min(span, reach), 0.0
            width = (high - low) if span <= reach else -u0 * std
            lo = low if span <= reach else high - width
        return m, kappa, u0, u1 - u0, lo, width

    def _weights(self) -> tuple[float, float, np.ndarray]:
        """(lo, width, normalised quadrature weights at the nodes _T of [lo, lo + width])."""
        m, kappa, u0, du, lo, width = self._span()
        with np.errstate(all="ignore"):
            u = u0 + _T * du
            logp = -0.5 * u * (u + 2 * kappa)
            p = _TW * np.exp(np.where(np.isfinite(logp), logp, -np.inf))
        total = p.sum()
        if not (total > 0 and math.isfinite(total)):
            p = np.zeros_like(_TW)
            p[0] = 1.0  # everything at lo = m
            total = 1.0
        return lo, width, p / total

    def moments(self) -> tuple[float, float]:
        """(mean, std) of the truncated distribution."""
        if self.std == 0:
            return min(max(self.mean, self.low), self.high), 0.0
        lo, width, p = self._weights()
        t_mean = float(p @ _T)
        t_std = math.sqrt(max(float(p @ (_T - t_mean) ** 2), 0.0))
        return lo + width * t_mean, width * t_std

    def density(self) -> Callable[[float], float] | None:
        if self.std == 0:
            return None
        m, kappa, u0, du, _, _ = self._span()
        with np.errstate(all="ignore"):
            u = u0 + _T * du
            mass_u = float(np.sum(_TW * np.exp(-0.5 * u * (u + 2 * kappa)))) * du  # ∫ e^(log p) du
        std, low, high = self.std, self.low, self.high

        def pdf(w: float) -> float:
            if not low <= w <= high:
                return 0.0
            with np.errstate(all="ignore"):
                uu = (np.float64(w) - m) / std
                return float(np.exp(-0.5 * uu * (uu + 2 * kappa)) / (np.float64(std) * mass_u))

        return pdf

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n float64 draws, exactly distributed (up to rounding), in a bounded number of rounds:
        inside the support, normal draws rejected outside it (mass ≥ 0.3) or uniform ones on a
        narrow support; in a tail, uniform draws on a short support or Robert's (1995)
        translated-exponential proposal, each accepting at least ~0.3 of its draws."""
        mean, std, low, high = self.mean, self.std, self.low, self.high
        if std == 0:
            return np.full(n, min(max(mean, low), high))
        if mean > high:  # mirror the right tail onto the left one
            return -TruncatedNormal(-mean, std, -high, -low).sample(n, rng)
        out = np.empty(n)
        pending = np.arange(n)
        with np.errstate(all="ignore"):
            if mean >= low:  # mean inside [low, high]
                alpha, beta = (low - mean) / std, (high - mean) / std
                mass = 0.5 * (math.erf(beta / math.sqrt(2)) - math.erf(alpha / math.sqrt(2)))
                while pending.size:
                    if mass >= 0.3:
                        x = mean + std * rng.standard_normal(pending.size)
                        ok = (x >= low) & (x <= high)
                    else:  # [low, high] is under 0.8 std wide: a uniform proposal accepts ≥ 0.72
                        x = low + (high - low) * rng.random(pending.size)
                        z = (x - mean) / std
                        ok = rng.random(pending.size) < np.exp(-0.5 * z * z)
                    out[pending[ok]] = x[ok]
                    pending = pending[~ok]
            else:  # mean < low: the left end of the support is the mode
                kappa = min((low - mean) / std, 1e300)
                width = (high - low) / std
                uniform = width * (2 * kappa + width) / 2 <= 1  # acceptance ≥ e⁻¹
                rate = (kappa + math.hypot(kappa, 2)) / 2  # Robert's optimal rate
                shift = -2 / (kappa + math.hypot(kappa, 2))  # κ − rate, without cancellation
                while pending.size:
                    if uniform:
                        u = width * rng.random(pending.size)
                        ok = rng.random(pending.size) < np.exp(-0.5 * u * (u + 2 * kappa))
                    else:
                        u = rng.standard_exponential(pending.size) / rate
                        ok = (u <= width) & (rng.random(pending.size) < np.exp(-0.5 * (u + shift) ** 2))
                    out[pending[ok]] = low + std * u[ok]
                    pending = pending[~ok]
        return np.clip(out, low, high)
