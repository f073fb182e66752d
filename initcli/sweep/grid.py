"""A sweep's grid: its axes, its points (made lazily), their seeds, and the columns of a row.

A grid is the product of axes (σ_w or scheme, σ_b, depth, width, batch, activation) times
seeds. The architecture axes (ARCH_AXES: residual_init, 'none' or a preset that makes the
point a residual stack; param, sp/ntk/mup) are coordinates only in grids that give them.
Every point's random seed is derived from its coordinates alone (`point_seed`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from ..errors import InitcliError

COORDINATES = ("sigma_w", "sigma_b", "depth", "width", "batch", "scheme", "activation", "seed")
# Architecture axes: coordinates of a row, its key and its seed only when the grid has them, so
# that a grid without them keeps the rows (and run_seeds) it had before they existed.
ARCH_AXES = ("residual_init", "param")
FLOAT_AXES = ("sigma_w", "sigma_b")
INT_AXES = ("depth", "width", "batch")
NAME_AXES = ("scheme", "activation") + ARCH_AXES
SUMMARY = ("first_act_var", "last_act_var", "first_grad_var", "last_grad_var", "grad_ratio", "max_saturated_frac",
           "max_dead_frac", "min_effective_rank", "last_input_cosine", "verdict", "reason")
MEASURED = ("xi_q", "xi_c", "xi_grad")
THEORY = ("theory_q_star", "theory_chi", "theory_xi_c", "theory_xi_q", "theory_xi_grad", "theory_phase")
MAX_POINTS = 10_000_000  # streamed to a results file (--out); held for stdout up to MAX_KEPT_ROWS
MAX_AXIS = 100_000
DEFAULTS = {"sigma_b": [0.0], "depth": [10], "width": [256], "batch": [512], "activation": ["relu"]}


def coordinates(arch: Iterable[str] = ()) -> tuple[str, ...]:
    """A row's coordinate columns: the architecture axes in `arch` go before the seed."""
    arch = set(arch)
    return COORDINATES[:-1] + tuple(name for name in ARCH_AXES if name in arch) + COORDINATES[-1:]


def columns(metric: str | None = None, arch: Iterable[str] = ()) -> tuple[str, ...]:
    """A row's columns; with training (`metric` 'accuracy' or 'r2'), its final loss and score
    too; with architecture axes (`arch`, names from ARCH_AXES), their coordinate columns."""
    trained = () if metric is None else ("final_loss", f"final_{metric}")
    return coordinates(arch) + ("run_seed", "settings") + SUMMARY + MEASURED + THEORY + trained + ("error",)


KEY = COORDINATES + ("settings",)  # what resumption compares: the point and every other setting


def key_columns(header: Sequence[str]) -> tuple[str, ...]:
    """KEY for a file of these columns: its coordinates (architecture axes included) and settings."""
    return tuple(c for c in header if c in COORDINATES or c in ARCH_AXES) + ("settings",)


# -- axes ---------------------------------------------------------------------------------------


def _number(text: str, param: str, integer: bool) -> float | int:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "positive integers" if integer else "numbers"
        raise InitcliError(param, f"must be a comma list of {kind} or start:stop:count; '{text}' is not one") from None
    if not integer and not math.isfinite(value):
        raise InitcliError(param, f"must be finite, got '{text}'")
    return value


def parse_axis(text: str, param: str) -> list:
    """'1,2,3' or 'start:stop:count' (count values evenly spaced, both ends included) for a
    number axis; a comma list of names for scheme and activation. Repeats are dropped."""
    text = str(text).strip()
    if param in NAME_AXES:
        import re

        # commas inside NAME(key=value,...) belong to the scheme
        values = [item.strip().lower() for item in re.split(r",(?![^()]*\))", text)]
        if not all(values):
            raise InitcliError(param, f"must be a comma list of names such as relu,tanh; got '{text}'")
        return list(dict.fromkeys(values))
    integer = param in INT_AXES
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise InitcliError(param, f"a range is start:stop:count, got '{text}'")
        start, stop = (_number(p.strip(), param, integer) for p in parts[:2])
        count = parts[2].strip()
        if not count.isdecimal() or not 1 <= int(count) <= MAX_AXIS:
            raise InitcliError(param, f"the count of start:stop:count must be an integer from 1 to {MAX_AXIS:,}, "
                                      f"got '{count}'")
        count = int(count)
        if count == 1:
            values = [start]
        elif integer:
            step, extra = divmod(stop - start, count - 1)
            if extra:
                raise InitcliError(param, f"{text} does not give integers: stop − start must be a multiple of count − 1")
            values = [start + i * step for i in range(count)]
        else:
            # 12 significant digits: 0.1·3 is 0.3 in the file, not 0.30000000000000004
            values = [float(f"{v:.12g}") for v in np.linspace(start, stop, count)]
    else:
        values = [_number(item.strip(), param, integer) for item in text.split(",")]
    for value in values:
        if integer and value <= 0:
            raise InitcliError(param, f"must be positive integers, got {value}")
        if not integer and value < 0:
            raise InitcliError(param, f"must be numbers ≥ 0, got {value:g}")
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class Point:
    """One run of a sweep. Either sigma_w (mean-field weights) or scheme is set."""

    sigma_w: float | None
    sigma_b: float
    depth: int
    width: int
    batch: int
    scheme: str | None
    activation: str
    seed: int  # the replica: base seed + 0, 1, … (not the random seed, see run_seed)
    residual_init: str | None = None  # None: not an axis of the grid; 'none' or a preset name
    param: str | None = None  # None: not an axis of the grid; sp, ntk or mup

    @property
    def arch_axes(self) -> tuple[str, ...]:
        return tuple(name for name in ARCH_AXES if getattr(self, name) is not None)

    @property
    def coordinates(self) -> tuple[str, ...]:
        return coordinates(self.arch_axes)

    @property
    def residual(self) -> bool:
        """Whether the point's residual-init axis makes it a residual stack."""
        return self.residual_init not in (None, "none")

    @property
    def key(self) -> tuple[str, ...]:
        """The coordinates as the CSV file spells them: what resumption compares."""
        return tuple(file_cell(getattr(self, name)) for name in self.coordinates)

    @property
    def run_seed(self) -> int:
        return point_seed(self)


def file_cell(value) -> str:
    """A coordinate as the results file spells it (render.csv_cell's text)."""
    from ..render import csv_cell

    return str(csv_cell(value))


def point_seed(point: Point) -> int:
    """The random seed of a point, from its coordinates only (never the worker or the order):
    SHA-256 of the coordinates as the file spells them, through numpy's SeedSequence, as a
    63-bit integer that `propagate --seed` accepts to reproduce the point."""
    digest = hashlib.sha256("\x1f".join(point.key).encode()).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    low, high = np.random.SeedSequence(words).generate_state(2, np.uint32).tolist()
    return ((high << 32) | low) >> 1


def grid(axes: dict[str, Sequence], seeds: int = 1, base_seed: int = 0) -> Grid:
    """Every point of the product of `axes` (values per axis name) times `seeds` replicas,
    in a fixed order: the order rows come out in. The points are made as they are read
    (see `Grid`), so a grid of millions costs nothing until it runs."""
    from ..propagation import check_seed

    known = COORDINATES[:-1] + ARCH_AXES
    unknown = set(axes) - set(known)
    if unknown:
        raise InitcliError(sorted(unknown)[0], f"is not a sweep axis; axes are {', '.join(known)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_AXIS:
        raise InitcliError("seeds", f"must be an integer from 1 to {MAX_AXIS:,}, got {seeds!r}")
    base_seed = check_seed(base_seed)
    values = {name: list(axes[name]) for name in axes if axes[name] is not None}
    if values.get("sigma_w") and values.get("scheme"):
        raise InitcliError("scheme", "give either --sigma-w (mean-field weights) or --scheme, not both")
    if not values.get("sigma_w") and not values.get("scheme"):
        raise InitcliError("sigma_w", "give --sigma-w (weights N(0, σ_w²/fan_in)) or --scheme")
    for name, default in DEFAULTS.items():
        values.setdefault(name, default)
        if not values[name]:
            raise InitcliError(name, "needs at least one value")
    for name in ARCH_AXES:
        if name in values:
            if not values[name]:
                raise InitcliError(name, "needs at least one value")
            values[name] = list(dict.fromkeys(_check_arch_value(name, v) for v in values[name]))
    # an axis not given is one None: the points keep the coordinates (and seeds) of before
    arch = {name: values.get(name) or [None] for name in ARCH_AXES}
    weights = [(s, None) for s in values.get("sigma_w") or []] + [(None, s) for s in values.get("scheme") or []]
    made = Grid((tuple(weights), *(tuple(values[n]) for n in ("sigma_b", "depth", "width", "batch", "activation")),
                 *(tuple(arch[n]) for n in ARCH_AXES), tuple(range(base_seed, base_seed + seeds))))
    if len(made) > MAX_POINTS:
        raise InitcliError(None, f"the grid has {len(made):,} points; at most {MAX_POINTS:,} are accepted")
    return made


class Grid(Sequence):
    """The points of a product of axes, made when read: point i is found from i alone (the
    axes as digits, the seed fastest), so a grid holds its axes, never its points. Slices and
    sums are lists."""

    def __init__(self, axes: tuple[tuple, ...]) -> None:
        # axes: (σ_w, scheme) pairs, σ_b, depth, width, batch, activation, residual_init, param, seed
        self.axes = axes
        self._length = math.prod(len(values) for values in axes)

    def __len__(self) -> int:
        return self._length

    @staticmethod
    def _point(values: tuple) -> Point:
        (sigma_w, scheme), sigma_b, depth, width, batch, activation, residual_init, param, seed = values
        return Point(sigma_w, sigma_b, depth, width, batch, scheme, activation, seed, residual_init, param)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError("grid index out of range")
        index %= len(self)
        values = []
        for axis in reversed(self.axes):
            index, digit = divmod(index, len(axis))
            values.append(axis[digit])
        return self._point(tuple(reversed(values)))

    def __iter__(self) -> Iterator[Point]:
        return map(self._point, product(*self.axes))

    def to_check(self) -> Iterator[Point]:
        """The points whose checks decide every point's, in grid order: the replicas differ only
        in their seed, and σ_w and σ_b matter to the checks only through bounds (finite, ≥ 0, the
        dtype's range, zero biases for fixup) that their smallest and largest values decide."""
        weights, sigma_b, *middle, seeds = self.axes
        return map(self._point, product(_ends(weights, 0), _ends(sigma_b), *middle, seeds[:1]))

    def __add__(self, other) -> list[Point]:
        return [*self, *other]

    def __radd__(self, other) -> list[Point]:
        return [*other, *self]

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None


def _ends(values: tuple, part: int | None = None) -> tuple:
    """The smallest and largest of `values` (or of their `part`, where it is a number), in
    their order; a value whose part is not a number (a scheme name) stays."""
    numbers = [v if part is None else v[part] for v in values]
    numbers = [n for n in numbers if n is not None]
    if not numbers:
        return values
    low, high = min(numbers), max(numbers)
    return tuple(v for v in values if (v if part is None else v[part]) in (None, low, high))


def _check_arch_value(name: str, value) -> str:
    """A residual-init axis value ('none' or a preset) or a param axis value, as the file spells it."""
    from ..residual_init import RESIDUAL_INIT_NAMES

    key = str(value).strip().lower()
    if name == "param":
        from ..parametrization import check_param

        return check_param(key)
    if key != "none" and key not in RESIDUAL_INIT_NAMES:
        raise InitcliError("residual_init", f"unknown residual-init preset '{value}'; choose from none, "
                                            f"{', '.join(RESIDUAL_INIT_NAMES)}")
    return key

