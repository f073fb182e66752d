"""The records the verdict rules read and return (`Unit`, `Profile`, `Verdict`), the rules'
thresholds, and the arithmetic they share (the finite-width drift bound, ratios, rates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

VERDICTS = ("symmetric", "overflow", "no-signal", "dead", "saturated", "rank-collapse", "entropy-collapse",
            "exploding", "vanishing", "stable")
ROLES = ("layer", "stream", "branch", "head", "stem", "inner")
JUDGED_ROLES = ("layer", "stream")
RANK_COLLAPSE_COSINE = 0.99
ENTROPY_COLLAPSE_MAX = 0.9
SYMMETRY_RANK = 1.001
DEAD_FRAC = 0.5
SATURATED_FRAC = 0.5
MIN_FACTOR = 10.0
NAN = math.nan
CONTAINERS = ("Sequential", "ModuleList", "ModuleDict")  # plain containers: stages, not blocks


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One measured unit. `name` says where it is ("layer 3", "block 2", "blocks.2");
    `owner` is how a reason names what it holds ("layer 3's", "block 1's attention output"),
    by default the name's possessive. `act_var` is its output's variance (for a branch: what
    it adds to the stream), `grad_var` its gradient's variance per entry, `size` its values per
    input (nan when not known: then the judged units are taken to share one shape)."""

    name: str
    role: str = "layer"
    act_var: float = NAN
    grad_var: float = NAN
    weight_grad_var: float = NAN
    dead_frac: float = NAN
    saturated_frac: float = NAN
    effective_rank: float = NAN
    token_cosine: float = NAN
    attn_max: float = NAN
    attn_entropy: float = NAN
    owner: str = ""
    size: float = NAN

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if not self.owner:
            object.__setattr__(self, "owner", f"{self.name}'s")


@dataclass(frozen=True)
class Profile:
    """The units of one network in execution order, and how to read them: `bound` is the
    finite-width drift bound (`drift_bound`), `noun` what a judged unit is called ("layer",
    "block"), `sample` what dead units never fire for ("input", "token"), `overflow_at` where
    the run saw values leave `dtype`'s range (None: read from the units), `zero_head` the
    head known to start at zero output (the units were measured with a unit cotangent at its
    input), None when there is none or it is to be read from the head's statistics."""

    units: tuple[Unit, ...]
    bound: float
    noun: str = "layer"
    sample: str = "input"
    dtype: str = "float32"
    overflow_at: str | None = None
    zero_head: str | None = None

    def role(self, *roles: str) -> tuple[Unit, ...]:
        return tuple(unit for unit in self.units if unit.role in roles)

    @property
    def judged(self) -> tuple[Unit, ...]:
        return self.role(*JUDGED_ROLES)


@dataclass(frozen=True)
class Verdict:
    """A verdict, its reason, the names of the judged units and the numbers the rule compared
    (the reason is formatted from these alone)."""

    verdict: str
    reason: str
    units: tuple[str, ...]
    numbers: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.units)


# -- arithmetic the rules share -------------------------------------------------------------------


def drift_bound(sizes: Sequence[float]) -> float:
    """The factor beyond which a variance change over a stack is not finite-width noise:
    max(10, exp(3·√(5·Σ 1/n_l))) over the widths after the input, `sizes[1:]`."""
    return max(MIN_FACTOR, math.exp(3 * math.sqrt(5 * sum(1 / n for n in sizes[1:]))))


def ratio(top: float, bottom: float) -> float:
    """top / bottom, with 0/0 nan and x/0 inf."""
    if bottom == 0:
        return math.nan if top == 0 else math.inf
    return top / bottom


def settled_rate(values: Sequence[float]) -> float:
    """Per-unit growth, unit l to l+1, over the deeper half of a profile (all of a short one):
    where the signal has settled near its fixed point, so a transient near the input (tanh's q
    relaxing from 1 towards 0 under Xavier) does not pass for an exponential trend."""
    start = len(values) // 2 if len(values) >= 4 else 0
    steps = len(values) - 1 - start
    if steps <= 0:
        return 1.0
    measured = ratio(values[-1], values[start])
    if math.isnan(measured):
        return 1.0
    return measured ** (1 / steps)


def compounded(step: float, steps: int) -> float:
    """step ** steps, inf (or 0) where a float cannot hold it."""
    try:
        return step ** steps
    except OverflowError:
        return math.inf


def finite(x) -> bool:
    """A number, not None, nan or ±inf."""
    return x is not None and math.isfinite(x)
