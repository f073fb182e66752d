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
from .errors import InitcliError

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

    Residual-init presets (Architecture.residual_init) enter through `weight_vars` (their
    factors on branch weights, squared), α (ReZero/SkipInit 0, depth-µP 1/√L) and, for
    DeepNorm, a skip multiplier s and a LayerNorm on the sum: with s the stream follows
    Q_out = s²·Q_in + 2sα·M_in·E[φ] + α²·E[φ²] — for zero-mean branches the recursion
    q_{l+1} = q_l + α²·V(q_l) of a plain residual stream, scaled. After the post-LN each
    input's units have mean 0 and variance v/(v + ε), v = Q − M² being the sum's variance
    across units (the units share the mean M), and the gradient divides by v + ε on its way
    back through it.
    """
    # Python floats throughout: their overflow is a silent inf (numpy scalars would warn), and
    # products, never `**`, which raises OverflowError past 1e308
    weight_vars = [float(v) for v in weight_vars]
    bias_var, input_second_moment, cotangent_var = float(bias_var), float(input_second_moment), float(cotangent_var)
    depth = len(weight_vars)
    layer_norm = arch.norm == "layer"
    alpha = float(arch.residual_scale or 0.0)
    skip_scale = float(arch.skip_scale)
    q, branch_q = [], []
    post_var = [0.0] * depth  # a post-LN block's v = Var_units(sum), where the gradient divides by v + ε
    stream = block_in = input_second_moment
    stream_mean = block_in_mean = 0.0  # the inputs are zero-mean
    for layer in range(depth):
        index = layer + 1
        if arch.opens_block(index):
            block_in, block_in_mean = stream, stream_mean
        q_l = sizes[layer] * weight_vars[layer] * stream + bias_var
        q.append(q_l)
        seen = _layer_norm_seen(q_l) if layer_norm else q_l
        branch_q.append(seen)
        out = phi_sq(act, seen)
        out_mean = gauss_expect(act.fn, seen) if arch.residual else 0.0
        if arch.closes_block(index):
            if skip_scale == 1.0:
                stream = block_in + 2 * alpha * block_in_mean * out_mean + alpha * alpha * out
                stream_mean = block_in_mean + alpha * out_mean
            else:
                stream = (skip_scale * skip_scale * block_in + 2 * skip_scale * alpha * block_in_mean * out_mean
                          + alpha * alpha * out)
                stream_mean = skip_scale * block_in_mean + alpha * out_mean
            if arch.post_norm:
                # Q − M² cancels catastrophically only when the units barely vary, where the
                # LN output itself is ill-defined: clamp at 0
                post_var[layer] = max(stream - stream_mean * stream_mean, 0.0) if math.isfinite(stream) else stream
                stream, stream_mean = _layer_norm_seen(post_var[layer]), 0.0
        else:
            stream, stream_mean = out, out_mean
    derivative_sq = [dphi_sq(act, seen) for seen in branch_q]
    chi = [sizes[layer + 1] * weight_vars[layer] * derivative_sq[layer] for layer in range(depth)]
    grad = [0.0] * depth
    incoming = cotangent_var  # Var(∂L/∂a_l)
    skip = 0.0
    for layer in range(depth - 1, -1, -1):
        index = layer + 1
        if arch.closes_block(index) and arch.post_norm:
            incoming = incoming / (post_var[layer] + LAYER_NORM_EPS)  # a float's x/∞ is 0, quietly
        through = incoming * derivative_sq[layer]
        if arch.closes_block(index):
            skip = incoming if skip_scale == 1.0 else skip_scale * skip_scale * incoming
            through *= alpha * alpha
        if layer_norm:
            through /= q[layer] + LAYER_NORM_EPS
        grad[layer] = through
        incoming = sizes[layer + 1] * weight_vars[layer] * through
        if arch.opens_block(index):
            incoming += skip
    return tuple(LayerTheory(i + 1, q[i], grad[i], chi[i]) for i in range(depth))


def _layer_norm_seen(q: float) -> float:
    """The variance a branch sees after LayerNorm, q/(q + ε): 1 once q overflowed (∞/∞)."""
    return 1.0 if q == math.inf else q / (q + LAYER_NORM_EPS)


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
    measured, predicted = float(measured), float(predicted)
    if not (math.isfinite(measured) and math.isfinite(predicted)):
        return False  # overflow is reported on its own
    if measured == 0 or predicted == 0:
        return (measured == 0) != (predicted == 0)
    # a difference of logs: the ratio itself can overflow or underflow (1e-300/1e300)
    return abs(math.log(abs(measured)) - math.log(abs(predicted))) > sds * spread


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
           measured_grad: Sequence[float], arch: Architecture = PLAIN,
           spread_sizes: Sequence[int] | None = None) -> tuple[TheoryColumns, ...]:
    """Theory columns for a measured run. `weight_vars` None means mean-field does not apply
    (weights that are not zero-mean and i.i.d., e.g. constant init): the columns stay blank.
    `spread_sizes`: the independent units whose average the finite-width spread counts, when
    they are not the fans (a conv's C filters, shared over its positions); default `sizes`."""
    if weight_vars is None:
        return tuple(TheoryColumns(None, None, None, "") for _ in measured_preact)
    predicted = mean_field(act, weight_vars, sizes, bias_var=bias_var, input_second_moment=input_second_moment,
                           arch=arch)
    forward_spread, backward_spread = finite_width_spread(sizes if spread_sizes is None else spread_sizes)
    columns = []
    for i, layer in enumerate(predicted):
        off = [name for name, measured, theory, spread in (
            ("preact", measured_preact[i], layer.preact_var, forward_spread[i]),
            ("grad", measured_grad[i], layer.grad_var, backward_spread[i]),
        ) if parts_ways(measured, theory, spread)]
        columns.append(TheoryColumns(layer.preact_var, layer.grad_var, layer.chi, ",".join(off)))
    return tuple(columns)
