"""`initcli schemes` and `initcli sample`: the schemes, and the weights they draw."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .options import (
    Activation,
    FormatOnly,
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
    say_hidden,
    show,
    stdout_console,
    warn_ignored,
    write_machine,
)

SAMPLE_PRIORITY = ("layer", "shape", "expected_std", "std", "std_ratio", "mean", "min", "max", "expected_limit",
                   "fan_in", "fan_out", "distribution", "expected_mean")


@command(app)
def schemes(out: FormatOnly) -> None:
    """List every init scheme: formula, fan mode, the activation it was designed for, the paper."""
    from ..render import print_table
    from ..schemes import scheme_table

    fmt = output_format(out.fmt)
    rows = scheme_table(residual_inits=True)
    columns = list(rows[0])
    if fmt == "table":
        say_hidden(print_table(rows, columns, title="initcli schemes (std × gain; a = negative slope)",
                               console=stdout_console()))
    else:
        write_machine(fmt, "schemes", {}, rows, columns)


@command(app)
def sample(
    init: InitOptions,
    out: OutputOptions,
    scheme: Scheme = "he-normal",
    sizes: Annotated[Optional[str], typer.Option(
        help="Layer sizes, one matrix per consecutive pair. Default 784,256,256,10.")] = None,
    shape: Annotated[Optional[str], typer.Option(
        help="One tensor in PyTorch layout (out,in,*kernel), e.g. 64,3,7,7.")] = None,
    activation: Activation = "relu",
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    seed: Annotated[int, typer.Option(help="Seeds weights and biases (separate streams).")] = 0,
    save: Annotated[Optional[str], typer.Option(help="Write weights and biases to this .npz file.")] = None,
    batch: Annotated[int, typer.Option(help="lsuv: the inputs it calibrates on, drawn as propagate draws them.")] = 512,
    input_std: Annotated[float, typer.Option(help="lsuv: inputs are drawn from N(0, input-std²).")] = 1.0,
    lsuv_tol: Annotated[float, typer.Option(help="lsuv: stop when |Var(h) − 1| is within this.")] = 0.05,
    lsuv_max_iter: Annotated[int, typer.Option(help="lsuv: rescalings per layer at most.")] = 10,
    residual_init: Annotated[Optional[str], typer.Option(
        help="Apply a residual-init preset's factors to the stack (see `initcli schemes`), as propagate "
             "--residual --residual-init does, so the weights can be saved.")] = None,
    block: Annotated[int, typer.Option(help="--residual-init: layers per residual branch.")] = 1,
) -> None:
    """Draw the weights and compare them with the scheme's formula."""
    from ..render import histogram_line, print_table
    from ..sampling import WEIGHT_COLUMNS, save_npz
    from ..sampling import sample as sample_weights

    fmt = output_format(out.fmt)
    check_applies(schemes=[scheme])
    if not _is_lsuv(scheme):
        from ..errors import InitcliError

        for name in sorted(given() & {"batch", "input_std"}):
            raise InitcliError(name, "only applies to the lsuv scheme (the inputs it calibrates on)")
    if "block" in given() and residual_init is None:
        from ..errors import InitcliError

        raise InitcliError("block", "only applies with --residual-init")
    check_outputs(out, (save, "save", (".npz",)))
    result = sample_weights(
        scheme,
        sizes=None if sizes is None else parse_int_list(sizes, "sizes", min_len=2),
        shape=None if shape is None else parse_int_list(shape, "shape", min_len=1),
        bias_std=init.bias_std, seed=seed, dtype=dtype, activation=activation, **init.scheme_options(),
        **({"batch": batch, "input_std": input_std, "lsuv_tol": lsuv_tol, "lsuv_max_iter": lsuv_max_iter}
           if _is_lsuv(scheme) else {}),
        residual_init=residual_init, block=block,
    )
    warn_ignored([scheme], init)
    if save is not None:
        save_npz(result, save, force=out.force)
        note(f"saved {len(result.weights)} weight tensors to {save}")
    rows = result.rows()
    if fmt == "table":
        p = result.params
        hidden = print_table(rows, WEIGHT_COLUMNS, title=f"{p['scheme']} · gain {p['gain']:g} · seed {p['seed']}",
                             extra_columns={"histogram": [histogram_line(w) for w in result.weights]},
                             priority=SAMPLE_PRIORITY, console=stdout_console())
        say_hidden(hidden)
    else:
        write_machine(fmt, "sample", result.params, rows, WEIGHT_COLUMNS)
    if out.plot or out.save_plot:
        _sample_charts(result, out)


def _is_lsuv(scheme: str) -> bool:
    from ..schemes import get_scheme

    return get_scheme(scheme).kind == "lsuv"


def _sample_charts(result, out: OutputOptions) -> None:
    import numpy as np

    from ..charts import histogram_chart, save_figure
    from ..render import format_number
    from ..schemes import init_from_params

    p = result.params
    init = init_from_params(p)
    densities = [init.density(w.shape) for w in result.weights]
    title = f"{p['scheme']} · gain {p['gain']:g} · seed {p['seed']}"
    if out.plot:
        console = chart_console()
        for layer, w, density in zip(result.layers, result.weights, densities):
            show(histogram_chart(w, density=density, width=chart_width(console),
                                 title=f"layer {layer.layer} · {layer.shape} · std {layer.std:.4g} "
                                       f"(formula {format_number(layer.expected_std) or '-'})"))
    if out.save_plot:
        panels = [{"histogram": np.asarray(w, dtype=np.float64).ravel(), "density": density, "xlabel": "weight",
                   "ylabel": "density", "title": f"layer {layer.layer} ({layer.shape})"}
                  for layer, w, density in zip(result.layers, result.weights, densities)]
        save_figure(out.save_plot, panels, title=title, force=out.force, dpi=out.dpi)
