"""`initcli sweep`: one propagate run per point of a grid, in processes or on a Dask cluster."""

from __future__ import annotations

import math
import os
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
    show,
    stdout_console,
    warn,
    write_machine,
)

SWEEP_PRIORITY = ("sigma_w", "sigma_b", "scheme", "activation", "depth", "width", "seed", "verdict", "final_accuracy",
                  "final_r2", "xi_grad", "theory_xi_grad", "xi_c", "theory_xi_c", "theory_chi", "grad_ratio", "error")
_RAMP = ".:-=+*#%@"  # low to high
_TRAIN_OPTIONS = ("epochs", "lr", "optimizer", "samples", "train_batch")


def _axis(text: Optional[str], name: str):
    from ..sweep import parse_axis

    return None if text is None else parse_axis(text, name)


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def heatmap_lines(rows: list[dict], y_axis: str, x_axis: str, metric: str) -> list[str]:
    """A character grid of `metric` over two axes (see `sweep.heatmap`): a ramp of
    characters, on log10 for the ξ's, grad_ratio and the loss; letters for the verdicts."""
    from ..sweep import heatmap

    heat = heatmap(rows, y_axis, x_axis, metric)
    ys, xs = heat.ys, heat.xs
    if metric == "verdict":
        letters: dict = {}
        for line in heat.cells:
            for verdict in line:
                if verdict is not None and verdict not in letters:
                    free = [c.upper() for c in verdict if c.isalpha() and c.upper() not in letters.values()]
                    letters[verdict] = free[0] if free else "?"
        grid = [[" " if v is None else letters[v] for v in line] for line in heat.cells]
        legend = "  ".join(f"{letter} {name}" for name, letter in letters.items())
    else:
        shown = [[None if v is None else (math.log10(v) if heat.log else v) for v in line] for line in heat.cells]
        known = [v for line in shown for v in line if v is not None]
        lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
        grid = [["?" if v is None else _RAMP[0 if hi == lo else round((v - lo) / (hi - lo) * (len(_RAMP) - 1))]
                 for v in line] for line in shown]
        unit = "log10 " if heat.log else ""
        legend = f"'{_RAMP}' = {unit}{metric} from {lo:.3g} to {hi:.3g}; ? none finite"
    edge = _critical_cells(rows, y_axis, x_axis, ys, xs)
    label = max((len(_label(y)) for y in ys), default=1)
    lines = [f"{metric} over {y_axis} (rows) × {x_axis} (columns)"]
    for i in reversed(range(len(ys))):
        lines.append(f"{_label(ys[i]):>{label}} |" + "".join(
            grid[i][j] + ("o" if (ys[i], xs[j]) in edge else grid[i][j]) for j in range(len(xs))))
    lines.append(" " * label + " +" + "--" * len(xs))
    if xs and all(isinstance(x, float) for x in xs):
        lines.append(" " * (label + 2) + f"{x_axis}: {xs[0]:g} … {xs[-1]:g}")
    else:
        lines.append(" " * (label + 2) + f"{x_axis}: " + ", ".join(map(_label, xs)))
    lines.append(legend)
    if edge:
        lines.append("o: theory's critical line (χ = 1), the σ_w nearest to it in each column")
    return lines


def _critical_cells(rows: list[dict], y_axis: str, x_axis: str, ys, xs) -> set:
    """The cells nearest theory's edge of chaos, when the axes are σ_w and σ_b of one activation."""
    activations = {row.get("activation") for row in rows}
    if {y_axis, x_axis} != {"sigma_w", "sigma_b"} or len(activations) != 1 or not ys or not xs:
        return set()
    from ..sweep import critical_sigma_w

    activation = activations.pop()
    sigma_ws = [v for v in (ys if y_axis == "sigma_w" else xs) if v is not None]
    cells = set()
    for sigma_b in (xs if x_axis == "sigma_b" else ys):
        if sigma_b is None or not sigma_ws:
            continue
        edge = critical_sigma_w(activation, float(sigma_b))
        if not math.isfinite(edge) or not sigma_ws[0] <= edge <= sigma_ws[-1]:
            continue
        nearest = min(sigma_ws, key=lambda value: abs(value - edge))
        cells.add((nearest, sigma_b) if y_axis == "sigma_w" else (sigma_b, nearest))
    return cells


def _log_axis(values) -> bool:
    """Sizes spanning a decade or more (depth 5,10,…,80) are drawn on a log axis."""
    return (len(values) > 2 and all(isinstance(v, int) and v > 0 for v in values)
            and max(values) >= 8 * min(values))


def _edges(values) -> tuple[list[float], list[str] | None]:
    """Cell edges for pcolormesh: halfway between numeric values (geometrically on a log
    axis; the ends mirrored), or one unit per name with the names as tick labels."""
    if not all(isinstance(v, (int, float)) for v in values):
        return [i - 0.5 for i in range(len(values) + 1)], [_label(v) for v in values]
    if len(values) == 1:
        v = float(values[0])
        half = abs(v) / 10 or 0.5
        return [v - half, v + half], None
    if _log_axis(values):
        logs = [math.log(v) for v in values]
    else:
        logs = [float(v) for v in values]
    middles = [(a + b) / 2 for a, b in zip(logs[:-1], logs[1:])]
    edges = [2 * logs[0] - middles[0], *middles, 2 * logs[-1] - middles[-1]]
    return ([math.exp(e) for e in edges] if _log_axis(values) else edges), None


def save_heatmap(path: str, rows: list[dict], y_axis: str, x_axis: str, metric: str, *, title: str,
                 force: bool = False, dpi: int = 150) -> None:
    """The heatmap as a PNG, SVG or PDF figure, written atomically: `metric` coloured over
    the two axes (log colour scale for the ξ's, grad_ratio and the loss; one colour per
    verdict), grey where no point has a value; theory's critical line (χ₁ = 1) over a
    σ_w × σ_b map, Schoenholz et al.'s depth = 6·ξ_c over a σ_w × depth map."""
    import numpy as np

    from ..charts import figure_target, write_figure
    from ..sweep import critical_line, heatmap, trainable_depth

    plt, suffix, dpi = figure_target(path, force=force, dpi=dpi)
    heat = heatmap(rows, y_axis, x_axis, metric)
    x_edges, x_names = _edges(heat.xs)
    y_edges, y_names = _edges(heat.ys)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    try:
        with np.errstate(all="ignore"):
            handles = _draw_cells(fig, ax, heat, metric, plt, x_edges, y_edges)
            # critical_line gives (σ_b, σ_w) pairs, trainable_depth (σ_w, depth): x first or swapped
            for line, first, label in ((critical_line(rows, y_axis, x_axis), "sigma_b", "theory: χ₁ = 1 (edge of chaos)"),
                                       (trainable_depth(rows, y_axis, x_axis), "sigma_w",
                                        "depth = 6·ξ_c (Schoenholz et al. 2017)")):
                pairs = line if x_axis == first else [(b, a) for a, b in line]
                inside = [(x, y) for x, y in pairs if y_edges[0] <= y <= y_edges[-1]]
                if inside:
                    ax.plot([x for x, _ in inside], [y for _, y in inside], color="white", linewidth=2.4)
                    handles += ax.plot([x for x, _ in inside], [y for _, y in inside], color="red", linewidth=1.2,
                                       linestyle="--", label=label)
            if handles:  # under the axes, off the data and the colour bar (bbox_inches="tight" makes room)
                ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(3, len(handles)),
                          fontsize=8, frameon=False)
            _set_axes(ax, heat, x_edges, y_edges, x_names, y_names)
            ax.set_xlabel(x_axis)
            ax.set_ylabel(y_axis)
            ax.set_title(title, fontsize=10)
            fig.tight_layout()
            write_figure(fig, path, suffix=suffix, dpi=dpi, force=force)
    finally:
        plt.close(fig)


def _draw_cells(fig, ax, heat, metric: str, plt, x_edges: list, y_edges: list) -> list:
    """The heatmap's cells: one colour per verdict (their legend handles returned), or the
    metric on viridis with a colour bar (log scale for a `log` metric); grey where no value."""
    import numpy as np
    from matplotlib.colors import ListedColormap, LogNorm, Normalize
    from matplotlib.patches import Patch

    if metric == "verdict":
        names = list(dict.fromkeys(v for line in heat.cells for v in line if v is not None))
        codes = np.ma.masked_invalid([[math.nan if v is None else names.index(v) for v in line]
                                      for line in heat.cells])
        cmap = ListedColormap([f"C{i % 10}" for i in range(max(1, len(names)))]).with_extremes(bad="lightgrey")
        ax.pcolormesh(x_edges, y_edges, codes, cmap=cmap, vmin=-0.5, vmax=max(1, len(names)) - 0.5)
        return [Patch(color=f"C{i % 10}", label=name) for i, name in enumerate(names)]
    values = np.ma.masked_invalid([[math.nan if v is None else v for v in line] for line in heat.cells])
    known = values.compressed()
    norm = None
    if known.size:
        low, high = float(known.min()), float(known.max())
        norm = (LogNorm(low, high if high > low else low * 10) if heat.log
                else Normalize(low, high if high > low else low + 1))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    mesh = ax.pcolormesh(x_edges, y_edges, values, cmap=cmap, norm=norm)
    fig.colorbar(mesh, ax=ax, label=metric + (" (log scale)" if heat.log else ""))
    return []


def _set_axes(ax, heat, x_edges: list, y_edges: list, x_names: list | None, y_names: list | None) -> None:
    """Log axes for sizes spanning a decade (ticked at the grid's own values), the limits at
    the outer cell edges, names as ticks on an axis of names."""
    for values, scale in ((heat.xs, ax.set_xscale), (heat.ys, ax.set_yscale)):
        if _log_axis(values):
            scale("log")
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    for values, axis in ((heat.xs, ax.xaxis), (heat.ys, ax.yaxis)):
        if _log_axis(values):  # the grid's own sizes as ticks, not powers of ten
            from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

            axis.set_major_locator(FixedLocator([float(v) for v in values]))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_locator(NullLocator())
    if x_names:
        ax.set_xticks(range(len(x_names)), x_names, rotation=30, ha="right")
    if y_names:
        ax.set_yticks(range(len(y_names)), y_names)


def _default_axes(axes: dict, seeds: int) -> tuple[str, str]:
    """The heatmap's axes when --heatmap is not given: the first two that vary."""
    from ..errors import InitcliError

    varying = [name for name, values in axes.items() if values is not None and len(values) > 1]
    varying += ["seed"] if seeds > 1 else []
    if len(varying) < 2:
        raise InitcliError("heatmap", "--plot and --save-plot draw a heatmap over two axes that vary: "
                                      "give --heatmap AXIS,AXIS")
    return varying[0], varying[1]


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
    residual_init: Annotated[Optional[str], typer.Option(
        help="Comma list of none and residual-init presets (fixup, t-fixup, rezero, skipinit, deepnorm, gpt2, "
             "depth-mup; see `initcli schemes`): an axis, and a preset makes its points residual stacks.")] = None,
    param: Annotated[Optional[str], typer.Option(
        help="Comma list of width parametrizations, sp, ntk or mup: an axis (see `initcli propagate --param`).")] = None,
    residual: Annotated[bool, typer.Option(
        help="Skip connections at every point: each block is x + f(x).")] = False,
    block: Annotated[int, typer.Option(help="Linear→activation layers per residual branch.")] = 1,
    norm: Annotated[str, typer.Option(
        help="none, or layer: LayerNorm between each Linear and its activation, at every point.")] = "none",
    seeds: Annotated[int, typer.Option(help="Seeds per point (each derived from the point's coordinates).")] = 1,
    seed: Annotated[int, typer.Option(help="The first seed: points get seeds seed, seed+1, ….")] = 0,
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    input_std: Annotated[float, typer.Option(help="Inputs are drawn from N(0, input-std²).")] = 1.0,
    train: Annotated[Optional[str], typer.Option(
        help="Also train each point's MLP (depth × width hidden layers, the point's weights, zero biases) on "
             "this task: xor, moons, circles, spiral or regression. Adds final_loss and final_accuracy "
             "(final_r2 for regression).")] = None,
    epochs: Annotated[int, typer.Option(help="--train: passes over the data.")] = 100,
    lr: Annotated[float, typer.Option(help="--train: learning rate.")] = 0.1,
    optimizer: Annotated[str, typer.Option(help="--train: sgd or adam.")] = "sgd",
    samples: Annotated[int, typer.Option(help="--train: size of the generated data set.")] = 512,
    train_batch: Annotated[int, typer.Option(help="--train: mini-batch size; 0 is full batch.")] = 128,
    executor: Annotated[str, typer.Option(help="local (processes here) or dask (dask.distributed).")] = "local",
    scheduler: Annotated[Optional[str], typer.Option(
        help="Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (--executor dask; without it "
             "a local Dask cluster is started).")] = None,
    jobs: Jobs = None,
    results: Annotated[Optional[str], typer.Option(
        "--out", help="Append rows to this .csv (or .parquet: pip install 'initcli[parquet]') file as tasks "
                      "finish; run the same command again to resume (points already there are skipped).")] = None,
    heatmap: Annotated[Optional[str], typer.Option(
        help="Two axes, e.g. sigma_w,sigma_b: draw --metric over them, in the terminal (on stderr when stdout "
             "is piped), or to the --save-plot file instead (add --plot for both).")] = None,
    metric: Annotated[str, typer.Option(
        help="What the heatmap shows: xi_grad, xi_c, xi_q, grad_ratio, verdict, accuracy (--train), final_loss, "
             "theory_chi, theory_xi_c or theory_xi_grad.")] = "xi_grad",
) -> None:
    """Run propagate at every point of a grid and report one row per point.

    Axes: --sigma-w or --scheme, --sigma-b, --depth, --width, --batch, --activation,
    --residual-init, --param, times --seeds. Each row has the compare summary and verdict, the measured depth scales xi_q,
    xi_c and xi_grad, mean-field theory's q*, chi and depth scales for the point and, with
    --train, the final loss and score of training it. Every point's seed comes from its
    coordinates and runs on one BLAS thread, so the rows do not depend on --executor, --jobs
    or the order.
    """
    from ..sweep import MAX_KEPT_ROWS, grid, make_executor
    from ..sweep import sweep as run_sweep
    from .options import given

    fmt = output_format(out.fmt)
    typed = given()
    _check_option_use(typed, train, executor, scheduler)
    check_outputs(out)
    if results is not None:
        _check_results_path(results, out.save_plot)
    axes = {"sigma_w": _axis(sigma_w, "sigma_w"), "sigma_b": _axis(sigma_b, "sigma_b"), "depth": _axis(depth, "depth"),
            "width": _axis(width, "width"), "batch": _axis(batch, "batch"), "scheme": _axis(scheme, "scheme"),
            "activation": _axis(activation, "activation"), "residual_init": _axis(residual_init, "residual_init"),
            "param": _axis(param, "param")}
    training = _training(train, axes, epochs=epochs, lr=lr, optimizer=optimizer, samples=samples,
                         train_batch=train_batch, plain=not residual and block == 1 and norm.strip().lower() == "none")
    heat = _heatmap_choice(heatmap, metric, out, typed, axes, seeds, training)
    points = grid(axes, seeds, seed)
    if heat is not None and len(points) > MAX_KEPT_ROWS:
        from ..errors import InitcliError

        raise InitcliError("heatmap", f"the grid has {len(points):,} points; a heatmap is drawn from rows held in "
                                      f"memory, at most {MAX_KEPT_ROWS:,}")
    runner = make_executor(executor, jobs=jobs, scheduler=scheduler)
    options = _run_options(dtype, input_std, residual, block, norm, training)
    params = {"axes": {k: v for k, v in axes.items() if v is not None}, "seeds": seeds, "seed": seed,
              **options["propagate"], "points": len(points),
              **({} if training is None else {"train": {k: v for k, v in training.items() if v is not None}})}
    with progress(len(points), "sweeping") as advance:
        result = run_sweep(points, executor=runner, options=options, out=results, progress=advance, params=params,
                           keep_rows=results is None)  # with --out, rows stream to the file only
    _report(result, fmt, results, len(points))
    if heat is not None:
        _draw(heat, out, heatmap, list(result.rows), results, points, options, result.columns)


def _check_option_use(typed, train: Optional[str], executor: str, scheduler: Optional[str]) -> None:
    """Options given where they would be ignored."""
    from ..errors import InitcliError

    if train is None:
        stray = [name for name in _TRAIN_OPTIONS if name in typed]
        if stray:
            raise InitcliError(stray[0], "only applies with --train TASK")
    if executor.strip().lower() != "dask" and scheduler is not None:
        raise InitcliError("scheduler", "only applies with --executor dask")


def _check_results_path(results: str, save_plot: Optional[str]) -> None:
    """--out is appended to and resumed, so an existing file is expected."""
    from ..errors import InitcliError
    from ..sweep import check_results_path

    if save_plot is not None and os.path.abspath(results) == os.path.abspath(save_plot):
        raise InitcliError("out", f"is the same file as --save-plot ('{results}')")
    check_results_path(results)


def _training(train: Optional[str], axes: dict, *, epochs: int, lr: float, optimizer: str, samples: int,
              train_batch: int, plain: bool) -> dict | None:
    """--train's options, checked, for a grid of plain MLPs (`plain`: no --residual, --block or --norm)."""
    from ..errors import InitcliError
    from ..sweep import train_options

    if train is None:
        return None
    training = train_options(train, epochs, lr=lr, optimizer=optimizer, samples=samples,
                             batch=None if train_batch == 0 else train_batch)
    if (not plain or any(v != "none" for v in axes["residual_init"] or [])
            or any(v != "sp" for v in axes["param"] or [])):
        raise InitcliError("train", "does not apply with --residual-init, --param, --residual, --block or "
                                    "--norm yet: the trained network is a plain MLP")
    return training


def _heatmap_choice(heatmap: Optional[str], metric: str, out: OutputOptions, typed, axes: dict, seeds: int,
                    training: dict | None) -> tuple[str, str, str] | None:
    """(rows axis, columns axis, column) of the heatmap to draw, or None; warns that --train's
    networks start with zero biases when σ_b varies."""
    from ..errors import InitcliError
    from ..sweep import check_heatmap_axes, columns, heatmap_metric

    header = columns(None if training is None else training["metric"], [k for k in ("residual_init", "param")
                                                                         if axes[k] is not None])
    if training is not None and any(value != 0 for value in axes["sigma_b"]):
        warn("--train starts every network with zero biases, as `initcli train` does: σ_b acts on the "
             "propagate columns only")
    if heatmap is not None or out.plot or out.save_plot:
        pair = check_heatmap_axes(heatmap) if heatmap is not None else _default_axes(axes, seeds)
        for name in pair:
            if name not in header:
                raise InitcliError("heatmap", f"{name} is not an axis of this grid: give --{name.replace('_', '-')}")
        return pair[0], pair[1], heatmap_metric(metric, header)
    if "metric" in typed:
        raise InitcliError("metric", "only applies with --heatmap, --plot or --save-plot")
    return None


def _run_options(dtype: str, input_std: float, residual: bool, block: int, norm: str, training: dict | None) -> dict:
    """`sweep.sweep`'s options: propagate's keywords and --train's."""
    propagate_options = {"dtype": dtype, "input_std": input_std}
    # only when they change something, so that the settings cell (part of the resume key) of
    # a plain grid stays what it was
    propagate_options |= ({"residual": True} if residual else {}) | ({"block": block} if block != 1 else {})
    if norm.strip().lower() != "none":
        propagate_options["norm"] = norm.strip().lower()
    options = {"propagate": propagate_options}
    if training is not None:
        options["train"] = training
    return options


def _report(result, fmt: str, results: Optional[str], points: int) -> None:
    """The rows on stdout (or a line naming the --out file they went to), failures on stderr."""
    rows = list(result.rows)
    if results is not None:
        note(f"initcli: {result.ran} points written to {results}"
             + (f"; {result.skipped} were already there" if result.skipped else ""))
    elif fmt == "table":
        from ..render import print_table

        shown = [c for c in result.columns if c not in ("reason", "run_seed", "settings")]
        say_hidden(print_table(rows, shown, title=f"sweep · {points} points", priority=SWEEP_PRIORITY,
                               console=stdout_console()))
    else:
        write_machine(fmt, "sweep", result.params, rows, result.columns)
    if result.errors:
        warn(f"{result.errors} of {result.ran} points failed: see their error column")


def _draw(heat: tuple[str, str, str], out: OutputOptions, heatmap: Optional[str], rows: list[dict],
          results: Optional[str], points, options: dict, row_columns) -> None:
    """The heatmap in the terminal and/or the --save-plot file, over this run's rows or, with
    --out, the whole grid's: this run's points and those already in the file."""
    y_axis, x_axis, column = heat
    source = rows
    if results is not None:
        from ..sweep import key_columns, read_results, settings_text

        wanted = {(*p.key, settings_text(options)) for p in points}
        key = key_columns(row_columns)
        source = [_typed(row) for row in read_results(results) if tuple(row[c] for c in key) in wanted]
    if heatmap is not None and not out.save_plot or out.plot:
        show(heatmap_lines(source, y_axis, x_axis, column))
    if out.save_plot:
        kinds = ", ".join(sorted({str(r["activation"]) for r in source}))
        save_heatmap(out.save_plot, source, y_axis, x_axis, column, force=out.force, dpi=out.dpi,
                     title=f"sweep · {column} · {kinds} · {len(points)} points")


def _typed(row: dict) -> dict:
    """A results-file row (strings) with numbers back as numbers."""
    typed = {}
    for key, value in row.items():
        try:
            typed[key] = float(value) if key not in ("depth", "width", "batch", "seed") else int(value)
        except (TypeError, ValueError):
            typed[key] = value or None
    return typed
