"""`initcli sweep`: one propagate run per point of a grid, in processes or on a Dask cluster."""

from __future__ import annotations

import math
from typing import Annotated, Optional

import typer

from . import app
from .options import (
    Jobs,
    OutputOptions,
    check_outputs,
    command,
    note,
    output_format,
    progress,
    say_hidden,
    stdout_console,
    warn,
    write_machine,
)

SWEEP_PRIORITY = ("sigma_w", "sigma_b", "scheme", "activation", "depth", "width", "seed", "verdict", "xi_grad",
                  "theory_xi_grad", "xi_c", "theory_xi_c", "theory_chi", "grad_ratio", "error")
HEATMAP_METRICS = ("xi_c", "xi_grad", "xi_q", "grad_ratio", "verdict", "theory_chi", "theory_xi_c")
_RAMP = ".:-=+*#%@"  # low to high


def _axis(text: Optional[str], name: str):
    from ..sweep import parse_axis

    return None if text is None else parse_axis(text, name)


def heatmap_lines(rows: list[dict], y_axis: str, x_axis: str, metric: str) -> list[str]:
    """A character grid of `metric` over two axes (mean over the other axes and seeds; the
    verdict most often seen). Numbers use a ramp on log10 for the ξ's and grad_ratio."""
    from collections import Counter, defaultdict

    cells: dict = defaultdict(list)
    for row in rows:
        if not row.get("error"):
            cells[(row[y_axis], row[x_axis])].append(row.get(metric))
    ys = sorted({key[0] for key in cells}, key=lambda v: (v is None, v))
    xs = sorted({key[1] for key in cells}, key=lambda v: (v is None, v))
    if metric == "verdict":
        letters = {}
        grid = {}
        for key, values in cells.items():
            verdict = Counter(values).most_common(1)[0][0]
            grid[key] = letters.setdefault(verdict, verdict[0].upper() if verdict[0].upper() not in letters.values()
                                           else verdict[1].upper())
        legend = "  ".join(f"{letter} {name}" for name, letter in letters.items())
    else:
        logged = metric.startswith("xi") or metric in ("grad_ratio", "theory_xi_c")
        grid = {}
        for key, values in cells.items():
            finite = [float(v) for v in values if v is not None and math.isfinite(float(v)) and (not logged or float(v) > 0)]
            grid[key] = (sum(math.log10(v) if logged else v for v in finite) / len(finite)) if finite else None
        known = [v for v in grid.values() if v is not None]
        lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
        for key, value in grid.items():
            grid[key] = "?" if value is None else _RAMP[0 if hi == lo else round((value - lo) / (hi - lo) * (len(_RAMP) - 1))]
        unit = "log10 " if logged else ""
        legend = f"'{_RAMP}' = {unit}{metric} from {lo:.3g} to {hi:.3g}; ? none finite"
    edge = _critical_cells(rows, y_axis, x_axis, ys, xs)
    label = max((len(f"{y:g}" if isinstance(y, float) else str(y)) for y in ys), default=1)
    lines = [f"{metric} over {y_axis} (rows) × {x_axis} (columns)"]
    for y in reversed(ys):
        text = f"{y:g}" if isinstance(y, float) else str(y)
        lines.append(f"{text:>{label}} |" + "".join(grid.get((y, x), " ") + ("o" if (y, x) in edge else grid.get((y, x), " "))
                                                   for x in xs))
    lines.append(" " * label + " +" + "--" * len(xs))
    first, last = xs[0], xs[-1] if xs else (None, None)
    lines.append(" " * (label + 2) + f"{x_axis}: {first:g} … {last:g}" if isinstance(first, float)
                 else " " * (label + 2) + f"{x_axis}: " + ", ".join(map(str, xs)))
    lines.append(legend)
    if edge:
        lines.append("o: theory's critical line (χ = 1), the σ_w nearest to it in each column")
    return lines


def _critical_cells(rows: list[dict], y_axis: str, x_axis: str, ys: list, xs: list) -> set:
    """The cells nearest theory's edge of chaos, when the axes are σ_w and σ_b of one activation."""
    activations = {row.get("activation") for row in rows}
    if {y_axis, x_axis} != {"sigma_w", "sigma_b"} or len(activations) != 1 or not ys or not xs:
        return set()
    from ..activations import get_activation
    from ..theory import critical_sigma_w

    act = get_activation(activations.pop())
    sigma_ws = ys if y_axis == "sigma_w" else xs
    cells = set()
    for sigma_b in (xs if x_axis == "sigma_b" else ys):
        if sigma_b is None or sigma_ws[0] is None:
            continue
        edge = critical_sigma_w(act, float(sigma_b))
        if not math.isfinite(edge) or not sigma_ws[0] <= edge <= sigma_ws[-1]:
            continue
        nearest = min(sigma_ws, key=lambda value: abs(value - edge))
        cells.add((nearest, sigma_b) if y_axis == "sigma_w" else (sigma_b, nearest))
    return cells


@command(app)
def sweep(
    out: OutputOptions,
    sigma_w: Annotated[Optional[str], typer.Option(
        help="σ_w values: weights N(0, σ_w²/fan_in). A comma list or start:stop:count, e.g. 0.5:3:26.")] = None,
    sigma_b: Annotated[str, typer.Option(help="σ_b values: biases N(0, σ_b²). List or start:stop:count.")] = "0",
    depth: Annotated[str, typer.Option(help="Depths (list or start:stop:count).")] = "10",
    width: Annotated[str, typer.Option(help="Widths (list or start:stop:count).")] = "256",
    batch: Annotated[str, typer.Option(help="Batch sizes (list or start:stop:count).")] = "512",
    scheme: Annotated[Optional[str], typer.Option(
        "--scheme", "-s", help="Schemes instead of --sigma-w (comma list; see `initcli schemes`).")] = None,
    activation: Annotated[str, typer.Option("--activation", "-a", help="Comma list of activations.")] = "relu",
    seeds: Annotated[int, typer.Option(help="Seeds per point (each derived from the point's coordinates).")] = 1,
    seed: Annotated[int, typer.Option(help="The first seed: points get seeds seed, seed+1, ….")] = 0,
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    input_std: Annotated[float, typer.Option(help="Inputs are drawn from N(0, input-std²).")] = 1.0,
    executor: Annotated[str, typer.Option(help="local (processes here) or dask (dask.distributed).")] = "local",
    scheduler: Annotated[Optional[str], typer.Option(
        help="Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (--executor dask; without it "
             "a local Dask cluster is started).")] = None,
    jobs: Jobs = None,
    results: Annotated[Optional[str], typer.Option(
        "--out", help="Append rows to this CSV file as tasks finish; run the same command again to resume "
                      "(points already there are skipped).")] = None,
    heatmap: Annotated[Optional[str], typer.Option(
        help="Two axes, e.g. sigma_w,sigma_b: draw --metric over them in the terminal (on stderr).")] = None,
    metric: Annotated[str, typer.Option(help="What --heatmap shows: " + ", ".join(HEATMAP_METRICS) + ".")] = "xi_grad",
) -> None:
    """Run propagate at every point of a grid and report one row per point.

    Axes: --sigma-w or --scheme, --sigma-b, --depth, --width, --batch, --activation, times
    --seeds. Each row has the compare summary and verdict, the measured depth scales xi_q,
    xi_c and xi_grad, and mean-field theory's q*, chi and depth scales for the point. Every
    point's seed comes from its coordinates and runs on one BLAS thread, so the rows do not
    depend on --executor, --jobs or the order.
    """
    from ..sweep import COORDINATES, grid, make_executor
    from ..sweep import sweep as run_sweep

    fmt = output_format(out.fmt)
    check_outputs(out)
    if results is not None:  # appended to and resumed, so an existing file is expected
        from ..files import check_output

        check_output(results, "out", force=True, suffixes=(".csv",))
    if out.plot or out.save_plot:
        warn("--plot and --save-plot are not drawn by sweep yet; use --heatmap")
    axes = {"sigma_w": _axis(sigma_w, "sigma_w"), "sigma_b": _axis(sigma_b, "sigma_b"), "depth": _axis(depth, "depth"),
            "width": _axis(width, "width"), "batch": _axis(batch, "batch"), "scheme": _axis(scheme, "scheme"),
            "activation": _axis(activation, "activation")}
    pair = None
    if heatmap is not None:
        pair = [item.strip() for item in heatmap.split(",")]
        if len(pair) != 2 or not all(p in COORDINATES for p in pair) or pair[0] == pair[1]:
            from ..errors import InitcliError

            raise InitcliError("heatmap", f"must be two different axes such as sigma_w,sigma_b; axes are "
                                          f"{', '.join(COORDINATES)}")
        if metric not in HEATMAP_METRICS:
            from ..errors import InitcliError

            raise InitcliError("metric", f"must be one of {', '.join(HEATMAP_METRICS)}, got '{metric}'")
    points = grid(axes, seeds, seed)
    runner = make_executor(executor, jobs=jobs, scheduler=scheduler)
    options = {"propagate": {"dtype": dtype, "input_std": input_std}}
    params = {"axes": {k: v for k, v in axes.items() if v is not None}, "seeds": seeds, "seed": seed, "dtype": dtype,
              "input_std": input_std, "points": len(points)}
    with progress(len(points), "sweeping") as advance:
        result = run_sweep(points, executor=runner, options=options, out=results, progress=advance, params=params)
    rows = list(result.rows)
    if results is not None:
        note(f"initcli: {len(rows)} points written to {results}"
             + (f"; {result.skipped} were already there" if result.skipped else ""))
    elif fmt == "table":
        from ..render import print_table

        shown = [c for c in result.columns if c not in ("reason", "run_seed")]
        say_hidden(print_table(rows, shown, title=f"sweep · {len(points)} points", priority=SWEEP_PRIORITY,
                               console=stdout_console()))
    else:
        write_machine(fmt, "sweep", result.params, rows, result.columns)
    if result.errors:
        warn(f"{result.errors} of {len(rows)} points failed: see their error column")
    if pair is not None:
        source = rows
        if results is not None:
            from ..sweep import read_results

            source = [_typed(row) for row in read_results(results)]
        from .options import show

        show(heatmap_lines(source, pair[0], pair[1], metric))


def _typed(row: dict) -> dict:
    """A results-file row (strings) with numbers back as numbers."""
    typed = {}
    for key, value in row.items():
        try:
            typed[key] = float(value) if key not in ("depth", "width", "batch", "seed") else int(value)
        except (TypeError, ValueError):
            typed[key] = value or None
    return typed
