"""Mean-field predictions: what a layer's numbers should be for infinitely wide layers.

Poole et al. 2016 (Exponential expressivity in deep neural networks through transient chaos);
Schoenholz et al. 2017 (Deep Information Propagation). With h_l ~ N(0, q_l):

    q_1 = σ_w,1²·E[x²] + σ_b²,   q_l = σ_w,l²·E[φ(√q_{l−1} z)²] + σ_b²,   σ_w,l² = fan_in·Var(W_l)
    Var(δ_L) = E[φ'(h_L)²],      Var(δ_l) = Var(δ_{l+1})·σ'_{l+1}²·E[φ'(h_l)²],   σ'_l² = fan_out·Var(W_l)

Every Gaussian expectation goes through one quadrature rule that works for any activation:
Gauss–Legendre panels on each side of 0 (so a kink or jump at 0 never sits inside a panel),
growing geometrically from width ~σ/8 near the centre to 12σ, which resolves both the
activation's own scale (about 1) and the Gaussian's (√q) whether q is 1e-8 or 1e8.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from .activations import Activation, get_activation
from .engine import LAYER_NORM_EPS, PLAIN, Architecture

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
    each side of 0. var = 0 gives the single node h = mean."""
    if var <= 0:
        return np.array([mean], dtype=np.float64), np.array([1.0])
    nodes, weights = _batched_nodes(np.array([float(mean)]), var)
    return nodes[0], weights[0]


def gauss_expect(f: Callable[[np.ndarray], np.ndarray], q: float, mean: float = 0.0) -> float:
    """E[f(h)] for h ~ N(mean, q)."""
    nodes, weights = gaussian_nodes(mean, q)
    with np.errstate(all="ignore"):
        values = f(nodes)
    return float(np.dot(weights, values))


def gauss_expect_pair(f: Callable, g: Callable, q: float, c: float) -> float:
    """E[f(u1)·g(u2)] for (u1, u2) Gaussian with variances q and correlation c:
    u2 = c·u1 + √(1−c²)·√q·z2, so the inner expectation is over N(c·u1, (1−c²)q)."""
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
    """E[φ(h)²], h ~ N(0, q)."""
    return gauss_expect(lambda h: act.fn(h) ** 2, q)


def dphi_sq(act: Activation, q: float) -> float:
    """E[φ'(h)²], h ~ N(0, q)."""
    return gauss_expect(lambda h: act.derivative(h, act.fn(h)) ** 2, q)


# -- per-layer predictions ------------------------------------------------------------------


@dataclass(frozen=True)
class LayerTheory:
    layer: int
    preact_var: float
    grad_var: float
    chi: float  # σ'_l²·E[φ'(h_l)²]: the factor by which this layer's weights and φ' scale Var(δ)


def mean_field(act: Activation, weight_vars: Sequence[float], sizes: Sequence[int], *, bias_var: float = 0.0,
               input_second_moment: float = 1.0, cotangent_var: float = 1.0,
               arch: Architecture = PLAIN) -> tuple[LayerTheory, ...]:
    """The mean-field recursion for a stack with per-layer weight variances and sizes.

    LayerNorm: each input's ñ has unit second moment, so the branch sees q̃ = q/(q + ε) and
    the backward pass divides by q + ε (LN's 1/σ; its two projections remove O(1/n)).
    Residual blocks a_out = a_in + α·φ(ñ): at infinite width each unit's branch is independent
    of its skip, so E[a_out²] = Q_in + 2α·M_in·E[φ] + α²·E[φ²], with M the units' mean (not
    zero once ReLU branches have added to the stream). Gradients add on the way back,
    G_in = G_out + (what comes back through the branch): their cross term has a zero-mean
    weight in it, so it vanishes.
    """
    depth = len(weight_vars)
    layer_norm = arch.norm == "layer"
    alpha = arch.residual_scale or 0.0
    q, branch_q = [], []
    stream = block_in = input_second_moment
    stream_mean = block_in_mean = 0.0  # the inputs are zero-mean
    for layer in range(depth):
        index = layer + 1
        if arch.opens_block(index):
            block_in, block_in_mean = stream, stream_mean
        q_l = sizes[layer] * weight_vars[layer] * stream + bias_var
        q.append(q_l)
        seen = q_l / (q_l + LAYER_NORM_EPS) if layer_norm else q_l
        branch_q.append(seen)
        out = phi_sq(act, seen)
        out_mean = gauss_expect(act.fn, seen) if arch.residual else 0.0
        if arch.closes_block(index):
            stream = block_in + 2 * alpha * block_in_mean * out_mean + alpha**2 * out
            stream_mean = block_in_mean + alpha * out_mean
        else:
            stream, stream_mean = out, out_mean
    derivative_sq = [dphi_sq(act, seen) for seen in branch_q]
    chi = [sizes[layer + 1] * weight_vars[layer] * derivative_sq[layer] for layer in range(depth)]
    grad = [0.0] * depth
    incoming = cotangent_var  # Var(∂L/∂a_l)
    skip = 0.0
    for layer in range(depth - 1, -1, -1):
        index = layer + 1
        through = incoming * derivative_sq[layer]
        if arch.closes_block(index):
            skip = incoming
            through *= alpha**2
        if layer_norm:
            through /= q[layer] + LAYER_NORM_EPS
        grad[layer] = through
        incoming = sizes[layer + 1] * weight_vars[layer] * through
        if arch.opens_block(index):
            incoming += skip
    return tuple(LayerTheory(i + 1, q[i], grad[i], chi[i]) for i in range(depth))


def finite_width_spread(sizes: Sequence[int]) -> tuple[list[float], list[float]]:
    """Expected sd of log(measured/theory) per layer, forward and backward.

    Hanin & Rolnick 2018: at finite width the log of a ReLU layer's squared activation norm
    has variance ≈ 5·Σ 1/n_k over the layers passed through; used here for every activation
    as the scale of honest finite-width drift (smooth activations in the ordered phase drift
    less, so this errs on the side of not crying wolf).
    """
    widths = list(sizes[1:])
    forward = [math.sqrt(5 * sum(1 / n for n in widths[: i + 1])) for i in range(len(widths))]
    backward = [math.sqrt(5 * sum(1 / n for n in widths[i:])) for i in range(len(widths))]
    return forward, backward


def parts_ways(measured: float, predicted: float, spread: float, *, sds: float = 3.0) -> bool:
    """Whether a measurement is further from theory than `sds` finite-width spreads (in log)."""
    if not (math.isfinite(measured) and math.isfinite(predicted)):
        return False  # overflow is reported on its own
    if measured == 0 or predicted == 0:
        return (measured == 0) != (predicted == 0)
    return abs(math.log(measured / predicted)) > sds * spread


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

_Q_RANGE = (1e-12, 1e12)
# Where q* = 0 the signal is vanishingly small but not zero: derivatives are those of q → 0+
# (E[relu'(h)²] = 1/2, not relu'(0)² = 0).
_TINY_Q = 1e-24


def q_map(act: Activation, sigma_w: float, sigma_b: float, q: float) -> float:
    return sigma_w**2 * phi_sq(act, q) + sigma_b**2


def fixed_point(act: Activation, sigma_w: float, sigma_b: float, q_start: float = 1.0) -> float:
    """The q* that the length map reaches from q_start: 0 when it contracts to nothing,
    inf when it grows without bound (for instance ReLU with σ_w² ≥ 2 and σ_b > 0)."""
    def gap(q):
        # a gap within rounding of q counts as 0, so that a map that only touches the
        # diagonal (tanh at σ_w = 1, σ_b = 0, where q_{l+1} − q_l ≈ −2q²) is not a root
        value = q_map(act, sigma_w, sigma_b, q) - q
        return 0.0 if abs(value) <= 1e-12 * q else value

    grid = np.geomspace(*_Q_RANGE, 97)
    start_gap = gap(q_start)
    if start_gap == 0:
        return q_start
    if start_gap > 0:  # q grows: the first crossing above q_start
        candidates = grid[grid > q_start]
        previous = q_start
        for q in candidates:
            if gap(q) < 0:
                return _bisect_log(gap, previous, q)
            previous = q
        return math.inf
    candidates = grid[grid < q_start][::-1]  # q shrinks: the first crossing below q_start
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
        mid = math.sqrt(lo * hi)
        f_mid = fn(mid)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
        if hi / lo - 1 < 1e-13:
            break
    return math.sqrt(lo * hi)


def chi_1(act: Activation, sigma_w: float, q_star: float) -> float:
    """χ₁ = σ_w²·E[φ'(√q* z)²]: the per-layer gradient factor at the fixed point."""
    if math.isinf(q_star):
        return sigma_w**2 * dphi_sq(act, _Q_RANGE[1])
    return sigma_w**2 * dphi_sq(act, max(q_star, _TINY_Q))


@dataclass(frozen=True)
class Phase:
    """Signal propagation at one (σ_w, σ_b) (Schoenholz et al. 2017, section 3)."""

    sigma_w: float
    sigma_b: float
    q_star: float
    chi: float  # χ₁: > 1 chaotic (gradients explode), < 1 ordered (gradients vanish)
    c_star: float  # the correlation two inputs converge to: 1 in the ordered phase
    xi_q: float  # depth over which q approaches q*
    xi_c: float  # depth over which correlations approach c*
    xi_grad: float  # depth over which the gradient variance changes by a factor e
    max_depth: float  # ≈ 6·ξ_c, the depth up to which Schoenholz et al. could train
    phase: str


def _depth_scale(slope: float) -> float:
    """ξ = 1/|log|slope||: how many layers change a quantity by a factor e. inf on the
    critical line (slope 1, to the 1e-9 that the bisection for σ_w leaves)."""
    slope = abs(slope)
    if slope == 0:
        return 0.0
    rate = abs(math.log(slope))
    return math.inf if rate < 1e-9 else 1 / rate


def phase(act: Activation, sigma_w: float, sigma_b: float) -> Phase:
    q_star = fixed_point(act, sigma_w, sigma_b)
    chi = chi_1(act, sigma_w, q_star)
    if 0 < q_star < math.inf:
        step = q_star * 1e-4  # slope of the length map at q*, by a central difference
        slope_q = (q_map(act, sigma_w, sigma_b, q_star + step) - q_map(act, sigma_w, sigma_b, q_star - step)) / (2 * step)
        xi_q = _depth_scale(slope_q)
    elif q_star == 0:  # the map's slope at 0+: how fast a small signal dies
        xi_q = _depth_scale((q_map(act, sigma_w, sigma_b, _TINY_Q) - sigma_b**2) / _TINY_Q)
    else:
        xi_q = math.nan
    if chi > 1 + 1e-6 and 0 < q_star < math.inf:
        c_star = _correlation_fixed_point(act, sigma_w, sigma_b, q_star)
        def dphi(h):
            return act.derivative(h, act.fn(h))
        chi_c = sigma_w**2 * gauss_expect_pair(dphi, dphi, q_star, c_star)
        xi_c = _depth_scale(chi_c)
    else:
        c_star = 1.0 if q_star > 0 else math.nan
        xi_c = _depth_scale(chi)
    xi_grad = _depth_scale(chi)
    name = "critical" if abs(chi - 1) < 1e-06 else "chaotic" if chi > 1 else "ordered"
    return Phase(sigma_w, sigma_b, q_star, chi, c_star, xi_q, xi_c, xi_grad, 6 * xi_c, name)


def _correlation_fixed_point(act: Activation, sigma_w: float, sigma_b: float, q_star: float) -> float:
    """c* < 1 of the correlation map c ↦ (σ_w²E[φ(u1)φ(u2)] + σ_b²)/q* (chaotic phase)."""
    def gap(c):
        return (sigma_w**2 * gauss_expect_pair(act.fn, act.fn, q_star, c) + sigma_b**2) / q_star - c

    lo, hi = 0.0, 1 - 1e-7
    if gap(lo) <= 0:
        return lo
    if gap(hi) >= 0:
        return 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if gap(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def critical_sigma_w(act: Activation, sigma_b: float) -> float:
    """σ_w at which χ₁ = 1 for this σ_b (bisection in log σ_w; χ₁ grows with σ_w)."""
    def excess(sigma_w):
        return chi_1(act, sigma_w, fixed_point(act, sigma_w, sigma_b)) - 1

    lo, hi = 1e-3, 1e3
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


def critical(activation: str | Activation, sigma_b: float = 0.0, *, negative_slope: float = 0.01,
             grid: Sequence[float] = CRITICAL_GRID) -> tuple[float, tuple[Phase, ...]]:
    """The critical σ_w for this σ_b, and the phase at multiples of it (1.0 is the edge)."""
    act = activation if isinstance(activation, Activation) else get_activation(activation, negative_slope)
    sigma_star = critical_sigma_w(act, sigma_b)
    if not math.isfinite(sigma_star):
        return sigma_star, ()
    phases = []
    for factor in grid:
        point = phase(act, sigma_star * factor, sigma_b)
        if factor == 1.0 and point.phase != "critical":
            # χ jumps across the edge here (GELU: q* leaps from 0 to ∞ as σ_w passes 2);
            # the row is still the boundary, and its χ says which side it rounded to
            point = replace(point, phase="critical")
        phases.append(point)
    return sigma_star, tuple(phases)


# -- theory beside a measurement ------------------------------------------------------------


@dataclass(frozen=True)
class TheoryColumns:
    """The columns `propagate` adds per layer: prediction, χ, and where measurement parts ways."""

    theory_preact_var: float | None
    theory_grad_var: float | None
    chi: float | None
    off_theory: str  # "", "preact", "grad" or "preact,grad": beyond 3 finite-width spreads


THEORY_COLUMNS: tuple[str, ...] = ("theory_preact_var", "theory_grad_var", "chi", "off_theory")


def beside(act: Activation, weight_vars: Sequence[float] | None, sizes: Sequence[int], *, bias_var: float,
           input_second_moment: float, measured_preact: Sequence[float],
           measured_grad: Sequence[float], arch: Architecture = PLAIN) -> tuple[TheoryColumns, ...]:
    """Theory columns for a measured run. `weight_vars` None means mean-field does not apply
    (weights that are not zero-mean and i.i.d., e.g. constant init): the columns stay blank."""
    if weight_vars is None:
        return tuple(TheoryColumns(None, None, None, "") for _ in measured_preact)
    predicted = mean_field(act, weight_vars, sizes, bias_var=bias_var, input_second_moment=input_second_moment,
                           arch=arch)
    forward_spread, backward_spread = finite_width_spread(sizes)
    columns = []
    for i, layer in enumerate(predicted):
        off = [name for name, measured, theory, spread in (
            ("preact", measured_preact[i], layer.preact_var, forward_spread[i]),
            ("grad", measured_grad[i], layer.grad_var, backward_spread[i]),
        ) if parts_ways(measured, theory, spread)]
        columns.append(TheoryColumns(layer.preact_var, layer.grad_var, layer.chi, ",".join(off)))
    return tuple(columns)
