"""Heatmaps of a sweep's rows: a metric averaged over two axes, and theory's lines to draw over
them (the edge of chaos, Schoenholz et al.'s trainable depth)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InitcliError
from .grid import ARCH_AXES, coordinates
from .measures import theory_columns

HEATMAP_METRICS = ("xi_grad", "xi_c", "xi_q", "grad_ratio", "verdict", "accuracy", "final_loss", "theory_chi",
                   "theory_xi_c", "theory_xi_grad")
# depth scales and ratios span decades: averaged and coloured on log10
LOG_METRICS = ("xi_grad", "xi_c", "xi_q", "grad_ratio", "theory_xi_c", "theory_xi_grad", "final_loss")


@dataclass(frozen=True)
class Heatmap:
    """`metric` over two axes: cells[i][j] at (ys[i], xs[j]), each the mean over the other
    axes and the seeds of the rows without an error (the geometric mean, of the finite
    positive values, for a `log` metric; for the verdict, the one seen most often, the
    first seen on a tie); None where no row has a value."""

    y_axis: str
    x_axis: str
    metric: str  # the column: accuracy resolves to final_accuracy or final_r2
    ys: tuple
    xs: tuple
    cells: tuple[tuple, ...]
    log: bool


def heatmap_metric(metric: str, row_columns: Sequence[str]) -> str:
    """The column a heatmap --metric names; 'accuracy' is the training score column."""
    key = str(metric).strip().lower()
    if key == "accuracy":
        found = [c for c in ("final_accuracy", "final_r2") if c in row_columns]
        if not found:
            raise InitcliError("metric", "accuracy needs --train TASK: the points were not trained")
        return found[0]
    if key not in HEATMAP_METRICS and key not in ("final_accuracy", "final_r2"):
        raise InitcliError("metric", f"must be one of {', '.join(HEATMAP_METRICS)}, got '{metric}'")
    if key == "final_loss" and key not in row_columns:
        raise InitcliError("metric", "final_loss needs --train TASK: the points were not trained")
    return key


def check_heatmap_axes(text: str) -> tuple[str, str]:
    """'sigma_w,sigma_b' → (rows axis, columns axis), two different coordinates."""
    pair = [item.strip().lower() for item in str(text).split(",")]
    known = coordinates(ARCH_AXES)
    if len(pair) != 2 or not all(p in known for p in pair) or pair[0] == pair[1]:
        raise InitcliError("heatmap", f"must be two different axes such as sigma_w,sigma_b; axes are "
                                      f"{', '.join(known)}")
    return pair[0], pair[1]


def _order(values) -> list:
    return sorted(values, key=lambda v: (v is None, isinstance(v, str), v if v is not None else 0))


def heatmap(rows: Sequence[dict], y_axis: str, x_axis: str, metric: str) -> Heatmap:
    from collections import Counter, defaultdict

    log = metric in LOG_METRICS
    gathered: dict = defaultdict(list)
    for row in rows:
        if not row.get("error"):
            gathered[(row[y_axis], row[x_axis])].append(row.get(metric))
    ys = tuple(_order({key[0] for key in gathered}))
    xs = tuple(_order({key[1] for key in gathered}))

    def cell(values):
        if metric == "verdict":
            named = [v for v in values if v]
            return Counter(named).most_common(1)[0][0] if named else None
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        numbers = [v for v in numbers if math.isfinite(v) and (v > 0 or not log)]
        if not numbers:
            return None
        if log:
            return 10 ** (sum(math.log10(v) for v in numbers) / len(numbers))
        return sum(numbers) / len(numbers)

    cells = tuple(tuple(cell(gathered[(y, x)]) if (y, x) in gathered else None for x in xs) for y in ys)
    return Heatmap(y_axis, x_axis, metric, ys, xs, cells, log)


@lru_cache(maxsize=4096)
def critical_sigma_w(activation: str, sigma_b: float) -> float:
    """theory.critical_sigma_w by activation name, remembered: each is a bisection over
    fixed-point quadratures (~0.1 s), and a heatmap asks for the same σ_b's twice."""
    from ..activations import get_activation
    from ..theory import critical_sigma_w as edge

    with np.errstate(all="ignore"):
        return edge(get_activation(activation), float(sigma_b))


def critical_line(rows: Sequence[dict], y_axis: str, x_axis: str, samples: int = 8) -> list[tuple[float, float]]:
    """Theory's edge of chaos (χ₁ = 1) as (σ_b, σ_w) pairs at the rows' σ_b values and
    `samples` evenly between them, when the axes are σ_w and σ_b and the rows are of one
    activation; [] otherwise."""
    activations = {row.get("activation") for row in rows}
    if {y_axis, x_axis} != {"sigma_w", "sigma_b"} or len(activations) != 1:
        return []
    sigma_bs = {float(row["sigma_b"]) for row in rows if row.get("sigma_b") is not None}
    if not sigma_bs:
        return []
    activation = activations.pop()
    sigma_bs |= {float(v) for v in np.linspace(min(sigma_bs), max(sigma_bs), samples)}
    line = [(sigma_b, critical_sigma_w(activation, sigma_b)) for sigma_b in sorted(sigma_bs)]
    return [(b, w) for b, w in line if math.isfinite(w)]


def trainable_depth(rows: Sequence[dict], y_axis: str, x_axis: str,
                    samples: int = 40) -> list[tuple[float, float]]:
    """Schoenholz et al. 2017's trainability bound as (σ_w, 6·ξ_c) pairs over the rows' σ_w
    range, when the axes are σ_w and depth and the rows share one activation and one σ_b;
    [] otherwise. ξ_c is infinite on the critical line: those σ_w are left out."""
    activations = {row.get("activation") for row in rows}
    sigma_bs = {row.get("sigma_b") for row in rows}
    if {y_axis, x_axis} != {"sigma_w", "depth"} or len(activations) != 1 or len(sigma_bs) != 1:
        return []
    sigma_ws = [float(row["sigma_w"]) for row in rows if row.get("sigma_w") is not None]
    if not sigma_ws:
        return []
    activation, sigma_b = activations.pop(), float(sigma_bs.pop())
    low, high = min(sigma_ws), max(sigma_ws)
    line = []
    for sigma_w in np.linspace(low, high, samples if high > low else 1):
        if sigma_w > 0:
            xi = theory_columns(activation, float(sigma_w), sigma_b)["theory_xi_c"]
            if math.isfinite(xi):
                line.append((float(sigma_w), 6 * xi))
    return line
