"""A coordinate check's records (its rows of l1 and its slopes), the log-log fit of l1 against
width or depth with its standard error, and the verdict on a slope."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

# |slope| below this is flat whatever its standard error: an exponent of 0.1 is a factor
# 2^0.4 ≈ 1.3 from 128 to 2048, within what finite-width corrections O(n^−1/2) move.
DEFAULT_FLAT_TOL = 0.1
SE_FACTOR = 3.0  # and within 3 standard errors of 0
ROW_COLUMNS = ("layer", "step", "width", "depth", "seed", "l1")
SUMMARY_COLUMNS = ("layer", "step", "against", "width", "depth", "points", "slope", "slope_se", "predicted",
                   "verdict")
# a user's model (`--module`) has its own depth: no depth column, which would always be empty
MODULE_ROW_COLUMNS = tuple(c for c in ROW_COLUMNS if c != "depth")
MODULE_SUMMARY_COLUMNS = tuple(c for c in SUMMARY_COLUMNS if c != "depth")


@dataclass(frozen=True)
class CoordRow:
    layer: str  # "1" … str(depth) for the hidden layers (1 is the input layer), "readout"
    step: int  # optimizer steps taken before the measurement
    width: int
    depth: int | None  # None for a user's model (`--module`): its depth is its own
    seed: int
    l1: float  # mean |x| over the batch and the units


@dataclass(frozen=True)
class Slope:
    layer: str
    step: int
    against: str  # "width" or "depth"
    width: int | None  # fixed when against depth
    depth: int | None  # fixed when against width
    points: int
    slope: float | None
    slope_se: float | None
    predicted: float | None  # the exponent theory gives, where it gives one
    verdict: str


@dataclass(frozen=True)
class CoordResult:
    params: dict
    rows: tuple[CoordRow, ...]
    slopes: tuple[Slope, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return MODULE_ROW_COLUMNS if "module" in self.params else ROW_COLUMNS

    @property
    def summary_columns(self) -> tuple[str, ...]:
        return MODULE_SUMMARY_COLUMNS if "module" in self.params else SUMMARY_COLUMNS

    def row_dicts(self) -> list[dict]:
        return [{k: v for k, v in asdict(row).items() if k in self.columns} for row in self.rows]

    def summary_rows(self) -> list[dict]:
        return [{k: v for k, v in asdict(slope).items() if k in self.summary_columns} for slope in self.slopes]


def fit_slope(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(slope, standard error) of the least-squares line of log y on log x; the error is nan
    with fewer than three points or a single x."""
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    if sxx == 0:
        return math.nan, math.nan
    slope = float(np.sum((lx - lx.mean()) * (ly - ly.mean())) / sxx)
    if len(lx) < 3:
        return slope, math.nan
    residuals = ly - ly.mean() - slope * (lx - lx.mean())
    return slope, math.sqrt(float(np.sum(residuals**2)) / (len(lx) - 2) / sxx)


def verdict(slope: float, se: float, flat_tol: float = DEFAULT_FLAT_TOL) -> str:
    """flat: |slope| ≤ flat_tol, or within 3 standard errors of 0 when those errors are small
    (≤ flat_tol); grows / shrinks: beyond flat_tol and 3 standard errors; unclear: a fit too
    loose to tell (large errors: l1 is far from a power of width, as when a run overshoots)."""
    known = math.isfinite(se)
    if abs(slope) <= flat_tol or (known and se <= flat_tol and abs(slope) <= SE_FACTOR * se):
        return "flat"
    if not known or abs(slope) > SE_FACTOR * se:
        return "grows" if slope > 0 else "shrinks"
    return "unclear"


def group_slopes(rows: Sequence[CoordRow], against: str, flat_tol: float,
                 predict: Callable[[str, int], float | None], order: Callable[[str], int]) -> list[Slope]:
    """One Slope per (layer, step, fixed depth or width) group; `predict(layer, step)` gives
    theory's exponent (or None), `order(layer)` the rank of a layer in the table."""
    fixed = "depth" if against == "width" else "width"
    groups: dict[tuple, list[CoordRow]] = {}
    for row in rows:
        groups.setdefault((row.layer, row.step, getattr(row, fixed)), []).append(row)
    out = []
    for (layer, step, fixed_value), members in groups.items():
        xs = [getattr(r, against) for r in members]
        if len(set(xs)) < 2:
            continue  # a layer only some depths have
        l1 = [r.l1 for r in members]
        predicted = predict(layer, step) if against == "width" else None
        if not all(math.isfinite(v) for v in l1):
            slope, se, word = None, None, "overflow"
        elif any(v == 0 for v in l1):
            slope, se, word = None, None, "zero"
        else:
            slope, se = fit_slope(xs, l1)
            word = verdict(slope, se, flat_tol)
            se = None if math.isnan(se) else se
        out.append(Slope(layer, step, against, fixed_value if fixed == "width" else None,
                         fixed_value if fixed == "depth" else None, len(members), slope, se, predicted, word))
    return sorted(out, key=lambda s: (s.width or 0, s.depth or 0, s.step, order(s.layer)))


