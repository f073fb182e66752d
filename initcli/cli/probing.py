"""`initcli probe`: the per-layer diagnosis on the user's own PyTorch model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .options import (
    Activation,
    InitOptions,
    OutputOptions,
    chart_console,
    chart_width,
    check_outputs,
    command,
    given,
    note,
    output_format,
    parse_int_list,
    parse_name_list,
    progress,
    say_hidden,
    show,
    stdout_console,
    write_machine,
)

PROBE_PRIORITY = ("module", "type", "act_var", "grad_var", "output_shape", "dead_frac", "effective_rank",
                  "channel_mean_sq", "channel_var", "branch_var", "weight_grad_var", "weight_std", "input_cosine",
                  "saturated_frac", "act_mean")
SUMMARY_PRIORITY = ("scheme", "verdict", "grad_ratio", "first_grad_var", "last_grad_var", "last_act_var",
                    "max_dead_frac", "min_effective_rank", "max_saturated_frac", "last_input_cosine", "first_act_var",
                    "modules")


def row_style(column: str, value) -> str | None:
    if column == "verdict":
        return "green" if value == "stable" else "bold red"
    if column == "dead_frac" and isinstance(value, float) and value >= 0.5:
        return "red"
    if column == "saturated_frac" and isinstance(value, float) and value >= 0.5:
        return "yellow"
    return None


@command(app)
def probe(
    init: InitOptions,
    out: OutputOptions,
    target: Annotated[str, typer.Argument(
        help="MODULE:CALLABLE (imported with the current directory on sys.path, as python -m) or "
             "path/to/file.py:CALLABLE; the callable returns a torch.nn.Module or (model, example_input).",
        show_default=False)],
    kwargs: Annotated[Optional[str], typer.Option(help="JSON keyword arguments for the callable, e.g. "
                                                       "'{\"depth\": 20}'.")] = None,
    input_shape: Annotated[Optional[str], typer.Option(
        help="Shape of one input without the batch, e.g. 3,32,32; inputs are N(0, input-std²) from the seed.")] = None,
    batch: Annotated[int, typer.Option(help="Number of random inputs.")] = 64,
    input_std: Annotated[float, typer.Option(help="Inputs are drawn from N(0, input-std²).")] = 1.0,
    tokens: Annotated[Optional[int], typer.Option(
        help="Feed integer token ids uniform in [0, TOKENS) instead (with --seq-len).")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Length of each token sequence (with --tokens).")] = None,
    dtype: Annotated[str, typer.Option(help="float32 or float64: the model and inputs are cast to it.")] = "float32",
    device: Annotated[str, typer.Option(help="cpu, or cuda when torch sees one.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seeds inputs, cotangent and --reinit weights (separate streams).")] = 0,
    train_mode: Annotated[bool, typer.Option(
        "--train-mode/--eval-mode",
        help="--train-mode (the default): normalisation layers on batch statistics, as at the first training "
             "step, everything else in eval mode (dropout off); --eval-mode: the whole model in eval mode "
             "(BatchNorm on its running statistics). The model's buffers are put back afterwards.")] = True,
    output: Annotated[Optional[str], typer.Option(
        help="Which output to backpropagate from when the model returns a dict, ModelOutput or tuple: a key "
             "(logits) or an index (0); default: logits, else the first floating tensor that is not a loss.")] = None,
    modules: Annotated[Optional[str], typer.Option(
        help="Comma list of glob patterns on module names (e.g. 'layer1.*,fc'): only these get a row.")] = None,
    max_depth: Annotated[Optional[int], typer.Option(
        help="Go at most this deep in the module tree; a module at that depth is measured whole.")] = None,
    reinit: Annotated[Optional[str], typer.Option(
        help="Comma list of schemes: re-initialise a copy's Linear, Conv and Embedding weights with each "
             "(torch-layout fans, --gain, --mode, --distribution, --bias-std) before probing.")] = None,
    activation: Activation = "relu",
    fix: Annotated[Optional[str], typer.Option(
        help="lsuv or rescale: repair a copy's init, probe it again and show the verdicts before and after. lsuv "
             "(Mishkin & Matas 2015) rescales each weighted module in forward order until its output variance on "
             "this batch is 1; rescale sets each weight's std to gain/√fan_in for the activation that follows "
             "it (no data).")] = None,
    save: Annotated[Optional[str], typer.Option(
        help="With --fix: write the fixed model's state_dict to this .safetensors file "
             "(model.load_state_dict(safetensors.torch.load_file(path))).")] = None,
) -> None:
    """Probe your own PyTorch model: propagate's per-layer numbers for every module.

    One row per module call in execution order (leaves, modules with parameters, repeated
    blocks such as h.3 or layer2.1, and residual branches: modules named `branch` or
    `residual`, or carrying `initcli_branch = True`). act_* of the module's output, grad_var of
    dL/d(output) for L = sum(g * output) with a unit-Gaussian g, channel_mean_sq and channel_var
    as in Brock et al. 2021's signal-propagation plots. The verdict uses compare's rules over
    the repeated blocks' outputs (the residual stream), else over the weighted modules up to
    the head, and names them. --seed also seeds torch around the callable, so the same command
    gives the same bytes.
    """
    from ..fixing import fixer
    from ..probing import ProbeComparison, run_probe
    from .fixing import check_fix_options, show_fix

    fmt = output_format(out.fmt)
    check_fix_options(fix, save, out, reinit=reinit)
    check_outputs(out, (save, "save", (".safetensors",)))
    _check_option_use(given(), reinit, input_shape, tokens)
    schemes = parse_name_list(reinit, "reinit") if reinit is not None else None
    shape = parse_int_list(input_shape, "input_shape") if input_shape is not None else None
    options = {k: v for k, v in init.scheme_options().items()}
    with progress(0, "probing") as advance:
        result = run_probe(target, kwargs=kwargs, input_shape=shape, batch=batch, input_std=input_std, tokens=tokens,
                           seq_len=seq_len, dtype=dtype, device=device, seed=seed, train_mode=train_mode,
                           modules=modules, max_depth=max_depth, reinit=schemes, activation=activation,
                           bias_std=init.bias_std, init_options=options, output=output, progress=advance,
                           fix=None if fix is None else fixer(fix, save=save, force=out.force))
    if fix is not None:
        return show_fix(result, fmt, target, seed)
    runs = _show_comparison(result, fmt, target, seed) if isinstance(result, ProbeComparison) else _show_run(
        result, fmt, target, seed)
    if out.plot or out.save_plot:
        _plots(out, runs, target)


_INIT_OPTIONS = {"gain", "mode", "distribution", "negative_slope", "value", "std", "mean", "limit", "low", "high",
                     "sparsity", "groups", "in_axis", "out_axis", "batch_axis", "bias_std", "activation"}


def _check_option_use(typed: set, reinit: Optional[str], input_shape: Optional[str], tokens: Optional[int]) -> None:
    """Options given where they would be ignored: the init options without --reinit, the
    drawn inputs' options without --input-shape or --tokens."""
    from ..errors import InitcliError

    if reinit is None and typed & _INIT_OPTIONS:
        raise InitcliError(sorted(typed & _INIT_OPTIONS)[0], "only applies with --reinit")
    if input_shape is None and typed & {"batch", "input_std"} and tokens is None:
        raise InitcliError(sorted(typed & {"batch", "input_std"})[0], "only applies with --input-shape or --tokens")


def _show_comparison(result, fmt: str, target: str, seed: int) -> tuple:
    """--reinit with several schemes: one summary row per scheme, and each verdict. Returns the runs."""
    from ..probing import COMPARE_PROBE_COLUMNS
    from ..render import print_table

    rows = result.rows()
    _say_run(result.runs[0].params)
    if fmt == "table":
        say_hidden(print_table(rows, [c for c in COMPARE_PROBE_COLUMNS if c != "reason"],
                               title=f"{target} · {len(rows)} schemes · seed {seed} · "
                                     f"{_run_text(result.runs[0].params)}", cell_style=row_style,
                               priority=SUMMARY_PRIORITY, console=stdout_console()))
        for row in rows:
            stdout_console().print(f"{row['scheme']}: {row['verdict']} — {row['reason']}", highlight=False,
                                   markup=False, soft_wrap=True)
    else:
        write_machine(fmt, "probe", result.params, rows, COMPARE_PROBE_COLUMNS)
    return result.runs


def _show_run(result, fmt: str, target: str, seed: int) -> tuple:
    """One probe: a row per module call, then the verdict on stderr. Returns (the run,)."""
    from ..render import log_bars, log_scale_header, print_table

    rows = result.rows()
    _say_run(result.params)
    if fmt == "table":
        bars = {log_scale_header(column, values): log_bars(values)
                for column, values in (("act_var", [r["act_var"] for r in rows]),
                                       ("grad_var", [r["grad_var"] for r in rows]))}
        title = f"{target}" + (f" · reinit {result.params['reinit']}" if "reinit" in result.params else "")
        say_hidden(print_table(rows, result.columns, title=f"{title} · seed {seed} · {_run_text(result.params)}",
                               cell_style=row_style,
                               priority=PROBE_PRIORITY, extra_columns=bars, console=stdout_console()))
    else:
        write_machine(fmt, "probe", result.params, rows, result.columns, verdict=result.verdict,
                      reason=result.reason, judged=list(result.judged))
    note(f"initcli: verdict: {result.verdict} — {result.reason}")
    return (result,)


def _run_text(params: dict) -> str:
    """Which question the run answered: the mode and the output backpropagated from."""
    mode = "train-mode statistics" if params.get("train_mode") else "eval mode"
    return f"{mode} · output {params.get('output')}"


def _say_run(params: dict) -> None:
    """On stderr whatever the format: the mode, the output, and what --reinit left alone."""
    mode = ("train-mode statistics (normalisation on batch statistics, dropout off)" if params.get("train_mode")
            else "eval mode (running statistics)")
    note(f"initcli: probed in {mode}; backpropagated from output '{params.get('output')}'"
         + (f"; {params['zero_head']} starts at zero: a unit cotangent on its input too" if "zero_head" in params
            else ""))
    if params.get("reinit_untouched"):
        note("initcli: --reinit left as built: " + ", ".join(params["reinit_untouched"]))


def _plots(out: OutputOptions, runs, target: str) -> None:
    from ..charts import Series, log_chart, save_figure

    panels = []
    for column in ("act_var", "channel_mean_sq", "channel_var", "grad_var"):
        series = []
        for group, run in enumerate(runs):
            label = column if len(runs) == 1 else f"{run.params.get('reinit')} {column}"
            series.append(Series(label, list(range(1, len(run.modules) + 1)),
                                 [getattr(m, column) for m in run.modules], group=group))
        panels.append((column, series))
    if out.plot:
        for column, series in panels:
            if column in ("act_var", "grad_var"):
                show(log_chart(series, width=chart_width(chart_console()), title=f"{column} · {target}"))
    if out.save_plot:
        # Brock et al. 2021's signal-propagation plot: the three forward quantities against depth
        save_figure(out.save_plot, [{"series": series, "xlabel": "module (execution order)", "ylabel": column,
                                     "log": True, "title": column} for column, series in panels[:3]],
                    title=f"signal propagation · {target}", force=out.force, dpi=out.dpi)
