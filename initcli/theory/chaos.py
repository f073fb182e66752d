"""Weight gains per activation (q = 1 forward and backward) and the edge of chaos: fixed points,
χ₁, phases, the critical σ_w and the depth scales around it (Poole et al. 2016; Schoenholz
et al. 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..activations import Activation, get_activation
from ..errors import InitcliError
from .quadrature import dphi_sq, gauss_expect_pair, phi_sq

# -- gains ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gain:
    activation: str
    torch_gain: float | None
    forward_gain: float  # 1/√E[φ(z)²]: keeps q = 1 from layer to layer
    backward_gain: float  # 1/√E[φ'(z)²]: keeps the gradient variance at q = 1


def gain(activation: str | Activation, negative_slope: float = 0.01) -> Gain:
    act = activation if isinstance(activation, Activation) else get_activation(activation, negative_slope)
    return Gain(act.name, act.torch_gain, 1 / math.sqrt(phi_sq(act, 1.0)), 1 / math.sqrt(dphi_sq(act, 1.0)))


# -- the edge of chaos ----------------------------------------------------------------------

_Q_RANGE = (1e-12, 1e12)  # where fixed_point scans for q*; beyond it q* counts as 0 or ∞
_Q_GRID = np.geomspace(*_Q_RANGE, 97)  # 4 points a decade
# Where q* = 0 the signal is vanishingly small but not zero: derivatives are those of q → 0+
# (E[relu'(h)²] = 1/2, not relu'(0)² = 0), and the correlation map is the one of φ's
# linearisation at 0, probed at this q.
_TINY_Q = 1e-24
_HUGE_Q = 1e24  # likewise for q* = ∞: φ's behaviour at large |h|, where a bias no longer matters
_CHI_EDGE = 1e-6  # |χ − 1| below this is the edge (the σ_w bisection leaves ~1e-12)

# Accepted inputs of the edge-of-chaos search. σ_w is searched in [1e-3, 1e3]; for bounded φ
# (tanh, sigmoid) the critical σ_w grows like √σ_b (≈ 3.9·√σ_b for sigmoid), leaving that
# range past σ_b ≈ 6e4, so bias_std stops at 1e4.
SIGMA_W_RANGE = (1e-3, 1e3)
BIAS_STD_MAX = 1e4


def q_map(act: Activation, sigma_w: float, sigma_b: float, q: float) -> float:
    """The length map q_{l+1} = σ_w²·E[φ(√q_l z)²] + σ_b² (Poole et al. 2016, eq. 3)."""
    return sigma_w * sigma_w * phi_sq(act, q) + sigma_b * sigma_b


def correlation_map(act: Activation, sigma_w: float, sigma_b: float, q: float, c: float) -> float:
    """One layer of the correlation map (Poole et al. 2016, eq. 5): the correlation of two
    inputs' pre-activations at layer l+1 when at layer l they have variance q each and
    correlation c, (σ_w²·E[φ(u1)φ(u2)] + σ_b²)/(σ_w²·E[φ(u)²] + σ_b²). With σ_b = 0 it is also
    the expected cosine of the two activation vectors at layer l (σ_w cancels); for ReLU it is
    the arc-cosine kernel (Cho & Saul 2009), c ↦ (√(1−c²) + (π − arccos c)·c)/π."""
    weight_var, bias_var = sigma_w * sigma_w, sigma_b * sigma_b
    return ((weight_var * gauss_expect_pair(act.fn, act.fn, q, c) + bias_var)
            / (weight_var * phi_sq(act, q) + bias_var))


def fixed_point(act: Activation, sigma_w: float, sigma_b: float, q_start: float = 1.0) -> float:
    """The q* that the length map reaches from q_start: 0 when it contracts to nothing,
    inf when it grows without bound (for instance ReLU with σ_w² ≥ 2 and σ_b > 0).

    q is scanned 4 points a decade over [1e-12, 1e12]. With σ_b > 0, q* ≥ σ_b² (the map never
    goes below σ_b²), so the scan goes on to σ_b²/2 and up to 1e12·σ_b² before calling q*
    0 or ∞: below 1e-12 and above 1e12 the map is in its small- or large-q regime, so one
    more point and a bisection find the crossing.
    """
    bias_var = sigma_b * sigma_b

    def gap(q):
        # a gap within rounding of q counts as 0, so that a map that only touches the
        # diagonal (tanh at σ_w = 1, σ_b = 0, where q_{l+1} − q_l ≈ −2q²) is not a root
        value = q_map(act, sigma_w, sigma_b, q) - q
        return 0.0 if abs(value) <= 1e-12 * q else value

    start_gap = gap(q_start)
    if start_gap == 0:
        return q_start
    if start_gap > 0:  # q grows: the first crossing above q_start
        candidates = list(_Q_GRID[q_start < _Q_GRID])
        if bias_var > 1:
            candidates.append(_Q_RANGE[1] * bias_var)
        previous = q_start
        for q in candidates:
            if gap(q) < 0:
                return _bisect_log(gap, previous, q)
            previous = q
        return math.inf
    candidates = list(_Q_GRID[q_start > _Q_GRID][::-1])  # q shrinks: the first crossing below q_start
    if 0 < bias_var < 2 * _Q_RANGE[0]:
        candidates.append(bias_var / 2)
    previous = q_start
    for q in candidates:
        if gap(q) > 0:
            return _bisect_log(gap, q, previous)
        previous = q
    return 0.0


def _bisect_log(fn: Callable[[float], float], lo: float, hi: float, iterations: int = 80) -> float:
    """A root of fn between lo and hi (fn(lo), fn(hi) of opposite signs), bisecting log q."""
    f_lo = fn(lo)
    for _ in range(iterations):
        mid = math.sqrt(lo) * math.sqrt(hi)  # not √(lo·hi), which underflows for lo ~ 1e-300
        f_mid = fn(mid)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
        if hi / lo - 1 < 1e-13:
            break
    return math.sqrt(lo) * math.sqrt(hi)


def _regula_falsi(fn: Callable[[float], float], lo: float, hi: float, f_lo: float, f_hi: float,
                  tol: float = 1e-12) -> float:
    """A root of fn in [lo, hi] (f_lo, f_hi of opposite signs) by the Illinois variant of
    regula falsi: bracketed like bisection, superlinear, so a few quadratures instead of 50."""
    side = 0
    x = lo
    for _ in range(100):
        previous, x = x, (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        f_x = fn(x)
        if f_x == 0 or hi - lo < tol or abs(x - previous) < tol:
            return x
        if (f_x > 0) == (f_hi > 0):
            hi, f_hi = x, f_x
            if side == -1:
                f_lo /= 2
            side = -1
        else:
            lo, f_lo = x, f_x
            if side == 1:
                f_hi /= 2
            side = 1
    return x


def chi_1(act: Activation, sigma_w: float, q_star: float) -> float:
    """χ₁ = σ_w²·E[φ'(√q* z)²]: the per-layer gradient factor at the fixed point (its limit
    as q → 0+ or q → ∞ where q* is 0 or ∞)."""
    return sigma_w * sigma_w * dphi_sq(act, max(q_star, _TINY_Q))


# The values of Phase.phase. Poole et al. 2016 and Schoenholz et al. 2017 name the first three
# at a finite, non-zero q*; the last two are where no such q* is reached.
ORDERED = "ordered"  # χ₁ < 1: gradients vanish, correlations → c* = 1 exponentially (ξ_c)
CHAOTIC = "chaotic"  # χ₁ > 1: gradients explode, correlations → c* < 1 exponentially (ξ_c)
CRITICAL = "critical"  # χ₁ = 1: the edge of chaos, where ξ_c is infinite
VANISHING = "vanishing"  # q* = 0: the signal dies geometrically (ξ_q); correlations marginal
EXPLODING = "exploding"  # q* = ∞: the signal grows geometrically (ξ_q); correlations marginal
PHASES = (ORDERED, CRITICAL, CHAOTIC, VANISHING, EXPLODING)


@dataclass(frozen=True)
class Phase:
    """Signal propagation at one (σ_w, σ_b) (Schoenholz et al. 2017, section 3).

    `phase` is one of PHASES. At a finite, non-zero fixed point q*: `ordered` (χ₁ < 1),
    `chaotic` (χ₁ > 1) or `critical` (χ₁ = 1). Where the length map reaches no such q*,
    `vanishing` (q* = 0: ReLU, leaky ReLU, linear or tanh with σ_w below the edge and σ_b = 0)
    or `exploding` (q* = ∞: unbounded φ above the edge). There the correlation map is, in the
    limit, the one of a piecewise-linear φ (φ's shape near 0, or at large |h|), which does not
    depend on σ_w and has slope exactly 1 at c = 1: correlations approach 1 polynomially
    (ReLU's arc-cosine map: 1 − c_l ≈ 9π²/(2l²)) or, where that φ is linear, never move. So
    ξ_c and max_depth are inf, c_star is 1 or nan (no single value: c stays where the inputs
    put it), and only ξ_grad and ξ_q bound the depth. `critical` is kept for χ₁ = 1 whatever
    q* is.
    """

    sigma_w: float
    sigma_b: float
    q_star: float
    chi: float  # χ₁: > 1 gradients explode, < 1 they vanish (by χ₁ a layer)
    c_star: float  # the correlation two inputs converge to: 1 in the ordered phase, nan where none
    xi_q: float  # layers over which q changes by a factor e on its way to q* (0 and ∞ included)
    xi_c: float  # depth over which correlations approach c*: inf where they do so polynomially
    xi_grad: float  # depth over which the gradient variance changes by a factor e
    max_depth: float  # ≈ 6·ξ_c, the depth up to which Schoenholz et al. could train (inf with ξ_c)
    phase: str


def _depth_scale(slope: float) -> float:
    """ξ = 1/|log|slope||: how many layers change a quantity by a factor e. inf on the
    critical line (slope 1, to the 1e-9 that the bisection for σ_w leaves)."""
    slope = abs(slope)
    if slope == 0:
        return 0.0
    if not math.isfinite(slope):
        return 0.0 if slope == math.inf else math.nan
    rate = abs(math.log(slope))
    return math.inf if rate < 1e-9 else 1 / rate


def _check_finite(param: str, value: float, largest: float = math.inf, why: str = "") -> float:
    """A finite number in [0, largest], or a one-line InitcliError naming `param`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InitcliError(param, f"must be a number, got {value!r}") from None
    if not 0 <= number <= largest or math.isinf(number):
        accepted = f"a number in [0, {largest:g}]" if math.isfinite(largest) else "a finite number ≥ 0"
        raise InitcliError(param, f"must be {accepted}{why}, got {value!r}")
    return number


def _keeps_correlation(act: Activation, q: float) -> bool:
    """Whether φ is linear on the scale √q, so that the correlation map (σ_b = 0) is the
    identity: tested at c = 1/2, where every non-linear φ moves c (ReLU's map gives 0.609)."""
    return abs(correlation_map(act, 1.0, 0.0, q, 0.5) - 0.5) < 1e-9


def _linear_in_the_limit(act: Activation, scale: float) -> bool:
    """Whether φ's limiting shape at |h| ~ scale (→ 0 or → ∞) is linear: the same slope
    φ(±h)/±h on both sides (tanh, gelu and elu near 0; linear everywhere), rather than a kink
    (relu, leaky-relu and selu near 0; every unbounded φ here at large |h|)."""
    h = np.array([scale, -scale])
    with np.errstate(all="ignore"):
        right, left = act.fn(h) / h
    return bool(abs(right - left) <= 1e-6 * max(abs(right), abs(left)))


def phase(act: Activation, sigma_w: float, sigma_b: float) -> Phase:
    """The phase at (σ_w, σ_b) with its depth scales; see `Phase` for the names."""
    sigma_w, sigma_b = _check_finite("sigma_w", sigma_w), _check_finite("sigma_b", sigma_b)
    q_star = fixed_point(act, sigma_w, sigma_b)
    chi = chi_1(act, sigma_w, q_star)
    at_edge = abs(chi - 1) < _CHI_EDGE
    if 0 < q_star < math.inf:
        step = q_star * 1e-4  # slope of the length map at q*, by a central difference
        slope_q = (q_map(act, sigma_w, sigma_b, q_star + step)
                   - q_map(act, sigma_w, sigma_b, q_star - step)) / (2 * step)
        xi_q = _depth_scale(slope_q)
        if chi > 1 + _CHI_EDGE:
            c_star = _correlation_fixed_point(act, sigma_w, sigma_b, q_star)

            def dphi(h):
                return act.derivative(h, act.fn(h))
            xi_c = _depth_scale(sigma_w * sigma_w * gauss_expect_pair(dphi, dphi, q_star, c_star))
        elif sigma_b == 0 and _keeps_correlation(act, q_star):  # linear φ at σ_w = 1: c never moves
            c_star, xi_c = math.nan, math.inf
        else:  # the correlation map's slope at c* = 1 is χ₁ (Schoenholz et al. 2017, eq. 9)
            c_star, xi_c = 1.0, _depth_scale(chi)
        name = CRITICAL if at_edge else CHAOTIC if chi > 1 else ORDERED
    else:
        # no finite, non-zero q*: q shrinks or grows by the map's limiting slope each layer,
        # and the correlation map tends to one that σ_w does not enter (see `Phase`)
        probe = _TINY_Q if q_star == 0 else _HUGE_Q
        xi_q = _depth_scale((q_map(act, sigma_w, sigma_b, probe) - sigma_b * sigma_b) / probe)
        c_star = math.nan if _linear_in_the_limit(act, math.sqrt(probe)) else 1.0
        xi_c = math.inf
        name = CRITICAL if at_edge else VANISHING if q_star == 0 else EXPLODING
    return Phase(sigma_w, sigma_b, q_star, chi, c_star, xi_q, xi_c, _depth_scale(chi), 6 * xi_c, name)


def _correlation_fixed_point(act: Activation, sigma_w: float, sigma_b: float, q_star: float) -> float:
    """c* < 1 of the correlation map c ↦ (σ_w²E[φ(u1)φ(u2)] + σ_b²)/q* (chaotic phase)."""
    def gap(c):
        return (sigma_w * sigma_w * gauss_expect_pair(act.fn, act.fn, q_star, c) + sigma_b * sigma_b) / q_star - c

    lo, hi = 0.0, 1 - 1e-7
    gap_lo, gap_hi = gap(lo), gap(hi)
    if gap_lo <= 0:
        return lo
    if gap_hi >= 0:
        return 1.0
    return _regula_falsi(gap, lo, hi, gap_lo, gap_hi)


def critical_sigma_w(act: Activation, sigma_b: float) -> float:
    """σ_w at which χ₁ = 1 for this σ_b (bisection in log σ_w over SIGMA_W_RANGE; χ₁ grows
    with σ_w). nan where χ₁ does not cross 1 in that range."""
    def excess(sigma_w):
        return chi_1(act, sigma_w, fixed_point(act, sigma_w, sigma_b)) - 1

    lo, hi = SIGMA_W_RANGE
    if excess(lo) > 0 or excess(hi) < 0:
        return math.nan
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if excess(mid) > 0:
            hi = mid
        else:
            lo = mid
        if hi / lo - 1 < 1e-12:
            break
    return math.sqrt(lo * hi)


CRITICAL_GRID = (0.8, 0.9, 0.95, 0.99, 1.0, 1.01, 1.05, 1.1, 1.25)


def critical_steps(grid: Sequence[float] = CRITICAL_GRID) -> int:
    """How many steps `critical` reports to its `progress` callback: the σ_w search, then
    one per grid point."""
    return 1 + len(grid)


def critical(activation: str | Activation, bias_std: float = 0.0, *, negative_slope: float = 0.01,
             grid: Sequence[float] = CRITICAL_GRID,
             progress: Callable[[int], None] | None = None) -> tuple[float, tuple[Phase, ...]]:
    """The critical σ_w for this bias std σ_b, and the phase at multiples of it (1.0 is the edge).

    `progress`, when given, is called with the number of steps just done (1 at a time),
    `critical_steps(grid)` in all. bias_std must lie in [0, BIAS_STD_MAX]; an InitcliError
    names what is refused.
    """
    act = activation if isinstance(activation, Activation) else get_activation(activation, negative_slope)
    sigma_b = _check_finite("bias_std", bias_std, BIAS_STD_MAX,
                            " (beyond it the critical σ_w of tanh or sigmoid passes 1000)")
    factors = [_check_finite("grid", factor) for factor in grid]
    sigma_star = critical_sigma_w(act, sigma_b)
    if not math.isfinite(sigma_star):  # not reached inside the accepted ranges; kept as a guard
        lo, hi = SIGMA_W_RANGE
        raise InitcliError("bias_std" if sigma_b > 0 else "activation",
                           f"no σ_w in [{lo:g}, {hi:g}] puts {act.name} at χ = 1 with bias_std {sigma_b:g}")
    if progress is not None:
        progress(1)
    phases = []
    for factor in factors:
        point = phase(act, sigma_star * factor, sigma_b)
        if factor == 1.0 and point.phase != CRITICAL:
            # χ jumps across the edge here (GELU: q* leaps from 0 to ∞ as σ_w passes 2);
            # the row is still the boundary, and its χ says which side it rounded to
            point = replace(point, phase=CRITICAL)
        phases.append(point)
        if progress is not None:
            progress(1)
    return sigma_star, tuple(phases)


def critical_summary(activation: str | Activation, bias_std: float, sigma_star: float,
                     phases: Sequence[Phase]) -> str:
    """One line saying what `critical` found: the critical σ_w, the weight std it means, q*
    at the edge, and whether the rows around it have no finite q* (so ξ_c is inf there)."""
    name = activation.name if isinstance(activation, Activation) else activation
    parts = [f"critical σ_w = {sigma_star:.6g} for {name} with σ_b = {float(bias_std):g}"]
    edge = next((p for p in phases if p.phase == CRITICAL), None)
    if edge is not None:
        if 0 < edge.q_star < math.inf:
            parts.append(f"q* = {edge.q_star:.4g} (reached from q = 1)")
        else:
            parts.append(f"q* = {edge.q_star:g} there (no finite non-zero fixed point)")
    sides = [text for kind, text in ((VANISHING, "q* = 0 below the edge"), (EXPLODING, "q* = inf above the edge"))
             if any(p.phase == kind for p in phases)]
    if sides:
        parts.append(" and ".join(sides) + ": correlations there converge polynomially or not at all "
                     "(xi_c = inf), so xi_grad is the depth scale")
    line = ": ".join(parts[:2]) + "".join("; " + part for part in parts[2:])
    line += f"; weight std = {sigma_star:.4g}/√fan_in"
    if edge is not None and abs(edge.chi - 1) > 1e-3:
        line += f" (χ jumps across the edge: {edge.chi:.3g} here)"
    return line
