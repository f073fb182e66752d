"""Scheme kinds: one small object per kind of scheme (a Scheme's `kind` names it) holding its
formula (std, mean, bound and largest weight, from the shape and fans), its density, its
sampler over an explicit numpy Generator, the options `params` records, and `iid`. A new
kind is one class and one `register_kind` call; `Init` needs no edit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InitcliError
from .core import (
    GAUSSIAN_TAIL,
    TRUNC_NORMAL_HIGH,
    TRUNC_NORMAL_LOW,
    TRUNCATED_NORMAL_STD,
    TRUNCATION_BOUND,
    location_scale_density,
    normal_pdf,
    variance_scaling_std,
)
from .draws import (
    dirac_weights,
    draw_location_scale,
    draw_orthogonal,
    draw_orthogonal_per_tap,
    draw_sparse,
)
from .truncnormal import TruncatedNormal

if TYPE_CHECKING:
    from .init import Init
    from .presets import Scheme

# How far a draw can reach in stds (before the location) for each distribution
_TAILS = {"normal": GAUSSIAN_TAIL, "uniform": math.sqrt(3), "truncated-normal": TRUNCATION_BOUND / TRUNCATED_NORMAL_STD}


@dataclass(frozen=True)
class SchemeKind:
    """What a kind of scheme computes for an `Init`.

    `iid` answers "does mean-field theory apply?": true where the weights are an ensemble whose
    variance map is the i.i.d. one (variance-scaling and fixed draws; orthogonal kinds, whose
    rotation-invariant entries give the same forward variance map at large width, Pennington et
    al. 2017; lsuv, which starts orthogonal), false for deterministic weights (zeros, constant,
    identity, dirac), whose mean, not their spread, carries the signal. `needs_fans`: false for
    the kinds a 1-D shape (a bias vector) can take. `variance_scaling`: --mode and the preset's
    scale mean something to it; `takes_distribution`: --distribution does. `options`: the
    options it may use (`uses` narrows them for a preset); `range_options`: those that could
    take its weights past float32's range, blamed by `make_init`. Shapes reaching `std` and
    `sample` are checked by `Init`; `mean`, `bound` and `density` check them where they use them.
    """

    name: str
    iid: bool = True
    needs_fans: bool = True
    variance_scaling: bool = False
    takes_distribution: bool = False
    options: tuple[str, ...] = ()
    range_options: tuple[str, ...] = ()

    def uses(self, scheme: Scheme) -> tuple[str, ...]:
        """The options this preset uses (gain applies to all but zeros)."""
        return self.options

    def std(self, init: Init, shape: tuple[int, ...]) -> float:
        raise NotImplementedError(f"scheme kind {self.name} has no std")

    def mean(self, init: Init, shape: Sequence[int] | None) -> float:
        return 0.0

    def bound(self, init: Init, shape: Sequence[int]) -> float | None:
        raise NotImplementedError(f"scheme kind {self.name} has no bound")

    def largest_weight(self, init: Init) -> float:
        raise NotImplementedError(f"scheme kind {self.name} has no largest weight")

    def density(self, init: Init, shape: Sequence[int]) -> Callable[[float], float] | None:
        return None

    def sample(self, init: Init, shape: tuple[int, ...], rng: np.random.Generator, dtype) -> np.ndarray:
        raise NotImplementedError(f"scheme kind {self.name} has no sampler")

    def params(self, init: Init) -> dict:
        """The options beyond Init's common ones that reproduce this init."""
        return {}

    def bounds(self, init: Init) -> tuple[float, float]:
        """The uniform's [low, high]: ±limit unless given."""
        return (-init.limit if init.low is None else init.low, init.limit if init.high is None else init.high)


@dataclass(frozen=True)
class ScalingKind(SchemeKind):
    """Var(W) = gain² · scale / n by mode, normal, uniform or truncated normal: Glorot, He, LeCun."""

    def std(self, init, shape):
        fan_in, fan_out = init.fans(shape)
        return init.gain * variance_scaling_std(init.scheme.scale, fan_in, fan_out, init.mode) / init.slope_factor

    def bound(self, init, shape):
        std = init.expected_std(shape)
        if init.distribution == "uniform":
            return math.sqrt(3) * std
        if init.distribution == "truncated-normal":
            return TRUNCATION_BOUND * std / TRUNCATED_NORMAL_STD
        return None

    def largest_weight(self, init):
        return init.gain * math.sqrt(init.scale) * _TAILS[init.distribution]

    def density(self, init, shape):
        std = init.expected_std(shape)
        if std == 0:
            return None
        return location_scale_density(init.distribution, 0.0, std, math.sqrt(3) * std)

    def sample(self, init, shape, rng, dtype):
        sigma = init.expected_std(shape)
        return draw_location_scale(shape, rng, init.distribution, 0.0, sigma, math.sqrt(3) * sigma, dtype)

    def params(self, init):
        if (init.in_axis, init.out_axis, init.batch_axis) != ((1,), (0,), ()):
            return dict(in_axis=list(init.in_axis), out_axis=list(init.out_axis), batch_axis=list(init.batch_axis))
        return {}


@dataclass(frozen=True)
class FixedKind(SchemeKind):
    """normal (--mean, --std) and uniform (±--limit or --low/--high), ignoring the fans."""

    @staticmethod
    def location_half(init: Init) -> tuple[float, float, float]:
        """(μ, σ, half-width) before the gain: the normal scheme's mean and std; the uniform
        scheme's centre, (high − low)/√12 and (high − low)/2. The half-width is that of the
        uniform distribution with this σ (√3σ), exact for the uniform scheme."""
        if init.scheme.distribution == "normal":
            return init.mean, init.std, math.sqrt(3) * init.std
        low, high = init.interval()
        half = high / 2 - low / 2  # halves first: high − low can exceed float64 only in theory
        return low / 2 + high / 2, half / math.sqrt(3), half

    def uses(self, scheme):
        if scheme.distribution == "normal":
            return ("mean", "std", "distribution")
        return ("limit", "low", "high", "distribution")

    def std(self, init, shape):
        return init.gain * self.location_half(init)[1]

    def mean(self, init, shape):
        return init.gain * self.location_half(init)[0]

    def bound(self, init, shape):
        mu, sigma, half = self.location_half(init)
        reach = {"normal": None, "uniform": half, "truncated-normal": TRUNCATION_BOUND * sigma / TRUNCATED_NORMAL_STD
                 }[init.distribution]
        return None if reach is None else init.gain * (abs(mu) + reach)

    def largest_weight(self, init):
        mu, sigma, half = self.location_half(init)
        tail = _TAILS[init.distribution]
        return init.gain * (abs(mu) + (half if init.distribution == "uniform" else tail * sigma))

    def density(self, init, shape):
        std = init.expected_std(shape)
        if std == 0:
            return None
        return location_scale_density(init.distribution, init.expected_mean(shape), std,
                                       init.gain * self.location_half(init)[2])

    def sample(self, init, shape, rng, dtype):
        mu, sigma, half = self.location_half(init)
        return draw_location_scale(shape, rng, init.distribution, init.gain * mu, init.gain * sigma,
                                    init.gain * half, dtype)

    def params(self, init):
        if init.scheme.distribution == "normal":
            return dict(mean=init.mean, std=init.std)
        if init.scheme.distribution == "uniform":
            if init.low is None and init.high is None:
                return {"limit": init.limit}
            low, high = init.interval()
            return {"low": low, "high": high}
        return {}


@dataclass(frozen=True)
class TruncNormalKind(SchemeKind):
    """torch's trunc_normal_: N(mean, std²) restricted to absolute cut-offs [low, high]."""

    @staticmethod
    def truncated(init: Init) -> TruncatedNormal:
        low, high = init.interval()
        return TruncatedNormal(init.mean, init.std, low, high)

    def bounds(self, init):
        return (TRUNC_NORMAL_LOW if init.low is None else init.low,
                TRUNC_NORMAL_HIGH if init.high is None else init.high)

    def std(self, init, shape):
        return init.gain * self.truncated(init).moments()[1]

    def mean(self, init, shape):
        return init.gain * self.truncated(init).moments()[0]

    def bound(self, init, shape):
        return init.gain * max(abs(v) for v in init.interval())

    def largest_weight(self, init):
        return init.gain * max(abs(v) for v in init.interval())

    def density(self, init, shape):
        if init.expected_std(shape) == 0:
            return None
        gain = init.gain
        pdf = self.truncated(init).density()
        return None if pdf is None else (lambda w: pdf(w / gain) / gain)

    def sample(self, init, shape, rng, dtype):
        draws = self.truncated(init).sample(math.prod(shape), rng)
        draws *= init.gain
        return draws.astype(np.float32).reshape(shape).astype(dtype, copy=False)

    def params(self, init):
        low, high = init.interval()
        return dict(mean=init.mean, std=init.std, low=low, high=high)


@dataclass(frozen=True)
class SparseKind(SchemeKind):
    """torch's sparse_: N(0, std²) with ⌈sparsity·rows⌉ zeros per column."""

    @staticmethod
    def zeros_per_column(init: Init, rows: int) -> int:
        """⌈sparsity·rows⌉, computed as torch's sparse_ computes it."""
        return min(rows, math.ceil(init.sparsity * rows))

    def std(self, init, shape):
        rows = shape[0]
        return init.gain * init.std * math.sqrt((rows - self.zeros_per_column(init, rows)) / rows)

    def bound(self, init, shape):
        return None

    def largest_weight(self, init):
        return init.gain * GAUSSIAN_TAIL * init.std

    def density(self, init, shape):
        if init.expected_std(shape) == 0:
            return None
        rows = int(shape[0])
        kept = (rows - self.zeros_per_column(init, rows)) / rows
        return lambda w: normal_pdf(w, 0.0, init.gain * init.std, kept)

    def sample(self, init, shape, rng, dtype):
        return draw_sparse(shape, self.zeros_per_column(init, shape[0]), init.gain * init.std, rng).astype(dtype, copy=False)

    def params(self, init):
        return dict(sparsity=init.sparsity, std=init.std)


@dataclass(frozen=True)
class ZerosKind(SchemeKind):
    """W = 0."""

    def std(self, init, shape):
        return 0.0

    def bound(self, init, shape):
        return abs(init.expected_mean())

    def largest_weight(self, init):
        return 0.0

    def sample(self, init, shape, rng, dtype):
        return np.zeros(shape, dtype=dtype)


@dataclass(frozen=True)
class ConstantKind(SchemeKind):
    """W = gain · value (ones: value 1)."""

    def std(self, init, shape):
        return 0.0

    def mean(self, init, shape):
        return init.gain * init.fill_value

    def bound(self, init, shape):
        return abs(init.expected_mean())

    def largest_weight(self, init):
        return init.gain * abs(init.fill_value)

    def sample(self, init, shape, rng, dtype):
        return np.full(shape, init.gain * init.fill_value, dtype=dtype)  # within float32: make_init checked

    def params(self, init):
        return {"value": init.value} if init.scheme.value is None else {}


@dataclass(frozen=True)
class OrthogonalKind(SchemeKind):
    """Q of the QR of a Gaussian matrix, as torch's orthogonal_; lsuv starts from it."""

    def std(self, init, shape):
        rows = shape[0]
        cols = math.prod(shape) // rows
        # the min(rows, cols) orthonormal vectors have unit norm: mean square 1/max(rows, cols)
        return init.gain / math.sqrt(max(rows, cols))

    def bound(self, init, shape):
        return init.gain

    def largest_weight(self, init):
        return init.gain  # orthonormal vectors: entries within ±1

    def density(self, init, shape):
        std = init.expected_std(shape)
        return None if std == 0 else (lambda w: normal_pdf(w, 0.0, std))

    def sample(self, init, shape, rng, dtype):
        return (init.gain * draw_orthogonal(shape, rng)).astype(dtype)


@dataclass(frozen=True)
class LsuvKind(OrthogonalKind):
    """Orthogonal, then rescaled per layer from the data (by the engine): no density to draw."""

    def density(self, init, shape):
        return None


def _taps_std(init: Init, shape: tuple[int, ...]) -> float:
    """delta: one orthogonal tap of mean square 1/max(out, in) among ∏kernel taps; per tap:
    every tap orthogonal, scaled by 1/√taps. Either way fan_in·Var = in/max(out, in)."""
    taps = math.prod(shape[2:])
    return init.gain / math.sqrt(max(shape[0], shape[1]) * taps)


@dataclass(frozen=True)
class DeltaOrthogonalKind(SchemeKind):
    """The kernel's centre tap orthogonal, every other tap 0 (Xiao et al. 2018)."""

    def std(self, init, shape):
        return _taps_std(init, shape)

    def bound(self, init, shape):
        return init.gain

    def largest_weight(self, init):
        return init.gain

    def sample(self, init, shape, rng, dtype):
        weights = np.zeros(shape, dtype=dtype)
        centre = (slice(None), slice(None)) + tuple(d // 2 for d in shape[2:])
        weights[centre] = init.gain * draw_orthogonal(shape[:2], rng)
        return weights


@dataclass(frozen=True)
class OrthogonalPerTapKind(SchemeKind):
    """Every tap an independent orthogonal matrix, times 1/√taps."""

    def std(self, init, shape):
        return _taps_std(init, shape)

    def bound(self, init, shape):  # orthogonal entries are within ±1, then / √taps
        return init.gain / math.sqrt(math.prod(init.checked_shape(shape)[2:]))

    def largest_weight(self, init):
        return init.gain

    def density(self, init, shape):
        std = init.expected_std(shape)
        return None if std == 0 else (lambda w: normal_pdf(w, 0.0, std))

    def sample(self, init, shape, rng, dtype):
        return (init.gain * draw_orthogonal_per_tap(shape, rng)).astype(dtype)


@dataclass(frozen=True)
class OnesPatternKind(SchemeKind):
    """A fixed pattern of ones (identity, dirac): a fraction p of the entries is gain, the rest 0."""

    def ones_fraction(self, init: Init, shape: tuple[int, ...]) -> float:
        raise NotImplementedError

    def std(self, init, shape):
        # a fraction p of the entries is 1, the rest 0: std √(p(1 − p)) about the mean p
        p = self.ones_fraction(init, shape)
        return init.gain * math.sqrt(p * (1 - p))

    def mean(self, init, shape):
        if shape is None:
            raise TypeError(f"the mean of {init.name} depends on the shape: pass it")
        return init.gain * self.ones_fraction(init, init.checked_shape(shape))

    def bound(self, init, shape):
        return init.gain

    def largest_weight(self, init):
        return init.gain


@dataclass(frozen=True)
class IdentityKind(OnesPatternKind):
    """W = I, as torch's eye_."""

    def ones_fraction(self, init, shape):
        return min(shape[0], shape[1]) / (shape[0] * shape[1])

    def sample(self, init, shape, rng, dtype):
        if len(shape) != 2:
            raise InitcliError("shape", f"identity needs a 2-D shape, got {shape}; "
                                        "for conv kernels use delta-orthogonal or dirac")
        return (init.gain * np.eye(shape[0], shape[1])).astype(dtype)


@dataclass(frozen=True)
class DiracKind(OnesPatternKind):
    """torch's dirac_: each input channel feeds one output channel per group at the centre tap."""

    def ones_fraction(self, init, shape):
        per_group = shape[0] // init.groups
        return init.groups * min(per_group, shape[1]) / math.prod(shape)

    def sample(self, init, shape, rng, dtype):
        return dirac_weights(shape, init.groups, init.gain).astype(dtype, copy=False)

    def params(self, init):
        return {"groups": init.groups}


KINDS: dict[str, SchemeKind] = {}


def register_kind(kind: SchemeKind) -> SchemeKind:
    """Add a scheme kind (a Scheme whose `kind` is its name then draws through it)."""
    if kind.name in KINDS:
        raise ValueError(f"scheme kind {kind.name} is already registered")
    KINDS[kind.name] = kind
    return kind


for _kind in (
    ZerosKind("zeros", iid=False, needs_fans=False),
    ConstantKind("constant", iid=False, needs_fans=False, options=("value",), range_options=("value",)),
    FixedKind("fixed", needs_fans=False, takes_distribution=True,
              options=("mean", "std", "distribution", "limit", "low", "high"),
              range_options=("mean", "std", "low", "high", "limit")),
    TruncNormalKind("trunc-normal", needs_fans=False, options=("mean", "std", "low", "high"),
                    range_options=("low", "high")),
    ScalingKind("scaling", variance_scaling=True, takes_distribution=True,
                options=("mode", "distribution", "in_axis", "out_axis", "batch_axis")),
    SparseKind("sparse", options=("sparsity", "std"), range_options=("std",)),
    OrthogonalKind("orthogonal"),
    LsuvKind("lsuv"),
    DeltaOrthogonalKind("delta-orthogonal"),
    OrthogonalPerTapKind("orthogonal-per-tap"),
    IdentityKind("identity", iid=False),
    DiracKind("dirac", iid=False, options=("groups",)),
):
    register_kind(_kind)
# schemes whose formula needs no fans: the only ones a 1-D shape (a bias vector) can take
NO_FAN_KINDS = tuple(name for name, kind in KINDS.items() if not kind.needs_fans)
