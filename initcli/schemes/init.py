"""`Init`: a scheme with every argument resolved, which hands its formula, density and
sampler to its scheme kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..activations import DEFAULT_NEGATIVE_SLOPE
from ..errors import InitcliError
from .core import DEFAULT_SPARSITY, compute_fans
from .kinds import KINDS, SchemeKind
from .presets import Scheme


@dataclass(frozen=True)
class Init:
    """A scheme with every argument resolved: what `sample_weights` draws from.

    `mode` and `distribution` are the effective ones (the preset's unless overridden, and the
    preset's for schemes that do not use them). `gain` multiplies the weights of every
    scheme, i.e. the std (scale = gain²). `low`/`high` are the uniform's bounds when given
    (None: ±limit) and trunc-normal's cut-offs. What each formula says, and how weights are
    drawn, belongs to the scheme's kind (`KINDS`): these methods hand the work to it.
    """

    scheme: Scheme
    gain: float = 1.0
    mode: str = "fan_in"
    distribution: str = "normal"
    activation: str = "relu"
    negative_slope: float = DEFAULT_NEGATIVE_SLOPE
    value: float = 0.5
    std: float = 1.0
    limit: float = 1.0
    mean: float = 0.0
    low: float | None = None
    high: float | None = None
    sparsity: float = DEFAULT_SPARSITY
    groups: int = 1
    in_axis: tuple[int, ...] = (1,)
    out_axis: tuple[int, ...] = (0,)
    batch_axis: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.scheme.name

    @property
    def kind(self) -> str:
        return self.scheme.kind

    @property
    def scheme_kind(self) -> SchemeKind:
        """The kind object holding this scheme's formula, density and sampler."""
        return KINDS[self.scheme.kind]

    @property
    def iid(self) -> bool:
        """Does mean-field theory apply (see `SchemeKind.iid`)?"""
        return self.scheme_kind.iid

    @property
    def fill_value(self) -> float:
        """A constant preset's value before the gain: ones' 1, constant's --value."""
        return self.value if self.scheme.value is None else self.scheme.value

    @property
    def slope_factor(self) -> float:
        """√(1 + a²) for He with leaky-relu (He et al. 2015, eq. 15 with slope a), else 1;
        by hypot, so a slope of 1e160 gives 1e160 rather than an overflow."""
        if self.scheme.slope_corrected and self.activation == "leaky-relu":
            return math.hypot(1.0, self.negative_slope)
        return 1.0

    @property
    def scale(self) -> float:
        """The variance-scaling `scale` of the preset, slope-corrected for He (0 where the
        correction takes it below float64's range)."""
        factor = self.slope_factor
        return self.scheme.scale / factor / factor

    def fans(self, shape: Sequence[int]) -> tuple[int, int]:
        """(fan_in, fan_out) with this init's axes (torch's layout unless overridden)."""
        return compute_fans(shape, in_axis=self.in_axis, out_axis=self.out_axis, batch_axis=self.batch_axis)

    def interval(self) -> tuple[float, float]:
        """The uniform scheme's [low, high] (±limit unless given), or trunc-normal's cut-offs."""
        return self.scheme_kind.bounds(self)

    def checked_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2 and self.scheme_kind.needs_fans:
            raise InitcliError("shape", f"{self.name} needs a tensor of at least 2 dimensions (out, in, *kernel); a "
                                        f"1-D shape {shape} (a bias vector) takes zeros, ones, constant, normal, "
                                        "uniform or trunc-normal, which need no fans")
        if not shape or any(d <= 0 for d in shape):
            raise InitcliError("shape", f"needs positive dimensions (out, in, *kernel), got {shape}")
        return shape

    # -- what the formula says ---------------------------------------------------------

    def expected_std(self, shape: Sequence[int]) -> float:
        """The std the scheme's formula gives for a tensor of this shape (torch layout)."""
        return self.scheme_kind.std(self, self.checked_shape(shape))

    def expected_mean(self, shape: Sequence[int] | None = None) -> float:
        """The mean the formula gives; identity and dirac need the shape."""
        return self.scheme_kind.mean(self, shape)

    def bound(self, shape: Sequence[int]) -> float | None:
        """The largest |W| the distribution allows: the uniform limit or the truncation point."""
        return self.scheme_kind.bound(self, shape)

    def largest_weight(self) -> float:
        """An upper bound on |W| over every shape and draw (n ≥ 1 for the scaling schemes);
        inf where it is beyond float64. What `make_init` checks against float32's range."""
        return self.scheme_kind.largest_weight(self)

    def density(self, shape: Sequence[int]):
        """The probability density the weights are drawn from, as a function of w, or None
        where there is none to draw (zeros, constant, identity, dirac, delta-orthogonal, lsuv,
        whose scale comes from the data). Orthogonal entries are near-Gaussian at this std
        for large matrices; for sparse, the density of its nonzero part (the rest is a spike
        at 0). Tiny stds give large densities, never an overflow or a warning."""
        return self.scheme_kind.density(self, shape)

    # -- drawing -------------------------------------------------------------------------

    def sample(self, shape: Sequence[int], rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
        """Draw a tensor of `shape` (torch layout). Random draws are made at float32 precision
        whatever `dtype` is, so float32 and float64 runs with one seed hold the same weights."""
        return self.scheme_kind.sample(self, self.checked_shape(shape), rng, dtype)

    def params(self) -> dict:
        """The arguments that reproduce this init (for JSON output and saved files)."""
        out = {"scheme": self.name, "gain": self.gain, "mode": self.mode, "distribution": self.distribution,
               "activation": self.activation, "negative_slope": self.negative_slope}
        out.update(self.scheme_kind.params(self))
        return out
