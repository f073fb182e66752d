"""`initcli coordcheck`: µP's coordinate check on the built-in stacks, or on the user's own torch
model (`--module MODULE:CALLABLE --width-arg NAME`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .options import (
    Activation,
    ArchOptions,
    InitOptions,
    OutputOptions,
    Scheme,
    chart_console,
    chart_width,
    check_applies,
    check_outputs,
    command,
    given,
    note,
    output_format,
    parse_int_list,
    progress,
    say_hidden,
    show,
    stdout_console,
    warn_ignored,
    write_machine,
)


def _verdict_style(column: str, value) -> str | None:
    if column == "verdict":
        return {"flat": "green", "grows": "bold red", "shrinks": "bold yellow", "overflow": "bold red",
                "unclear": "yellow"}.get(value)
    return None


def _l1_table(rows: list[dict], widths: list[int]) -> tuple[list[dict], list[str]]:
    """Mean l1 over the seeds, one row per (depth, layer, step), one column per width; no depth
    column for a --module run (its rows have none)."""
    cells: dict[tuple, dict[int, list[float]]] = {}
    for row in rows:
        cells.setdefault((row.get("depth"), row["step"], row["layer"]), {}).setdefault(row["width"], []).append(
            row["l1"])
    depths = any("depth" in row for row in rows)
    columns = ["depth"] * depths + ["step", "layer"] + [f"l1 @ {w}" for w in widths]
    table = [{**({"depth": depth} if depths else {}), "step": step, "layer": layer,
              **{f"l1 @ {w}": sum(v[w]) / len(v[w]) for w in widths if w in v}}
             for (depth, step, layer), v in cells.items()]
    return table, columns


def _seeds(count: int) -> str:
    return f"{count} seed{'' if count == 1 else 's'}"


@command(app, "coordcheck")
def coordcheck_command(
    init: InitOptions,
    arch: ArchOptions,
    out: OutputOptions,
    widths: Annotated[str, typer.Option(help="Comma list of hidden widths.")] = "128,256,512,1024,2048",
    depths: Annotated[str, typer.Option(help="Comma list of hidden-layer counts (two or more: slopes against "
                                             "depth too).")] = "3",
    steps: Annotated[int, typer.Option(help="Optimizer steps K: rows for steps 0, 1, …, K.")] = 3,
    optimizer: Annotated[str, typer.Option(help="sgd or adam.")] = "adam",
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (default 1e-3 for adam, 0.1 for sgd).")] = None,
    outputs: Annotated[int, typer.Option(help="Readout width: every output fits the task's target.")] = 1,
    seeds: Annotated[int, typer.Option(help="Weight seeds per width, from --seed on.")] = 3,
    seed: Annotated[int, typer.Option(help="The first weight seed, and the seed of the one batch.")] = 0,
    batch: Annotated[int, typer.Option(help="Samples in the one fixed batch of the regression task.")] = 64,
    scheme: Scheme = "he-normal",
    activation: Activation = "relu",
    base_width: Annotated[Optional[float], typer.Option(
        help="Width at which the --param factors are 1 (default: the smallest width, mup's base model).")] = None,
    readout_init: Annotated[Optional[str], typer.Option(
        help="zero or scheme (default: zero under mup, as mup's examples do; the scheme's draw otherwise).")] = None,
    flat_tol: Annotated[float, typer.Option(
        help="A slope is flat when |slope| <= this, or within 3 standard errors of 0 that are themselves "
             "<= this; unclear when the errors are larger.")] = 0.1,
    summary: Annotated[bool, typer.Option(help="CSV: the slopes instead of the l1 rows.")] = False,
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    module: Annotated[Optional[str], typer.Option(
        help="Your own torch model instead: MODULE:CALLABLE or path/to/file.py:CALLABLE (imported as probe "
             "does), called with --width-arg at each width; returns a torch.nn.Module or (model, example_input). "
             "Needs the torch extra.")] = None,
    width_arg: Annotated[Optional[str], typer.Option(
        help="With --module: the name of the callable's width argument, e.g. width.")] = None,
    kwargs: Annotated[Optional[str], typer.Option(
        help="With --module: JSON keyword arguments for the callable besides the width, e.g. '{\"depth\": 4}'.")] = None,
    input_shape: Annotated[Optional[str], typer.Option(
        help="With --module: shape of one input without the batch, e.g. 3,32,32; inputs are N(0, input-std²) "
             "from the seed (default: the regression task's 2 features).")] = None,
    input_std: Annotated[float, typer.Option(help="With --input-shape: inputs are drawn from N(0, input-std²).")] = 1.0,
) -> None:
    """Coordinate check (Yang et al. 2022): does each layer's scale stay flat with width?

    For each width (and depth) and seed, trains --steps steps on one fixed batch of the
    regression task and records each Linear's mean |output| (the readout's last) before every
    step, as mup's coord check does. Rows: layer, step, width, depth, seed, l1. Slopes: per
    (layer, step), the log-log slope of l1 against width with its standard error, and a
    verdict flat, grows, shrinks or unclear (zero: a zero readout at step 0). Under sp with adam the
    hidden layers and the output grow with width after a step; under mup they stay flat.

    With --module, your model at each width (torch.manual_seed of the point's seed first) is
    trained with torch's optimizer at one --lr for every parameter, unless the model has a
    method initcli_param_groups(optimizer, lr) returning torch parameter groups (per-layer
    rates such as µP's; a model built with mup's set_base_shapes gets mup's MuAdam/MuSGD rates);
    rows are every leaf module's and every repeated block's (the residual stream's) mean
    |output|, without a depth column.
    """
    from ..coordcheck import coordcheck

    fmt = output_format(out.fmt)
    check_outputs(out)
    if module is not None:
        _module_command(module, width_arg=width_arg, kwargs=kwargs, input_shape=input_shape, input_std=input_std,
                        widths=widths, steps=steps, optimizer=optimizer, lr=lr, seeds=seeds, seed=seed, batch=batch,
                        flat_tol=flat_tol, summary=summary, dtype=dtype, fmt=fmt, out=out)
        return
    typed = given()
    for name in MODULE_ONLY:
        if name in typed:
            from ..errors import InitcliError

            raise InitcliError(name, "only applies with --module")
    check_applies(schemes=[scheme], arch=arch)
    width_list = parse_int_list(widths, "widths")
    depth_list = parse_int_list(depths, "depths")
    if init.bias_std != 0:
        from ..errors import InitcliError

        raise InitcliError("bias_std", "does not apply to coordcheck: its layers start with zero biases")
    options = {k: v for k, v in arch.domain().items() if k not in ("lsuv_tol", "lsuv_max_iter")}
    options["norm"] = None if options["norm"] == "none" else options["norm"]
    init_options = init.scheme_options()
    with progress(len(width_list) * len(depth_list) * seeds, "coord check") as advance:
        result = coordcheck(widths=width_list, depths=depth_list, steps=steps, optimizer=optimizer, lr=lr,
                            outputs=outputs, seeds=seeds, seed=seed, batch=batch, scheme=scheme,
                            activation=activation, base_width=base_width, readout_init=readout_init,
                            flat_tol=flat_tol, dtype=dtype, progress=advance, **options, **init_options)
    warn_ignored([scheme], init)
    p = result.params
    title = (f"{p['scheme']} · {p['activation']} · param {p['param']} · {p['optimizer']} lr {p['lr']:g} · "
             f"batch {p['batch']} · {_seeds(p['seeds'])}")
    _write(result, fmt, out, summary, title)


MODULE_ONLY = ("width_arg", "kwargs", "input_shape", "input_std")
# the options that describe the built-in network: a user's callable builds its own
BUILTIN_ONLY = ("depths", "outputs", "scheme", "activation", "base_width", "readout_init", "residual",
                "residual_scale", "block", "norm", "residual_init", "param", "lsuv_tol", "lsuv_max_iter", "gain",
                "mode", "distribution", "negative_slope", "value", "std", "mean", "limit", "low", "high", "sparsity",
                "groups", "in_axis", "out_axis", "batch_axis", "bias_std")


def _module_command(module: str, *, width_arg, kwargs, input_shape, input_std, widths, steps, optimizer, lr, seeds,
                    seed, batch, flat_tol, summary, dtype, fmt, out) -> None:
    from ..coordcheck import coordcheck_module
    from ..errors import InitcliError

    typed = given()
    clash = [name for name in BUILTIN_ONLY if name in typed]
    if clash:
        raise InitcliError(clash[0], "does not apply with --module: your callable builds the model")
    if input_shape is None and "input_std" in typed:
        raise InitcliError("input_std", "only applies with --input-shape")
    width_list = parse_int_list(widths, "widths")
    shape = parse_int_list(input_shape, "input_shape") if input_shape is not None else None
    with progress(len(width_list) * max(seeds, 0), "coord check") as advance:
        result = coordcheck_module(module, width_arg=width_arg, kwargs=kwargs, widths=width_list, steps=steps,
                                   optimizer=optimizer, lr=lr, seeds=seeds, seed=seed, batch=batch,
                                   input_shape=shape, input_std=input_std, dtype=dtype, flat_tol=flat_tol,
                                   progress=advance)
    p = result.params
    groups = {"model": " (model param groups)", "mup": " (mup's param groups)"}.get(p["param_groups"], "")
    title = f"{module} · {width_arg} · {p['optimizer']} lr {p['lr']:g}{groups} · batch {p['batch']} · {_seeds(p['seeds'])}"
    if p["param_groups"] == "one":
        note(f"initcli: every parameter trained at one learning rate ({p['lr']:g}): the model has no "
             "initcli_param_groups(optimizer, lr) method and was not built with mup's set_base_shapes; a µP model "
             "needs its per-layer rates from one of them")
    _write(result, fmt, out, summary, title)


def _write(result, fmt: str, out, summary: bool, title: str) -> None:
    from ..render import print_table

    rows, slopes = result.row_dicts(), result.summary_rows()
    p = result.params
    if fmt == "table":
        table, columns = _l1_table(rows, p["widths"])
        console = stdout_console()
        say_hidden(print_table(table, columns, title=f"mean |x| · {title}", console=console))
        say_hidden(print_table(slopes, result.summary_columns, title="log-log slopes", cell_style=_verdict_style,
                               none_text={"predicted": "—", "slope": "—", "slope_se": "—"}, console=console))
    elif fmt == "csv":
        write_machine(fmt, "coordcheck", p, slopes if summary else rows,
                      result.summary_columns if summary else result.columns)
    else:
        write_machine(fmt, "coordcheck", p, rows, result.columns, summary=slopes)
    if out.plot or out.save_plot:
        _plots(result, out, title)


def _plots(result, out, title: str) -> None:
    """One panel per step: width (log2) against l1 (log), one line per layer, mean over seeds."""
    import math

    from ..charts import Series, log_chart, save_figure

    p = result.params
    depth = p["depths"][0] if "depths" in p else None  # None: a --module run
    panels = []
    for step in range(p["steps"] + 1):
        layers = list(dict.fromkeys(r.layer for r in result.rows if r.step == step and r.depth == depth))
        series = []
        for group, layer in enumerate(layers):
            points = {}
            for r in result.rows:
                if r.step == step and r.depth == depth and r.layer == layer:
                    points.setdefault(r.width, []).append(r.l1)
            xs = sorted(points)
            series.append(Series(layer, [math.log2(w) for w in xs], [sum(points[w]) / len(points[w]) for w in xs],
                                 group=group))
        panels.append({"series": series, "xlabel": "log2 width", "ylabel": "mean |x|", "log": True,
                       "title": f"step {step}"})
    if out.plot:
        for panel in panels:
            show(log_chart(panel["series"], width=chart_width(chart_console()), title=f"{panel['title']} · {title}"))
    if out.save_plot:
        where = "" if depth is None else f" · depth {depth}"
        save_figure(out.save_plot, panels, title=f"coord check{where} · {title}", force=out.force,
                    dpi=out.dpi)
