"""Activation functions, their derivatives and torch's gain table.

Every function works on numpy arrays of any float dtype, returns the same dtype, and is
written so that large |x| neither overflows nor warns (sigmoid(-1000) is 0, not a warning).
Derivatives take both the pre-activation and the activation, since several are cheapest
from the output (tanh' = 1 - tanh², sigmoid' = s(1 - s)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import InitcliError, suggest

Array = np.ndarray

# Klambauer et al. 2017, "Self-Normalizing Neural Networks", eq. 14 (the values torch uses).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
ELU_ALPHA = 1.0  # torch.nn.ELU's default
DEFAULT_NEGATIVE_SLOPE = 0.01  # torch.nn.LeakyReLU's default
# |a| up to 1000: leaky-relu's critical σ_w = √(2/(1+a²)) then stays inside theory's search
# range [1e-3, 1e3], and a² ≤ 1e6 cannot overflow anything (torch accepts any float; a slope
# of 1e160 only overflowed). Beyond it, use the mirrored ReLU with a gain.
NEGATIVE_SLOPE_MAX = 1e3

# Saturation thresholds of THEORY.md: the flat regions of tanh and sigmoid.
TANH_SATURATION = 0.97
SIGMOID_SATURATION = (0.03, 0.97)


@dataclass(frozen=True)
class Activation:
    """An activation φ with φ'(h), and what the rest of initcli needs to know about it."""

    name: str
    fn: Callable[[Array], Array]
    derivative: Callable[[Array, Array], Array]  # (preact, act) -> φ'(preact)
    torch_gain: float | None  # torch.nn.init.calculate_gain, None where torch has no entry
    piecewise: bool  # φ or φ' changes form at 0: integrate each half-line separately
    saturated: Callable[[Array], Array] | None = None  # act -> bool mask of the flat region
    negative_slope: float | None = None
    # (φ(h), φ'(h)) in one pass, for an activation whose two share their costly part (GELU's Φ)
    fn_and_derivative: Callable[[Array], tuple[Array, Array]] | None = None

    def apply(self, h: Array) -> tuple[Array, Array]:
        """(φ(h), φ'(h)); the same numbers as fn and derivative called one after the other."""
        if self.fn_and_derivative is not None:
            return self.fn_and_derivative(h)
        act = self.fn(h)
        return act, self.derivative(h, act)


# -- numerically stable pieces ------------------------------------------------------------


def sigmoid(x: Array) -> Array:
    """1/(1+e^-x) without overflow: only e^-|x| is ever formed."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def softplus(x: Array) -> Array:
    """log(1+e^x) = max(x,0) + log1p(e^-|x|)."""
    x = np.asarray(x)
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)


# erf is fitted on |z| <= _ERF_SPLIT; beyond it, erfc(|z|) is fitted relative to its asymptote,
# so that Φ(x) = erfc(-x/√2)/2 keeps full relative accuracy in the far left tail (GELU there).
_ERF_SPLIT = 1.0


@lru_cache(maxsize=1)
def _erf_fits():
    """Chebyshev fits, built once, that evaluate erf and erfc to about 1e-15.

    numpy has no erf and initcli's only dependency is numpy, so: on |z| <= 1 fit erf(z)/z,
    an entire function of t = z²; on |z| > 1 fit k(u) = √π·z·e^{z²}·erfc(z) of u = 1/z,
    which is smooth on [0, 1] and tends to 1 (the leading term of erfc's asymptotic series).
    The values at the nodes come from math.erf and math.erfc.
    """
    from numpy.polynomial import Chebyshev

    def erf_over_z(t):
        z = _ERF_SPLIT * np.sqrt(t)
        return np.array([math.erf(v) / v if v > 0 else 2 / math.sqrt(math.pi) for v in z])

    def k_of_u(u):
        out = []
        for ui in u:
            z = _ERF_SPLIT / ui
            if z < 25:
                out.append(math.sqrt(math.pi) * z * math.exp(z * z) * math.erfc(z))
            else:  # asymptotic series 1 + Σ (-1)^n (2n-1)!!/(2z²)^n: 12 terms, error < 1e-25
                term, total = 1.0, 1.0
                for n in range(1, 13):
                    term *= -(2 * n - 1) / (2 * z * z)
                    total += term
                out.append(total)
        return np.array(out)

    inner = Chebyshev.interpolate(erf_over_z, 14, domain=[0, 1])
    outer = Chebyshev.interpolate(k_of_u, 40, domain=[0, 1])
    return inner, outer


def _erf_pieces(z: np.ndarray):
    """(mask of |z| <= split, erf(z) there, erfc(|z|) elsewhere)."""
    inner, outer = _erf_fits()
    a = np.abs(z)
    small = a <= _ERF_SPLIT
    zs = z[small]
    erf_small = zs * inner((zs / _ERF_SPLIT) ** 2)
    ab = a[~small]
    with np.errstate(under="ignore"):
        erfc_big = np.exp(-ab * ab) * outer(_ERF_SPLIT / ab) / (ab * math.sqrt(math.pi))
    return small, erf_small, erfc_big


def erf(x: Array) -> Array:
    """The error function, vectorised, in float64."""
    z = np.asarray(x, dtype=np.float64)
    small, erf_small, erfc_big = _erf_pieces(z)
    out = np.empty_like(z)
    out[small] = erf_small
    out[~small] = np.sign(z[~small]) * (1 - erfc_big)
    return out


def norm_cdf(x: Array) -> Array:
    """Φ(x), the standard normal CDF, relatively accurate in the far left tail (float64)."""
    z = np.asarray(x, dtype=np.float64) / math.sqrt(2)
    small, erf_small, erfc_big = _erf_pieces(z)
    out = np.empty_like(z)
    out[small] = 0.5 + 0.5 * erf_small
    out[~small] = np.where(z[~small] > 0, 1 - 0.5 * erfc_big, 0.5 * erfc_big)
    return out


_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


# -- GELU in float32 ---------------------------------------------------------------------------
# For a = |x|, P = Φ(−a) = e^{−a²/2}·R(a), where R(a) = Φ(−a)·e^{a²/2} (Mills' ratio over √(2π)) is
# smooth and falls like 1/(a√(2π)). Of t = κ/(κ + a) ∈ (0, 1], R = t·Q(t) with Q a tame polynomial:
# its coefficients (powers of t) interpolate Q at 10 Chebyshev nodes of t ∈ [3/19, 1] (a ≤ 16),
# from math.erfc; the fit is within 4e-8 relative of R (a third of float32's eps). Past a = 14.4,
# e^{−a²/2} is 0 in float32 and so is P, whatever Q gives.
_MILLS_KAPPA = np.float32(3.0)
_MILLS_COEFFICIENTS = tuple(np.float32(c) for c in (
    0.1329679, 0.1332939, 0.11499676, 0.106725655, -0.011829897, 0.13524711, -0.1631033, 0.04292672, 0.01639837,
    -0.007623226))
# a² rounds by a²·eps/2, which e^{−a²/2} would turn into a relative error of a²/4·eps (25 eps at a = 10):
# with a = hi + lo, hi keeping 12 significant bits, hi² is exact and e^{−a²/2} = e^{−hi²/2}·e^{−lo(a+hi)/2}
_HIGH_BITS = np.uint32(0xFFFFF000)
_BLOCK32 = 1 << 15  # float32 elements a pass: the kernel's seven work arrays stay in a core's L2 cache


def _gelu32(x: np.ndarray, want_act: bool = True, want_deriv: bool = True) -> tuple[Array | None, Array | None]:
    """GELU x·Φ(x) and its derivative Φ(x) + x·φ(x) in float32, within about 4 eps32 relative of the
    exact values (derivative: of Φ(x) + |x|·φ(x)), far left tail included, with only float32 work.

    With P = Φ(−|x|), H = [x ≥ 0]: x·Φ(x) = x·H − |x|·P (exact for x < 0, no cancellation for
    x ≥ 0: |x|·P < x/2); φ'(x) = D for x < 0 and 1 − D for x ≥ 0, D = P − |x|·φ(x). Each block of
    _BLOCK32 entries goes through ~40 ufunc calls writing into preallocated arrays."""
    f = np.float32
    act = np.empty_like(x) if want_act else None
    deriv = np.empty_like(x) if want_deriv else None
    flat = x.reshape(-1)
    size = min(_BLOCK32, flat.size)
    a, hi, work, e, p, h, s = (np.empty(size, np.float32) for _ in range(7))
    with np.errstate(all="ignore"):  # inf and nan inputs are redone below; e^{−a²/2} underflows in the tail
        for start in range(0, flat.size, _BLOCK32):
            v = flat[start:start + _BLOCK32]
            n = v.size
            a_, hi_, work_, e_, p_, h_, s_ = a[:n], hi[:n], work[:n], e[:n], p[:n], h[:n], s[:n]
            np.abs(v, out=a_)
            np.bitwise_and(a_.view(np.uint32), _HIGH_BITS, out=hi_.view(np.uint32))
            np.add(a_, hi_, out=work_)
            np.multiply(hi_, hi_, out=e_)  # exact
            np.subtract(a_, hi_, out=hi_)  # lo, exact
            np.multiply(work_, hi_, out=work_)
            np.multiply(work_, f(-0.5), out=work_)
            np.exp(work_, out=work_)
            np.multiply(e_, f(-0.5), out=e_)
            np.exp(e_, out=e_)
            np.multiply(e_, work_, out=e_)  # e^{−a²/2}
            np.add(a_, _MILLS_KAPPA, out=work_)
            np.divide(_MILLS_KAPPA, work_, out=work_)  # t
            np.multiply(work_, _MILLS_COEFFICIENTS[-1], out=p_)
            for c in _MILLS_COEFFICIENTS[-2:0:-1]:  # Horner
                np.add(p_, c, out=p_)
                np.multiply(p_, work_, out=p_)
            np.add(p_, _MILLS_COEFFICIENTS[0], out=p_)
            np.multiply(p_, work_, out=p_)  # R(a)
            np.multiply(p_, e_, out=p_)  # P = Φ(−|x|)
            np.greater_equal(v, f(0), out=h_, casting="unsafe")  # H; 0 for nan
            if want_deriv:
                np.multiply(a_, e_, out=work_)
                np.multiply(work_, f(_INV_SQRT_2PI), out=work_)
                np.subtract(p_, work_, out=work_)  # D
                np.multiply(h_, f(-2), out=s_)
                np.add(s_, f(1), out=s_)  # 1 − 2H: ±1
                out = deriv.reshape(-1)[start:start + n]
                np.multiply(work_, s_, out=out)
                np.add(out, h_, out=out)
            if want_act:
                out = act.reshape(-1)[start:start + n]
                np.multiply(a_, p_, out=p_)
                np.multiply(v, h_, out=out)
                np.subtract(out, p_, out=out)
    # inf, nan and finite values past 1.7e38 (a + hi overflows) give nan derivatives here; their
    # entries are redone in float64, which makes +inf → inf, −inf → nan, as x·Φ(x) does
    check = deriv if want_deriv else act
    if not math.isfinite(float(check.sum())):  # a float32 sum: φ' is bounded, and a false alarm only costs time
        bad = ~(np.isfinite(check) & np.isfinite(x))
        if bad.any():
            exact_act, exact_deriv = _gelu_and_derivative64(x[bad])
            if want_act:
                act[bad] = exact_act
            if want_deriv:
                deriv[bad] = exact_deriv
    return act, deriv


_BLOCK = 1 << 15  # float64 GELU works a block at a time, so its temporaries stay small


def _blockwise(kernel: Callable[[np.ndarray], np.ndarray], x: Array) -> Array:
    out = np.empty_like(x)
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _BLOCK):
        flat_out[start:start + _BLOCK] = kernel(flat_in[start:start + _BLOCK].astype(np.float64))
    return out


def _gelu(x: Array) -> Array:
    if x.dtype == np.float32:
        return _gelu32(x, want_deriv=False)[0]
    return _blockwise(lambda v: v * norm_cdf(v), x)


def _gelu_derivative_kernel(v: np.ndarray) -> np.ndarray:
    with np.errstate(under="ignore"):
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * v * v)
    return norm_cdf(v) + v * pdf


def _gelu_derivative(x: Array, _act: Array) -> Array:
    if x.dtype == np.float32:
        return _gelu32(x, want_act=False)[1]
    return _blockwise(_gelu_derivative_kernel, x)


def _gelu_and_derivative(x: Array) -> tuple[Array, Array]:
    """GELU and its derivative in one pass: float32 by `_gelu32`, other dtypes in float64 from
    one Φ per block (the erf fit is most of the cost)."""
    if x.dtype == np.float32:
        return _gelu32(x)
    return _gelu_and_derivative64(x)


def _gelu_and_derivative64(x: Array) -> tuple[Array, Array]:
    act, deriv = np.empty_like(x), np.empty_like(x)
    flat_in, flat_act, flat_deriv = x.reshape(-1), act.reshape(-1), deriv.reshape(-1)
    for start in range(0, flat_in.size, _BLOCK):
        v = flat_in[start:start + _BLOCK].astype(np.float64)
        cdf = norm_cdf(v)
        with np.errstate(under="ignore", invalid="ignore"):
            pdf = _INV_SQRT_2PI * np.exp(-0.5 * v * v)
            flat_act[start:start + _BLOCK] = v * cdf
            flat_deriv[start:start + _BLOCK] = cdf + v * pdf
    return act, deriv


def _elu(x: Array, alpha: float = ELU_ALPHA) -> Array:
    # expm1 only of the non-positive part, so large x never overflows
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def _elu_derivative(x: Array, _act: Array, alpha: float = ELU_ALPHA) -> Array:
    return np.where(x > 0, 1, alpha * np.exp(np.minimum(x, 0))).astype(x.dtype, copy=False)


def _silu_derivative(x: Array, _act: Array) -> Array:
    s = sigmoid(x)
    return s * (1 + x * (1 - s))


def _leaky(slope: float) -> tuple[Callable, Callable]:
    def fn(x):
        return np.where(x > 0, x, x * x.dtype.type(slope))

    def derivative(x, _act):
        return np.where(x > 0, x.dtype.type(1), x.dtype.type(slope))

    return fn, derivative


def _relu_derivative(x: Array, _act: Array) -> Array:
    # relu'(0) = 0, as torch takes it: a zero-initialised ReLU stack gets no gradient at all
    return (x > 0).astype(x.dtype)


def _tanh_saturated(act: Array) -> Array:
    return np.abs(act) > TANH_SATURATION


def _sigmoid_saturated(act: Array) -> Array:
    low, high = SIGMOID_SATURATION
    return (act < low) | (act > high)


def _build(negative_slope: float) -> dict[str, Activation]:
    leaky_fn, leaky_derivative = _leaky(negative_slope)
    return {
        a.name: a
        for a in [
            Activation("linear", lambda x: x, lambda x, a: np.ones_like(x), 1.0, False),
            Activation("relu", lambda x: np.maximum(x, 0), _relu_derivative, math.sqrt(2), True),
            Activation(
                "leaky-relu",
                leaky_fn,
                leaky_derivative,
                math.sqrt(2 / (1 + negative_slope**2)),
                True,
                negative_slope=negative_slope,
            ),
            Activation("tanh", np.tanh, lambda x, a: 1 - a * a, 5 / 3, False, _tanh_saturated),
            Activation("sigmoid", sigmoid, lambda x, a: a * (1 - a), 1.0, False, _sigmoid_saturated),
            Activation(
                "selu",
                lambda x: (SELU_SCALE * _elu(x, SELU_ALPHA)).astype(x.dtype, copy=False),
                lambda x, a: (SELU_SCALE * _elu_derivative(x, a, SELU_ALPHA)).astype(x.dtype, copy=False),
                3 / 4,
                True,
            ),
            Activation("elu", _elu, _elu_derivative, None, True),
            Activation("gelu", _gelu, _gelu_derivative, None, False, fn_and_derivative=_gelu_and_derivative),
            Activation("silu", lambda x: x * sigmoid(x), _silu_derivative, None, False),
            Activation("softplus", softplus, lambda x, a: sigmoid(x), None, False),
        ]
    }


ACTIVATION_NAMES: tuple[str, ...] = tuple(_build(DEFAULT_NEGATIVE_SLOPE))
_ALIASES = {"identity": "linear", "none": "linear", "leaky_relu": "leaky-relu", "leakyrelu": "leaky-relu",
            "swish": "silu", "logistic": "sigmoid"}


def get_activation(name: str, negative_slope: float = DEFAULT_NEGATIVE_SLOPE) -> Activation:
    """The activation called `name` (or one of its aliases, such as swish for silu)."""
    if (isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float))
            or not abs(negative_slope) <= NEGATIVE_SLOPE_MAX):
        raise InitcliError("negative_slope", f"must be a number in [-{NEGATIVE_SLOPE_MAX:g}, {NEGATIVE_SLOPE_MAX:g}], "
                                             f"got {negative_slope!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    table = _build(float(negative_slope))
    if key not in table:
        raise InitcliError(
            "activation",
            f"unknown activation '{name}'{suggest(key, list(table) + list(_ALIASES))}; "
            f"choose from {', '.join(table)}",
        )
    return table[key]
