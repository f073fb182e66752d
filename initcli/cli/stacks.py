"""`initcli propagate`, `compare` and `jacobian`: signals through a deep stack."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .options import (
    Activation,
    ArchOptions,
    FormatOnly,
    InitOptions,
    Jobs,
    OutputOptions,
    Scheme,
    StackOptions,
    chart_console,
    chart_width,
    check_applies,
    check_outputs,
    command,
    note,
    output_format,
    parse_name_list,
    progress,
    say_hidden,
    show,
    sizes_text,
    stdout_console,
    warn,
    warn_ignored,
    write_machine,
)

# Which columns a narrow terminal keeps first.
PROPAGATE_PRIORITY = ("layer", "sublayer", "preact_var", "theory_preact_var", "act_var", "grad_var", "theory_grad_var",
                      "off_theory", "token_cosine", "attn_entropy", "attn_max", "chi", "dead_frac", "saturated_frac",
                      "effective_rank", "input_cosine",
                      "weight_grad_var", "act_mean", "preact_mean", "weight_std", "fan_in", "fan_out")
COMPARE_PRIORITY = ("scheme", "activation", "verdict", "grad_ratio", "first_grad_var", "last_grad_var",
                    "last_act_var", "max_dead_frac", "max_saturated_frac", "min_effective_rank", "last_input_cosine",
                    "first_act_var", "depth", "width")

_MEMORY_REPORT = 256 * 2**20  # runs needing more memory than this say so before they start


def _engine_run(init: InitOptions, stack: StackOptions, arch: ArchOptions) -> dict:
    """The keywords of the chosen architecture's `prepare`, with `arch` naming it."""
    if arch.kind == "mlp":
        return _stack_run(init, stack, arch)
    return {**stack.domain(), **init.scheme_options(), "bias_std": init.bias_std, **arch.engine_domain()}


def _report_estimate(needed: int, runs_at_once: int = 1) -> None:
    if needed * runs_at_once >= _MEMORY_REPORT:
        message = f"initcli: this run needs about {needed * runs_at_once / 2**30:.2f} GiB of memory"
        note(message + (f" ({runs_at_once} runs at once)" if runs_at_once > 1 else ""))


def _report_memory(run, runs_at_once: int = 1) -> None:
    from ..propagation import estimate_bytes

    needed = runs_at_once * estimate_bytes(run.sizes, run.batch, run.dtype, checkpoint=run.checkpoint, arch=run.arch)
    if needed < _MEMORY_REPORT:
        return
    message = f"initcli: this run needs about {needed / 2**30:.2f} GiB of memory"
    if runs_at_once > 1:
        message += f" ({runs_at_once} runs at once)"
    if not run.checkpoint and runs_at_once == 1:
        lighter = estimate_bytes(run.sizes, run.batch, run.dtype, checkpoint=True, arch=run.arch)
        if lighter < 0.7 * needed:
            message += f" (--checkpoint: {lighter / 2**30:.2f} GiB)"
    note(message)


def _stack_run(init: InitOptions, stack: StackOptions, arch: ArchOptions) -> dict:
    """The keywords of `propagation.prepare` that the three option groups give."""
    return {**stack.domain(), **init.scheme_options(), "bias_std": init.bias_std, **arch.domain()}


def _warn_small_batch(batch: int) -> None:
    if batch < 2:
        warn("with --batch 1 there is one input: dead_frac, effective_rank and input_cosine compare inputs "
             "and say nothing here (use --batch 2 or more)")


def _propagate_style(column: str, value) -> str | None:
    if column == "dead_frac" and isinstance(value, float) and value >= 0.5:
        return "red"
    if column == "saturated_frac" and isinstance(value, float) and value >= 0.5:
        return "yellow"
    if column == "effective_rank" and isinstance(value, float) and value <= 1.5:
        return "magenta"
    return None


@command(app)
def propagate(
    init: InitOptions,
    stack: StackOptions,
    arch: ArchOptions,
    out: OutputOptions,
    scheme: Scheme = "he-normal",
    activation: Activation = "relu",
    theory: Annotated[bool, typer.Option(help="Add the mean-field columns theory_preact_var, theory_grad_var, "
                                              "chi and off_theory.")] = True,
    checkpoint: Annotated[bool, typer.Option(help="Keep activations every ~sqrt(depth) layers and recompute the "
                                                  "rest going back: O(sqrt(depth)) memory, same numbers.")] = False,
    weights: Annotated[Optional[str], typer.Option(
        help="Propagate through the weights of an .npz file written by `initcli sample --save` instead of "
             "sampling a scheme; the file fixes the sizes.")] = None,
) -> None:
    """Push random inputs through a deep stack, backpropagate, and report every layer.

    With --residual, act is the residual stream x + α·f(x) that the next layer reads, and
    saturated_frac is measured on f's activation. With --norm layer, preact is h before the
    LayerNorm and grad_var the variance of dL/dh.
    """
    from ..propagation import prepare, run_prepared
    from ..render import log_bars, log_scale_header, overflow_message, print_table

    fmt = output_format(out.fmt)
    check_applies(schemes=[scheme], arch=arch, weights_file=weights is not None)
    check_outputs(out)
    if arch.kind != "mlp":
        result = _propagate_engine(init, stack, arch, scheme, activation, theory, checkpoint, weights)
    else:
        options = dict(_stack_run(init, stack, arch), activation=activation, theory=theory, checkpoint=checkpoint,
                       weights=weights)
        run = prepare(scheme, **options)
        _report_memory(run)
        with progress(2 * len(run.sizes) - 2, "propagating") as advance:
            result = run_prepared(run, advance)
    # warnings after the run, so that a run that fails says one line only
    _warn_small_batch(result.params["batch"])
    if weights is None:
        warn_ignored([scheme], init)
    rows = result.rows()
    if fmt == "table":
        p = result.params
        shape = shape_text(p)
        bars = {log_scale_header(column, values): log_bars(values)
                for column, values in (("act_var", [r["act_var"] for r in rows]),
                                       ("grad_var", [r["grad_var"] for r in rows]))}
        hidden = print_table(rows, result.columns,
                             title=f"{p.get('scheme') or p['weights']} · {p['activation']} · {shape} · "
                                   f"batch {p['batch']} · {p['dtype']} · seed {p['seed']}",
                             cell_style=_propagate_style, priority=PROPAGATE_PRIORITY, extra_columns=bars,
                             console=stdout_console())
        say_hidden(hidden)
    else:
        write_machine(fmt, "propagate", result.params, rows, result.columns,
                      overflow={"forward_layer": result.forward_overflow_layer,
                                "backward_layer": result.backward_overflow_layer})
    if result.overflowed:
        warn(overflow_message(result).removeprefix("initcli: warning: "))
    if out.plot or out.save_plot:
        from ..charts import log_chart, propagate_series, save_figure
        from ..engines import of_run

        p = result.params
        title = (f"{p.get('scheme') or p['weights']} · {p['activation']} · "
                 f"{shape_text(p) if 'sizes' not in p else str(p['depth']) + ' layers · ' + sizes_text(p['sizes'])}"
                 f" · batch {p['batch']} · seed {p['seed']}")
        series = propagate_series(rows)
        if out.plot:
            show(log_chart(series, width=chart_width(chart_console()), title=title))
        if out.save_plot:
            save_figure(out.save_plot, [{"series": series, "xlabel": of_run(p).unit, "ylabel": "variance",
                                         "log": True}],
                        title=title, force=out.force, dpi=out.dpi)


def shape_text(p: dict) -> str:
    """A run's shape in words, as its engine describes it: '20 layers of 256', 'sizes 784,256,10',
    '20 conv layers · 32 ch · 16×16 · k3 circular'."""
    from ..engines import of_run

    return of_run(p).describe(p)


def _propagate_engine(init: InitOptions, stack: StackOptions, arch: ArchOptions, scheme: str, activation: str,
                      theory: bool, checkpoint: bool, weights: Optional[str]):
    """`propagate --arch conv|transformer`: that engine (`initcli.conv`, `initcli.transformer`)
    with the same option groups."""
    from ..errors import InitcliError
    from ..propagation import engine

    if weights is not None:
        raise InitcliError("weights", f"does not apply with --arch {arch.kind} (weight files hold Linear stacks)")
    if checkpoint:
        raise InitcliError("checkpoint", f"does not apply with --arch {arch.kind}")
    options = _engine_run(init, stack, arch)
    domain = engine(options.pop("arch"))
    run = domain.prepare(scheme, activation=activation, theory=theory, **options)
    _report_estimate(run.estimate)
    with progress(2 * run.depth, "propagating") as advance:
        return domain.run_prepared(run, advance)


def _compare_style(column: str, value) -> str | None:
    if column == "verdict":
        return "green" if value == "stable" else "bold red"
    return None


@command(app)
def compare(
    init: InitOptions,
    stack: StackOptions,
    arch: ArchOptions,
    out: OutputOptions,
    schemes: Annotated[str, typer.Option(help="Comma list of schemes to run.")] = (
        "zeros,constant,normal,xavier-normal,he-normal"),
    activation: Annotated[str, typer.Option("--activation", "-a", help="Comma list of activations.")] = "relu",
    jobs: Jobs = None,
) -> None:
    """Run the same stack under each scheme (and activation) and give each a verdict.

    Verdicts, first match wins: symmetric (layer 1's effective rank <= 1.001: units move
    together), overflow (inf/nan), no-signal (last layer's activations constant, or no
    gradient at layer 1), dead (over half a layer's units never fire), saturated (over half a
    layer's activations in a flat region), exploding / vanishing (the per-layer factor of the
    gradient, measured over the deeper half of the stack and compounded over the depth, beyond
    max(10, exp(3·sqrt(5·sum 1/n))): the finite-width spread), stable. Every run uses one BLAS
    thread, so the numbers do not depend on --jobs.
    """
    from ..compare import plan as plan_compare
    from ..compare import run_plan
    from ..render import MIN_DECADES, log_sparkline, print_table

    fmt = output_format(out.fmt)
    scheme_names = parse_name_list(schemes, "schemes")
    activation_names = parse_name_list(activation, "activation")
    check_applies(schemes=scheme_names, arch=arch)
    check_outputs(out)
    options = _engine_run(init, stack, arch)
    planned = plan_compare(scheme_names, activation_names, jobs=jobs, **options)
    first = planned.runs[0]
    _report_estimate(first.estimate, planned.at_once)
    with progress(len(planned.calls) * first.depth * 2, "comparing") as advance:
        result = run_plan(planned, advance)
    _warn_small_batch(stack.batch)  # after the run, so that a run that fails says one line only
    warn_ignored(scheme_names, init)
    rows = result.rows()
    p = result.params
    shape = shape_text(p) if "sizes" not in p else f"{p['depth']} layers · {sizes_text(p['sizes'])}"
    if fmt == "table":
        from ..engines import of_run

        columns = [c for c in result.columns if c != "reason"]
        unit = of_run(p).unit
        # each row on its own log scale, at least MIN_DECADES tall: a row's shape is what it shows
        profiles = {f"{column} by {unit}\n(log, ≥{MIN_DECADES:g} decades a row)":
                    [log_sparkline([getattr(layer, column) for layer in run.per_layer()]) for run in result.runs]
                    for column in ("act_var", "grad_var")}
        hidden = print_table(rows, columns, title=f"{shape} · batch {p['batch']} · {p['dtype']} · seed {p['seed']}",
                             cell_style=_compare_style, priority=COMPARE_PRIORITY, extra_columns=profiles,
                             console=stdout_console())
        say_hidden(hidden)
        _print_reasons(rows)
    else:
        write_machine(fmt, "compare", result.params, rows, result.columns)
    if out.plot or out.save_plot:
        from ..charts import log_chart, per_run_series, save_figure

        title = f"{shape} · batch {p['batch']} · seed {p['seed']}"
        panels = [(column, per_run_series(result.runs, column)) for column in ("act_var", "grad_var")]
        if out.plot:
            for column, series in panels:
                show(log_chart(series, width=chart_width(chart_console()), title=f"{column} · {title}"))
        if out.save_plot:
            from ..engines import of_run

            unit = of_run(p).unit
            figure = [{"series": series, "xlabel": unit, "ylabel": column, "log": True, "title": column}
                      for column, series in panels]
            # the engine's 0–1 columns (a transformer's token cosine: rank collapse), each on its own scale
            figure += [{"series": per_run_series(result.runs, column), "xlabel": unit, "ylabel": column,
                        "log": False, "title": column} for column in of_run(p).chart_columns]
            save_figure(out.save_plot, figure, title=title, force=out.force, dpi=out.dpi)


def _print_reasons(rows: list[dict]) -> None:
    from rich.text import Text

    console = stdout_console()
    for row in rows:
        style = "green" if row["verdict"] == "stable" else "red"
        line = Text(f"{row['scheme']} + {row['activation']}", style="bold")
        line.append(": ")
        line.append(row["verdict"], style=style)
        line.append(f" — {row['reason']}")
        console.print(line, highlight=False)


@command(app, "jacobian")
def jacobian_command(
    init: InitOptions,
    stack: StackOptions,
    arch: ArchOptions,
    out: FormatOnly,
    scheme: Scheme = "he-normal",
    activation: Activation = "relu",
    inputs: Annotated[Optional[int], typer.Option(
        help="Inputs the spectrum is averaged over (default: 8, 2 with --arch transformer, or --batch if "
             "smaller).")] = None,
    spectrum: Annotated[bool, typer.Option(
        help="Add the spectral moments sv_mean_4th = E[σ⁴] and sv_sq_var = Var(σ²) (Pennington et al. 2018); "
             "CSV then lists every singular value (rows layer, input, index, singular_value) and JSON holds "
             "them beside the per-layer rows.")] = False,
) -> None:
    """Singular values of the input-output Jacobian after each layer (Pennington et al. 2017).

    With --arch conv the Jacobian is of a whole example (channels × positions); with --arch
    transformer of a whole sequence (--seq-len × --width), one row per block, over 2 inputs by
    default (each already gives T·D singular values).

    sv_mean_sq is the mean of the squared singular values (what the variance map controls);
    sv_max, sv_min and sv_condition = sv_max/sv_min show the spread: all 1 is dynamical
    isometry. Each is averaged over --inputs inputs; the Jacobian is computed in float64, on
    one BLAS thread (many small products and SVDs run fastest that way).
    """
    from ..jacobian import VALUE_COLUMNS
    from ..propagation import engine
    from ..render import print_table

    fmt = output_format(out.fmt)
    check_applies(schemes=[scheme], arch=arch)
    options = _engine_run(init, stack, arch)
    options.pop("arch", None)
    domain = engine(arch.kind)
    plan = domain.prepare_jacobian(scheme, activation, inputs=inputs, spectrum=spectrum, **options)
    with progress(plan.steps, "jacobian") as advance:
        result = domain.run_jacobian(plan, advance)
    rows, columns = result.rows(), result.columns
    if fmt == "table":
        p = result.params
        shape = shape_text(p) if "sizes" not in p else f"{p['depth']} layers · {sizes_text(p['sizes'])}"
        say_hidden(print_table(rows, columns, title=f"{p['scheme']} · {p['activation']} · {shape} · "
                                                    f"{p['inputs']} inputs",
                               console=stdout_console()))
    elif fmt == "csv" and spectrum:
        write_machine(fmt, "jacobian", result.params, result.value_rows(), VALUE_COLUMNS)
    elif spectrum:
        write_machine(fmt, "jacobian", result.params, rows, columns, singular_values=result.value_rows())
    else:
        write_machine(fmt, "jacobian", result.params, rows, columns)
