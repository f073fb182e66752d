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


_BLOCK = 1 << 15  # GELU works in float64 a block at a time, so its temporaries stay small


def _blockwise(kernel: Callable[[np.ndarray], np.ndarray], x: Array) -> Array:
    out = np.empty_like(x)
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _BLOCK):
        flat_out[start:start + _BLOCK] = kernel(flat_in[start:start + _BLOCK].astype(np.float64))
    return out


def _gelu(x: Array) -> Array:
    return _blockwise(lambda v: v * norm_cdf(v), x)


def _gelu_derivative_kernel(v: np.ndarray) -> np.ndarray:
    with np.errstate(under="ignore"):
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * v * v)
    return norm_cdf(v) + v * pdf


def _gelu_derivative(x: Array, _act: Array) -> Array:
    return _blockwise(_gelu_derivative_kernel, x)


def _gelu_and_derivative(x: Array) -> tuple[Array, Array]:
    """GELU and its derivative from one Φ per block: the erf fit is most of GELU's cost."""
    act, deriv = np.empty_like(x), np.empty_like(x)
    flat_in, flat_act, flat_deriv = x.reshape(-1), act.reshape(-1), deriv.reshape(-1)
    for start in range(0, flat_in.size, _BLOCK):
        v = flat_in[start:start + _BLOCK].astype(np.float64)
        cdf = norm_cdf(v)
        with np.errstate(under="ignore"):
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
