"""The `initcli` command: parse options, call the domain, render. Nothing else.

numpy and rich are imported inside the commands, so `initcli --help` and `--version` stay fast.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .errors import InitcliError

# Typer raises click's exceptions, from click itself or (typer >= 0.25) from its vendored copy.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_Abort = next((c for c in typer.Abort.__mro__ if c.__name__ == "Abort"), typer.Abort)


class _OneLineErrors(TyperGroup):
    """Every usage error, ours or click's, as one line on stderr with exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name=prog_name or "initcli", complete_var=complete_var,
                                standalone_mode=False, **extra)
        except InitcliError as exc:
            code = _fail(str(exc))
        except _ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `initcli`: the help, not an error
                print(exc.format_message())
                code = 0
            else:
                code = _fail(exc.format_message())
        except (_Abort, KeyboardInterrupt):
            code = 130
        if code == 130:  # typer turns Ctrl-C into exit code 130, silently
            print("initcli: interrupted", file=sys.stderr)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> int:
    first_line = " ".join(message.split())
    print(f"initcli: error: {first_line}", file=sys.stderr)
    return 2


app = typer.Typer(
    cls=_OneLineErrors,
    name="initcli",
    help="Will this weight initialisation train? Sample schemes, push signals through deep stacks, "
         "and see vanishing, exploding and symmetric inits in numbers.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"initcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Will this weight initialisation train?"""


# -- shared options -------------------------------------------------------------------------

Scheme = Annotated[str, typer.Option("--scheme", "-s", help="Init scheme (see `initcli schemes`).")]
Gain = Annotated[float, typer.Option(help="Multiplies the weights (the std) of every scheme.")]
Mode = Annotated[Optional[str], typer.Option(
    help="fan_in, fan_out or fan_avg; overrides the preset's (variance-scaling schemes).")]
Distribution = Annotated[Optional[str], typer.Option(
    help="normal, uniform or truncated-normal; overrides the preset's.")]
ActivationOpt = Annotated[str, typer.Option("--activation", "-a", help=(
    "linear, relu, leaky-relu, tanh, sigmoid, selu, elu, gelu, silu or softplus."))]
NegativeSlope = Annotated[float, typer.Option(
    help="Slope a of leaky-relu; He scales by 2/(1+a²) with it, as torch's kaiming does.")]
Value = Annotated[float, typer.Option(help="The weight of the constant scheme.")]
Std = Annotated[float, typer.Option(help="The std of the normal scheme.")]
Limit = Annotated[float, typer.Option(help="The limit of the uniform scheme, U(-limit, limit).")]
Seed = Annotated[int, typer.Option(help="Seeds weights, biases, inputs or data, cotangent and batch order (separate streams).")]
Format = Annotated[str, typer.Option("--format", "-f", help=(
    "auto, table, csv or json. auto: a table on a terminal, CSV when piped or redirected."))]
Dtype = Annotated[str, typer.Option(help="float32 (what networks train in) or float64.")]
PlotOpt = Annotated[bool, typer.Option("--plot", help=(
    "Draw a chart in the terminal (on stderr when stdout is piped, so CSV stays clean)."))]
SavePlot = Annotated[Optional[str], typer.Option(help=(
    "Write the chart to a .png or .svg file (needs matplotlib: pip install 'initcli[plot]')."))]
Force = Annotated[bool, typer.Option(help="Let --save/--save-plot overwrite an existing file.")]
Residual = Annotated[bool, typer.Option(help="Skip connections: each block is x + residual-scale·f(x).")]
ResidualScale = Annotated[float, typer.Option(help="α of x + α·f(x) (0: zero-init branches, SkipInit/ReZero).")]
Block = Annotated[int, typer.Option(help="Linear→activation layers per residual branch.")]
Norm = Annotated[str, typer.Option(help="none, or layer: LayerNorm between each Linear and its activation.")]
LsuvTol = Annotated[float, typer.Option(help="lsuv: stop when |Var(h) − 1| is within this.")]
LsuvMaxIter = Annotated[int, typer.Option(help="lsuv: rescalings per layer at most.")]
Jobs = Annotated[Optional[int], typer.Option(
    help="Processes to run the pairs in (default: one per core); results do not depend on it.")]
BiasStd = Annotated[float, typer.Option(help="Biases are drawn from N(0, bias-std²); 0 gives zero bias.")]


def parse_int_list(text: str, param: str, *, min_len: int = 1) -> list[int]:
    """'784,256,10' -> [784, 256, 10]; anything but positive integers is refused."""
    items = [item.strip() for item in text.split(",")]
    values = []
    for item in items:
        if not item.isdecimal() or int(item) <= 0:  # isdecimal: int() takes every such string
            shown = item if item else "(empty)"
            raise InitcliError(param, f"must be a comma list of positive integers such as 784,256,10; "
                                      f"'{shown}' is not one")
        values.append(int(item))
    if len(values) < min_len:
        raise InitcliError(param, f"needs at least {min_len} comma-separated sizes, got '{text}'")
    return values


def parse_name_list(text: str, param: str) -> list[str]:
    """'relu, tanh' -> ['relu', 'tanh']; empty items are refused."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise InitcliError(param, f"must be a comma list of names such as relu,tanh; got '{text}'")
    return items


def _warn_ignored(schemes: list[str], mode: str | None, distribution: str | None) -> None:
    """One stderr line for options a scheme does not use, so nobody believes they took effect."""
    from .render import stderr_console
    from .schemes import get_scheme, ignored_options

    for name in schemes:
        ignored = ignored_options(name, mode=mode, distribution=distribution)
        if ignored:
            verb = "does not apply" if len(ignored) == 1 else "do not apply"
            stderr_console().print(f"initcli: warning: {' and '.join(ignored)} {verb} to the "
                                   f"'{get_scheme(name).name}' scheme: ignored", soft_wrap=True)


def _init_options(gain, mode, distribution, activation, negative_slope, value, std, limit) -> dict:
    return {"gain": gain, "mode": mode, "distribution": distribution, "activation": activation,
            "negative_slope": negative_slope, "value": value, "std": std, "limit": limit}


def _arch_options(residual, residual_scale, block, norm, lsuv_tol, lsuv_max_iter) -> dict:
    return {"residual": residual, "residual_scale": residual_scale, "block": block, "norm": norm,
            "lsuv_tol": lsuv_tol, "lsuv_max_iter": lsuv_max_iter}


def _output_format(fmt: str) -> str:
    from .render import resolve_format

    return resolve_format(fmt, sys.stdout.isatty())


def _stdout_console():
    """The console tables go to: the terminal's, or a wide one when a table is forced into a
    pipe, which must not be cut to 80 columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=400)


def _write_machine(fmt: str, command: str, params: dict, rows: list[dict], columns, **extra) -> None:
    from .render import write_csv, write_json

    if fmt == "csv":
        write_csv(rows, columns, sys.stdout)
    else:
        write_json(command, params, rows, sys.stdout, **extra)
    sys.stdout.flush()


# Which columns a narrow terminal keeps first.
PROPAGATE_PRIORITY = ("layer", "preact_var", "theory_preact_var", "act_var", "grad_var", "theory_grad_var",
                      "off_theory", "chi", "dead_frac", "saturated_frac", "effective_rank", "input_cosine",
                      "weight_grad_var", "act_mean", "preact_mean", "weight_std", "fan_in", "fan_out")
COMPARE_PRIORITY = ("scheme", "activation", "verdict", "grad_ratio", "first_grad_var", "last_grad_var",
                    "last_act_var", "max_dead_frac", "max_saturated_frac", "min_effective_rank", "last_input_cosine",
                    "first_act_var", "depth", "width")
SAMPLE_PRIORITY = ("layer", "shape", "expected_std", "std", "std_ratio", "mean", "min", "max", "expected_limit",
                   "fan_in", "fan_out", "distribution", "expected_mean")


def _say_hidden(hidden: list[str]) -> None:
    if hidden:
        from .render import stderr_console

        stderr_console().print(f"({len(hidden)} columns left out to fit the terminal: {', '.join(hidden)}; "
                               "widen it or use --format csv)", style="dim", soft_wrap=True)


# -- commands -------------------------------------------------------------------------------


@app.command()
def schemes(fmt: Format = "auto") -> None:
    """List every init scheme: formula, fan mode, the activation it was designed for, the paper."""
    from .render import print_table
    from .schemes import scheme_table

    out = _output_format(fmt)
    rows = scheme_table()
    columns = list(rows[0])
    if out == "table":
        _say_hidden(print_table(rows, columns, title="initcli schemes (std × gain; a = negative slope)",
                                console=_stdout_console()))
    else:
        _write_machine(out, "schemes", {}, rows, columns)


@app.command()
def sample(
    scheme: Scheme = "he-normal",
    sizes: Annotated[Optional[str], typer.Option(
        help="Layer sizes, one matrix per consecutive pair. Default 784,256,256,10.")] = None,
    shape: Annotated[Optional[str], typer.Option(
        help="One tensor in PyTorch layout (out,in,*kernel), e.g. 64,3,7,7.")] = None,
    gain: Gain = 1.0,
    mode: Mode = None,
    distribution: Distribution = None,
    activation: ActivationOpt = "relu",
    negative_slope: NegativeSlope = 0.01,
    value: Value = 0.5,
    std: Std = 1.0,
    limit: Limit = 1.0,
    bias_std: BiasStd = 0.0,
    dtype: Dtype = "float32",
    seed: Seed = 0,
    save: Annotated[Optional[str], typer.Option(help="Write weights and biases to this .npz file.")] = None,
    force: Force = False,
    plot: PlotOpt = False,
    save_plot: SavePlot = None,
    fmt: Format = "auto",
) -> None:
    """Draw the weights and compare them with the scheme's formula."""
    from .render import histogram_line, print_table, stderr_console
    from .sampling import WEIGHT_COLUMNS, save_npz
    from .sampling import sample as sample_weights

    out = _output_format(fmt)
    result = sample_weights(
        scheme,
        sizes=None if sizes is None else parse_int_list(sizes, "sizes", min_len=2),
        shape=None if shape is None else parse_int_list(shape, "shape", min_len=2),
        bias_std=bias_std, seed=seed, dtype=dtype,
        **_init_options(gain, mode, distribution, activation, negative_slope, value, std, limit),
    )
    _warn_ignored([scheme], mode, distribution)
    if save is not None:
        save_npz(result, save, force=force)
        stderr_console().print(f"saved {len(result.weights)} weight tensors to {save}", soft_wrap=True)
    rows = result.rows()
    if out == "table":
        p = result.params
        hidden = print_table(rows, WEIGHT_COLUMNS, title=f"{p['scheme']} · gain {p['gain']:g} · seed {p['seed']}",
                             extra_columns={"histogram": [histogram_line(w) for w in result.weights]},
                             priority=SAMPLE_PRIORITY, console=_stdout_console())
        _say_hidden(hidden)
    else:
        _write_machine(out, "sample", result.params, rows, WEIGHT_COLUMNS)
    if plot or save_plot:
        _sample_charts(result, plot, save_plot, force)


def _sample_charts(result, plot: bool, save_plot: str | None, force: bool) -> None:
    import numpy as np

    from .charts import histogram_chart, save_figure
    from .schemes import make_init

    p = result.params
    init = make_init(p["scheme"], **{k: p[k] for k in ("gain", "mode", "distribution", "activation",
                                                      "negative_slope") if k in p},
                     **{k: p[k] for k in ("value", "std", "limit") if k in p})
    densities = [init.density(w.shape) for w in result.weights]
    title = f"{p['scheme']} · gain {p['gain']:g} · seed {p['seed']}"
    if plot:
        console = _chart_console()
        for layer, w, density in zip(result.layers, result.weights, densities):
            _show(histogram_chart(w, density=density, width=_chart_width(console),
                                  title=f"layer {layer.layer} · {layer.shape} · std {layer.std:.4g} "
                                        f"(formula {layer.expected_std:.4g})"))
    if save_plot:
        panels = []
        for layer, w, density in zip(result.layers, result.weights, densities):
            flat = np.asarray(w, dtype=np.float64).ravel()
            curve = None
            if density is not None:
                xs = np.linspace(flat.min(), flat.max(), 300)
                curve = (xs, [density(x) for x in xs])
            panels.append({"histogram": flat, "density": curve, "xlabel": "weight", "ylabel": "density",
                           "title": f"layer {layer.layer} ({layer.shape})"})
        save_figure(save_plot, panels, title=title, force=force)


def _chart_console():
    """Charts go to stdout on a terminal, else to stderr: never into piped machine output."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(stderr=True)


def _show(lines) -> None:
    console = _chart_console()
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _chart_width(console) -> int:
    return max(40, min(console.width, 110))


_MEMORY_REPORT = 256 * 2**20  # runs needing more memory than this say so before they start


def _report_memory(run) -> None:
    from .propagation import estimate_bytes
    from .render import stderr_console

    needed = estimate_bytes(run.sizes, run.batch, run.dtype, checkpoint=run.checkpoint)
    if needed < _MEMORY_REPORT:
        return
    message = f"initcli: this run needs about {needed / 2**30:.2f} GiB of memory"
    if not run.checkpoint:
        lighter = estimate_bytes(run.sizes, run.batch, run.dtype, checkpoint=True)
        if lighter < 0.7 * needed:
            message += f" (--checkpoint: {lighter / 2**30:.2f} GiB)"
    stderr_console().print(message, soft_wrap=True, highlight=False)


def _propagate_style(column: str, value) -> str | None:
    if column == "dead_frac" and isinstance(value, float) and value >= 0.5:
        return "red"
    if column == "saturated_frac" and isinstance(value, float) and value >= 0.5:
        return "yellow"
    if column == "effective_rank" and isinstance(value, float) and value <= 1.5:
        return "magenta"
    return None


@app.command()
def propagate(
    depth: Annotated[Optional[int], typer.Option(help="Number of Linear→activation layers (default 10).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Units per layer, input included (default 256).")] = None,
    sizes: Annotated[Optional[str], typer.Option(
        help="Layer sizes n0,n1,…,nL instead of --depth/--width, e.g. 784,256,256,10.")] = None,
    scheme: Scheme = "he-normal",
    activation: ActivationOpt = "relu",
    batch: Annotated[int, typer.Option(help="Number of random inputs.")] = 512,
    gain: Gain = 1.0,
    mode: Mode = None,
    distribution: Distribution = None,
    negative_slope: NegativeSlope = 0.01,
    value: Value = 0.5,
    std: Std = 1.0,
    limit: Limit = 1.0,
    bias_std: BiasStd = 0.0,
    input_std: Annotated[float, typer.Option(help="Inputs are drawn from N(0, input-std²).")] = 1.0,
    dtype: Dtype = "float32",
    seed: Seed = 0,
    theory: Annotated[bool, typer.Option(help="Add the mean-field columns theory_preact_var, theory_grad_var, "
                                              "chi and off_theory.")] = True,
    checkpoint: Annotated[bool, typer.Option(help="Keep activations every ~sqrt(depth) layers and recompute the "
                                                  "rest going back: O(sqrt(depth)) memory, same numbers.")] = False,
    residual: Residual = False,
    residual_scale: ResidualScale = 1.0,
    block: Block = 1,
    norm: Norm = "none",
    lsuv_tol: LsuvTol = 0.05,
    lsuv_max_iter: LsuvMaxIter = 10,
    weights: Annotated[Optional[str], typer.Option(
        help="Propagate through the weights of an .npz file written by `initcli sample --save` instead of "
             "sampling a scheme; the file fixes the sizes.")] = None,
    plot: PlotOpt = False,
    save_plot: SavePlot = None,
    force: Force = False,
    fmt: Format = "auto",
) -> None:
    """Push random inputs through a deep stack, backpropagate, and report every layer.

    With --residual, act is the residual stream x + α·f(x) that the next layer reads, and
    saturated_frac is measured on f's activation. With --norm layer, preact is h before the
    LayerNorm and grad_var the variance of dL/dh.
    """
    from .propagation import prepare
    from .propagation import propagate as run_propagate
    from .render import overflow_message, print_table, stderr_console

    out = _output_format(fmt)
    options = dict(
        sizes=None if sizes is None else parse_int_list(sizes, "sizes", min_len=2),
        depth=depth, width=width, batch=batch, bias_std=bias_std, input_std=input_std, dtype=dtype,
        seed=seed, theory=theory, checkpoint=checkpoint, weights=weights,
        **_init_options(gain, mode, distribution, activation, negative_slope, value, std, limit),
        **_arch_options(residual, residual_scale, block, norm, lsuv_tol, lsuv_max_iter),
    )
    _report_memory(prepare(scheme, **options))
    if weights is None:
        _warn_ignored([scheme], mode, distribution)
    if save_plot is not None:
        from .charts import check_save_plot

        check_save_plot(save_plot, force)
    result = run_propagate(scheme, **options)
    rows = result.rows()
    if out == "table":
        p = result.params
        shape = (f"{p['depth']} layers of {p['sizes'][1]}" if len(set(p["sizes"])) == 1
                 else "sizes " + ",".join(map(str, p["sizes"])))
        from .render import log_bars

        bars = {"act_var ▕": log_bars([r["act_var"] for r in rows]),
                "grad_var ▕": log_bars([r["grad_var"] for r in rows])}
        hidden = print_table(rows, result.columns,
                             title=f"{p.get('scheme') or p['weights']} · {p['activation']} · {shape} · "
                                   f"batch {p['batch']} · {p['dtype']} · seed {p['seed']}",
                             cell_style=_propagate_style, priority=PROPAGATE_PRIORITY, extra_columns=bars,
                             console=_stdout_console())
        _say_hidden(hidden)
    else:
        _write_machine(out, "propagate", result.params, rows, result.columns,
                       overflow={"forward_layer": result.forward_overflow_layer,
                                 "backward_layer": result.backward_overflow_layer})
    if result.overflowed:
        stderr_console().print(overflow_message(result), style="yellow", soft_wrap=True)
    if plot or save_plot:
        from .charts import log_chart, propagate_series, save_figure

        p = result.params
        title = (f"{p.get('scheme') or p['weights']} · {p['activation']} · {p['depth']} layers · "
                 f"{_sizes_text(p['sizes'])} · batch {p['batch']} · seed {p['seed']}")
        series = propagate_series(rows)
        if plot:
            _show(log_chart(series, width=_chart_width(_chart_console()), title=title))
        if save_plot:
            save_figure(save_plot, [{"series": series, "xlabel": "layer", "ylabel": "variance", "log": True}],
                        title=title, force=force)


def main() -> None:
    app()


def _compare_style(column: str, value) -> str | None:
    if column == "verdict":
        return "green" if value == "stable" else "bold red"
    return None


@app.command()
def compare(
    schemes: Annotated[str, typer.Option(help="Comma list of schemes to run.")] = (
        "zeros,constant,normal,xavier-normal,he-normal"),
    activation: Annotated[str, typer.Option("--activation", "-a", help="Comma list of activations.")] = "relu",
    depth: Annotated[Optional[int], typer.Option(help="Number of layers (default 10).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Units per layer (default 256).")] = None,
    sizes: Annotated[Optional[str], typer.Option(help="Layer sizes n0,n1,…,nL instead of --depth/--width.")] = None,
    batch: Annotated[int, typer.Option(help="Number of random inputs.")] = 512,
    gain: Gain = 1.0,
    mode: Mode = None,
    distribution: Distribution = None,
    negative_slope: NegativeSlope = 0.01,
    value: Value = 0.5,
    std: Std = 1.0,
    limit: Limit = 1.0,
    bias_std: BiasStd = 0.0,
    input_std: Annotated[float, typer.Option(help="Inputs are drawn from N(0, input-std²).")] = 1.0,
    dtype: Dtype = "float32",
    seed: Seed = 0,
    residual: Residual = False,
    residual_scale: ResidualScale = 1.0,
    block: Block = 1,
    norm: Norm = "none",
    lsuv_tol: LsuvTol = 0.05,
    lsuv_max_iter: LsuvMaxIter = 10,
    jobs: Jobs = None,
    plot: PlotOpt = False,
    save_plot: SavePlot = None,
    force: Force = False,
    fmt: Format = "auto",
) -> None:
    """Run the same stack under each scheme (and activation) and give each a verdict.

    Verdicts, first match wins: symmetric (layer 1's effective rank <= 1.001: units move
    together), overflow (inf/nan), no-signal (last layer's activations constant, or no
    gradient at layer 1), dead (over half a layer's units never fire), saturated (over half a
    layer's activations in a flat region), exploding / vanishing (the per-layer factor of the
    gradient, measured over the deeper half of the stack and compounded over the depth, beyond
    max(10, exp(3·sqrt(5·sum 1/n))): the finite-width spread), stable.
    """
    from .compare import COMPARE_COLUMNS
    from .compare import compare as run_compare
    from .render import print_table

    out = _output_format(fmt)
    if save_plot is not None:
        from .charts import check_save_plot

        check_save_plot(save_plot, force)
    result = run_compare(
        parse_name_list(schemes, "schemes"), parse_name_list(activation, "activation"),
        sizes=None if sizes is None else parse_int_list(sizes, "sizes", min_len=2),
        depth=depth, width=width, batch=batch, bias_std=bias_std, input_std=input_std, dtype=dtype, seed=seed,
        gain=gain, mode=mode, distribution=distribution, negative_slope=negative_slope, value=value, std=std,
        limit=limit, jobs=jobs, **_arch_options(residual, residual_scale, block, norm, lsuv_tol, lsuv_max_iter),
    )
    _warn_ignored(parse_name_list(schemes, "schemes"), mode, distribution)
    rows = result.rows()
    if out == "table":
        p = result.params
        from .render import log_sparkline

        columns = [c for c in COMPARE_COLUMNS if c != "reason"]
        profiles = {"act_var by layer": [log_sparkline([layer.act_var for layer in run.layers]) for run in result.runs],
                    "grad_var by layer": [log_sparkline([layer.grad_var for layer in run.layers])
                                          for run in result.runs]}
        hidden = print_table(rows, columns, title=f"{p['depth']} layers · {_sizes_text(p['sizes'])} · "
                                                  f"batch {p['batch']} · {p['dtype']} · seed {p['seed']}",
                             cell_style=_compare_style, priority=COMPARE_PRIORITY, extra_columns=profiles,
                             console=_stdout_console())
        _say_hidden(hidden)
        _print_reasons(rows)
    else:
        _write_machine(out, "compare", result.params, rows, COMPARE_COLUMNS)
    if plot or save_plot:
        from .charts import log_chart, per_run_series, save_figure

        p = result.params
        title = f"{p['depth']} layers · {_sizes_text(p['sizes'])} · batch {p['batch']} · seed {p['seed']}"
        panels = [(column, per_run_series(result.runs, column)) for column in ("act_var", "grad_var")]
        if plot:
            for column, series in panels:
                _show(log_chart(series, width=_chart_width(_chart_console()), title=f"{column} · {title}"))
        if save_plot:
            save_figure(save_plot, [{"series": series, "xlabel": "layer", "ylabel": column, "log": True,
                                     "title": column} for column, series in panels], title=title, force=force)


def _sizes_text(sizes: list[int]) -> str:
    return f"width {sizes[0]}" if len(set(sizes)) == 1 else "sizes " + ",".join(map(str, sizes))


def _print_reasons(rows: list[dict]) -> None:
    console = _stdout_console()
    for row in rows:
        style = "green" if row["verdict"] == "stable" else "red"
        console.print(f"[bold]{row['scheme']} + {row['activation']}[/bold]: [{style}]{row['verdict']}[/{style}]"
                      f" — {row['reason']}", highlight=False)


@app.command("gain")
def gain_command(
    activation: Annotated[Optional[str], typer.Option("--activation", "-a", help=(
        "Comma list of activations (default: every one initcli knows)."))] = None,
    negative_slope: NegativeSlope = 0.01,
    fmt: Format = "auto",
) -> None:
    """Weight gains per activation: torch's table, and the ones that keep q = 1 forward and backward.

    forward_gain = 1/sqrt(E[φ(z)²]), backward_gain = 1/sqrt(E[φ'(z)²]), z ~ N(0, 1), by quadrature.
    """
    from dataclasses import asdict

    from .activations import ACTIVATION_NAMES
    from .render import print_table
    from .theory import gain as compute_gain

    out = _output_format(fmt)
    names = ACTIVATION_NAMES if activation is None else parse_name_list(activation, "activation")
    rows = [asdict(compute_gain(name, negative_slope)) for name in names]
    columns = ["activation", "torch_gain", "forward_gain", "backward_gain"]
    if out == "table":
        print_table(rows, columns, title="gains (z ~ N(0,1))", console=_stdout_console())
    else:
        _write_machine(out, "gain", {"activations": list(names), "negative_slope": negative_slope}, rows, columns)


@app.command()
def critical(
    activation: Annotated[str, typer.Option("--activation", "-a", help="The activation.")] = "tanh",
    bias_std: Annotated[float, typer.Option(help="σ_b, the bias std.")] = 0.0,
    negative_slope: NegativeSlope = 0.01,
    fmt: Format = "auto",
) -> None:
    """The edge of chaos: the σ_w where χ = 1 for this bias std, and the depth scales around it.

    Rows are σ_w at multiples of the critical value. q_star is the fixed point of the
    pre-activation variance, chi the per-layer gradient factor there, c_star the correlation
    two inputs converge to, xi_q / xi_c / xi_grad the depth scales of variance, correlation
    and gradient, max_depth ≈ 6·xi_c (Schoenholz et al. 2017). Weight std = σ_w/sqrt(fan_in).
    """
    from dataclasses import asdict

    from .propagation import check_std
    from .render import print_table, stderr_console
    from .theory import critical as find_critical

    out = _output_format(fmt)
    sigma_b = check_std("bias_std", bias_std)
    sigma_star, phases = find_critical(activation, sigma_b, negative_slope=negative_slope)
    if not phases:
        raise InitcliError("activation", f"no σ_w in [0.001, 1000] puts '{activation}' at χ = 1 "
                                         f"with --bias-std {sigma_b:g}")
    rows = [asdict(p) for p in phases]
    columns = list(rows[0])
    edge = next(p for p in phases if p.phase == "critical")
    summary = (f"critical σ_w = {sigma_star:.6g} for {activation} with σ_b = {sigma_b:g}: "
               f"q* = {edge.q_star:.4g} (reached from q = 1); "
               f"weight std = {sigma_star:.4g}/√fan_in")
    if abs(edge.chi - 1) > 1e-3:
        summary += f" (χ jumps across the edge: {edge.chi:.3g} here)"
    if out == "table":
        console = _stdout_console()
        console.print(summary, highlight=False, soft_wrap=True)
        _say_hidden(print_table(rows, columns, console=console,
                                cell_style=lambda c, v: "bold" if c == "phase" and v == "critical" else None))
    else:
        _write_machine(out, "critical", {"activation": activation, "bias_std": sigma_b,
                                         "negative_slope": negative_slope, "sigma_w_critical": sigma_star},
                       rows, columns)
        stderr_console().print(summary, soft_wrap=True, highlight=False)


@app.command("jacobian")
def jacobian_command(
    depth: Annotated[Optional[int], typer.Option(help="Number of layers (default 10).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Units per layer (default 256).")] = None,
    sizes: Annotated[Optional[str], typer.Option(help="Layer sizes n0,n1,…,nL instead of --depth/--width.")] = None,
    scheme: Scheme = "he-normal",
    activation: ActivationOpt = "relu",
    inputs: Annotated[int, typer.Option(help="Inputs the spectrum is averaged over.")] = 8,
    batch: Annotated[int, typer.Option(help="Random inputs drawn (lsuv calibrates on all of them).")] = 512,
    gain: Gain = 1.0,
    mode: Mode = None,
    distribution: Distribution = None,
    negative_slope: NegativeSlope = 0.01,
    value: Value = 0.5,
    std: Std = 1.0,
    limit: Limit = 1.0,
    bias_std: BiasStd = 0.0,
    input_std: Annotated[float, typer.Option(help="Inputs are drawn from N(0, input-std²).")] = 1.0,
    dtype: Dtype = "float32",
    seed: Seed = 0,
    residual: Residual = False,
    residual_scale: ResidualScale = 1.0,
    block: Block = 1,
    norm: Norm = "none",
    lsuv_tol: LsuvTol = 0.05,
    lsuv_max_iter: LsuvMaxIter = 10,
    fmt: Format = "auto",
) -> None:
    """Singular values of the input-output Jacobian after each layer (Pennington et al. 2017).

    sv_mean_sq is the mean of the squared singular values (what the variance map controls);
    sv_max, sv_min and sv_condition = sv_max/sv_min show the spread: all 1 is dynamical
    isometry. Each is averaged over --inputs inputs; the Jacobian is computed in float64.
    """
    from .jacobian import JACOBIAN_COLUMNS, jacobian
    from .render import print_table

    out = _output_format(fmt)
    result = jacobian(
        scheme, inputs=inputs,
        sizes=None if sizes is None else parse_int_list(sizes, "sizes", min_len=2),
        depth=depth, width=width, batch=batch, bias_std=bias_std, input_std=input_std, dtype=dtype, seed=seed,
        **_init_options(gain, mode, distribution, activation, negative_slope, value, std, limit),
        **_arch_options(residual, residual_scale, block, norm, lsuv_tol, lsuv_max_iter),
    )
    rows = result.rows()
    if out == "table":
        p = result.params
        print_table(rows, JACOBIAN_COLUMNS, title=f"{p['scheme']} · {p['activation']} · {p['depth']} layers · "
                                                  f"{_sizes_text(p['sizes'])} · {p['inputs']} inputs",
                    console=_stdout_console())
    else:
        _write_machine(out, "jacobian", result.params, rows, JACOBIAN_COLUMNS)


@app.command("train")
def train_command(
    task: Annotated[str, typer.Option(help="xor, moons, circles, spiral or regression (generated, no download).")] = (
        "spiral"),
    schemes: Annotated[str, typer.Option(help="Comma list of schemes to train from.")] = (
        "zeros,constant,normal,xavier-normal,he-normal"),
    activation: ActivationOpt = "relu",
    depth: Annotated[Optional[int], typer.Option(help="Hidden layers (default 4).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Units per hidden layer (default 64).")] = None,
    sizes: Annotated[Optional[str], typer.Option(
        help="Hidden widths, e.g. 64,64,32; the task fixes the input and output sizes.")] = None,
    optimizer: Annotated[str, typer.Option(help="sgd or adam.")] = "sgd",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.1,
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 300,
    batch: Annotated[Optional[int], typer.Option(help="Mini-batch size (default 128); 0 for full batch.")] = 128,
    target: Annotated[float, typer.Option(help="Accuracy (R² for regression) that counts as learned.")] = 0.9,
    samples: Annotated[int, typer.Option(help="Size of the generated data set.")] = 512,
    classes: Annotated[Optional[int], typer.Option(help="Spiral arms (default 3).")] = None,
    noise: Annotated[Optional[float], typer.Option(help="Noise std of the task (each has a default).")] = None,
    curves: Annotated[bool, typer.Option(help="Print per-epoch rows scheme, epoch, loss, accuracy instead.")] = False,
    gain: Gain = 1.0,
    mode: Mode = None,
    distribution: Distribution = None,
    negative_slope: NegativeSlope = 0.01,
    value: Value = 0.5,
    std: Std = 1.0,
    limit: Limit = 1.0,
    dtype: Dtype = "float32",
    seed: Seed = 0,
    residual: Residual = False,
    residual_scale: ResidualScale = 1.0,
    block: Block = 1,
    norm: Norm = "none",
    lsuv_tol: LsuvTol = 0.05,
    lsuv_max_iter: LsuvMaxIter = 10,
    jobs: Jobs = None,
    plot: PlotOpt = False,
    save_plot: SavePlot = None,
    force: Force = False,
    fmt: Format = "auto",
) -> None:
    """Train the same MLP from each scheme on the same generated data and seed: does it learn, and how fast?

    Columns: final_loss, final_accuracy (R² for regression), best_accuracy, epochs_to_target
    (first epoch at --target, empty if never), diverged (the loss became inf/nan) and
    final_effective_rank of the last hidden layer (1: its units are still identical).
    """
    from .render import print_table
    from .training import CURVE_COLUMNS, TRAIN_COLUMNS, train

    out = _output_format(fmt)
    options = _init_options(gain, mode, distribution, activation, negative_slope, value, std, limit)
    activation_name = options.pop("activation")
    names = parse_name_list(schemes, "schemes")
    if save_plot is not None:
        from .charts import check_save_plot

        check_save_plot(save_plot, force)
    with _progress(len(names) * max(epochs, 0), "training") as advance:
        result = train(
            names, activation_name, task=task, samples=samples, classes=classes, noise=noise,
            sizes=None if sizes is None else parse_int_list(sizes, "sizes"), depth=depth, width=width,
            optimizer=optimizer, lr=lr, epochs=epochs, batch=None if batch == 0 else batch, target=target,
            seed=seed, dtype=dtype, jobs=jobs, progress=advance,
            **_arch_options(residual, residual_scale, block, norm, lsuv_tol, lsuv_max_iter), **options,
        )
    _warn_ignored(names, mode, distribution)
    rows, columns = (result.curve_rows(), CURVE_COLUMNS) if curves else (result.rows(), TRAIN_COLUMNS)
    if out == "table":
        p = result.params
        title = (f"{p['task']} · {p['activation']} · hidden {','.join(map(str, p['hidden_sizes']))} · "
                 f"{p['optimizer']} lr {p['lr']:g} · {p['epochs']} epochs · seed {p['seed']}")
        _say_hidden(print_table(rows, columns, title=title, console=_stdout_console(),
                                cell_style=_train_style))
    else:
        _write_machine(out, "train", result.params, rows, columns)
    if plot or save_plot:
        from .charts import curve_series, log_chart, save_figure

        p = result.params
        title = f"{p['task']} · {p['activation']} · {p['optimizer']} lr {p['lr']:g} · seed {p['seed']}"
        curve = result.curve_rows()
        if plot:
            _show(log_chart(curve_series(curve, "loss"), width=_chart_width(_chart_console()),
                            title=f"training loss · {title}", x_label="epoch"))
        if save_plot:
            score = "R²" if p["task"] == "regression" else "accuracy"
            save_figure(save_plot, [
                {"series": curve_series(curve, "loss"), "xlabel": "epoch", "ylabel": "loss", "log": True,
                 "title": "loss"},
                {"series": curve_series(curve, "accuracy"), "xlabel": "epoch", "ylabel": score, "log": False,
                 "title": score}], title=title, force=force)


def _train_style(column: str, value) -> str | None:
    if column == "diverged" and value is True:
        return "bold red"
    if column == "epochs_to_target" and value is None:
        return "red"
    return None


class _progress:
    """A transient rich progress bar on stderr, only when stderr is a terminal and the work
    lasts more than a second; otherwise nothing. Used as `with _progress(n, label) as advance`."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.bar = total, label, None

    def __enter__(self):
        import time

        if not sys.stderr.isatty() or self.total <= 0:
            return None
        from rich.progress import Progress

        self.started = time.perf_counter()
        from rich.console import Console

        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.task = None
        done = 0

        def advance(steps: int) -> None:
            nonlocal done
            done += steps
            if self.task is None and time.perf_counter() - self.started > 1.0:
                self.bar.start()
                self.task = self.bar.add_task(self.label, total=self.total, completed=done - steps)
            if self.task is not None:
                self.bar.advance(self.task, steps)
        return advance

    def __exit__(self, *exc) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.stop()
