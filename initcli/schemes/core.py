"""The variance-scaling core: Var(W) = gain² · scale / n, n by fan mode, with fans read from a
shape in PyTorch's layout (out, in, *kernel) or JAX's axes; the constants of the normal,
uniform and truncated-normal draws; and the checks that keep every weight within float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InitcliError, suggest

# Standard deviation of a unit normal truncated to (-2, 2): dividing the std by it makes the
# variance after truncation equal the target (as in JAX's variance_scaling).
TRUNCATED_NORMAL_STD = 0.87962566103423978
TRUNCATION_BOUND = 2.0

# The largest float32: every weight is drawn (and rounded) in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The largest |z| `gaussian` can return: its radius √(−2 ln(1−u)) with 1 − u ≥ 2⁻⁵³ (float64
# uniforms are multiples of 2⁻⁵³), i.e. √(106 ln 2).
GAUSSIAN_TAIL = math.sqrt(-2 * math.log(2.0**-53))

FAN_MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "uniform", "truncated-normal")
# torch.nn.init.trunc_normal_'s absolute cut-offs a, b
TRUNC_NORMAL_LOW, TRUNC_NORMAL_HIGH = -2.0, 2.0
DEFAULT_SPARSITY = 0.1  # torch's sparse_ has no default; its documented example uses 0.1
SPARSE_STD = 0.01  # torch.nn.init.sparse_'s default std (Martens 2010)


def as_axes(param: str, axes: int | Sequence[int]) -> tuple[int, ...]:
    """An axis or a sequence of axes as a tuple of ints (bools and non-integers refused)."""
    items = (axes,) if isinstance(axes, (int, np.integer)) else axes
    try:
        items = tuple(items)
    except TypeError:
        raise InitcliError(param, f"must be an axis or a comma list of axes such as 1 or 2,3; got {axes!r}") from None
    if any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in items):
        raise InitcliError(param, f"must be integer axes, got {axes!r}")
    return tuple(int(a) for a in items)


def compute_fans(shape: Sequence[int], *, in_axis: int | Sequence[int] = 1, out_axis: int | Sequence[int] = 0,
                 batch_axis: int | Sequence[int] = ()) -> tuple[int, int]:
    """(fan_in, fan_out) of a tensor in PyTorch's layout (out, in, *kernel).

    The receptive field (product of the kernel dimensions) multiplies both, as in
    torch.nn.init._calculate_fan_in_and_fan_out. Other axes as in JAX's variance_scaling:
    fan_in = ∏ shape[in_axis] · r, fan_out = ∏ shape[out_axis] · r, where r is the product
    of the dimensions in none of in_axis, out_axis and batch_axis (axes may be negative).
    Rank < 2 has no fans and is refused.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise InitcliError("shape", f"needs at least 2 dimensions (out, in, *kernel) to have fans, got {shape}")
    if any(d <= 0 for d in shape):
        raise InitcliError("shape", f"dimensions must be positive integers, got {shape}")
    rank = len(shape)
    groups = {}
    owner: dict[int, str] = {}
    given = (("in_axis", in_axis), ("out_axis", out_axis), ("batch_axis", batch_axis))
    defaults = {"in_axis": (1,), "out_axis": (0,), "batch_axis": ()}
    for param, axes in given:
        resolved = []
        for axis in as_axes(param, axes):
            if not -rank <= axis < rank:
                raise InitcliError(param, f"axis {axis} is out of range for a {rank}-D shape {shape} "
                                          f"(axes run from {-rank} to {rank - 1})")
            axis %= rank
            if axis in owner:
                other = owner[axis]
                # blame the option that was moved from its default (in_axis=0 meets out_axis's 0)
                moved = param if as_axes(param, axes) != defaults[param] or \
                    as_axes(other, dict(given)[other]) == defaults[other] else other
                raise InitcliError(moved, f"axis {axis} is both an {other.replace('_', ' ')} and a "
                                          f"{param.replace('_', ' ')}; in, out and batch axes must differ")
            owner[axis] = param
            resolved.append(axis)
        groups[param] = resolved
    seen = set(owner)
    if not groups["in_axis"] or not groups["out_axis"]:
        raise InitcliError("in_axis" if not groups["in_axis"] else "out_axis", "needs at least one axis")
    receptive_field = math.prod(d for axis, d in enumerate(shape) if axis not in seen)
    fan_in = math.prod(shape[axis] for axis in groups["in_axis"]) * receptive_field
    fan_out = math.prod(shape[axis] for axis in groups["out_axis"]) * receptive_field
    return fan_in, fan_out


def variance_scaling_std(scale: float, fan_in: float, fan_out: float, mode: str) -> float:
    """√(scale/n), n = fan_in, fan_out or (fan_in + fan_out)/2 by mode: the variance-scaling
    core (Glorot & Bengio 2010; He et al. 2015; JAX's variance_scaling) before the gain."""
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return math.sqrt(scale / n)


def canonical_choice(value: str, choices: Sequence[str], param: str) -> str:
    key = value.strip().lower()
    for choice in choices:
        if key in (choice, choice.replace("_", "-"), choice.replace("-", "_")):
            return choice
    raise InitcliError(param, f"unknown value '{value}'{suggest(key, list(choices))}; choose from {', '.join(choices)}")


def check_number(param: str, value: float, *, nonnegative: bool = True) -> float:
    """A finite number (≥ 0 unless `nonnegative` is false), or a one-line InitcliError."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        raise InitcliError(param, f"must be a finite number, got {str(value)[:40]}") from None
    if not math.isfinite(number) or (nonnegative and number < 0):
        kind = "a finite number ≥ 0" if nonnegative else "a finite number"
        raise InitcliError(param, f"must be {kind}, got {value!r}")
    return number


def check_weight_scale(param: str, value: float, *, tail: float = GAUSSIAN_TAIL) -> float:
    """A std (or scale) whose draws, up to `tail` times it, fit in float32: for --bias-std and
    the like. Refused above FLOAT32_MAX / tail, with the bound in the message."""
    value = check_number(param, value)
    if value * tail > FLOAT32_MAX:
        raise InitcliError(param, f"must be at most {FLOAT32_MAX / tail:.3g}: its draws reach {tail:.3g}× it, "
                                  f"beyond float32's largest value {FLOAT32_MAX:.3g}, in which initcli draws; "
                                  f"got {value:g}")
    return value


def normal_pdf(w: float, mean: float, std: float, weight: float = 1.0) -> float:
    """weight · N(mean, std²) density at w, without overflow or warnings for tiny stds (a
    density beyond float64's range is inf)."""
    with np.errstate(all="ignore"):
        z = (np.float64(w) - mean) / np.float64(std)
        return float(weight * np.exp(-0.5 * z * z) / (np.float64(std) * math.sqrt(2 * math.pi)))


def location_scale_density(distribution: str, mean: float, std: float, half: float) -> Callable[[float], float]:
    """The density of `distribution` about `mean` with this std (`half`: the uniform's half-width;
    the truncated normal is cut at ±2 stds of the normal before truncation)."""
    if distribution == "normal":
        return lambda w: normal_pdf(w, mean, std)
    if distribution == "uniform":
        return lambda w: 1 / (2 * half) if abs(w - mean) <= half else 0.0
    sigma = std / TRUNCATED_NORMAL_STD  # the normal before truncation to ±2σ
    mass = math.erf(TRUNCATION_BOUND / math.sqrt(2))
    return lambda w: (normal_pdf(w, mean, sigma, 1 / mass) if abs(w - mean) <= TRUNCATION_BOUND * sigma else 0.0)
