"""`initcli train`: does it learn, and how fast?"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .options import (
    Activation,
    ArchOptions,
    InitOptions,
    Jobs,
    OutputOptions,
    chart_console,
    chart_width,
    check_applies,
    check_outputs,
    command,
    output_format,
    parse_int_list,
    parse_name_list,
    progress,
    say_hidden,
    show,
    stdout_console,
    warn_ignored,
    widths_text,
    write_machine,
)


@command(app, "train")
def train_command(
    init: InitOptions,
    arch: ArchOptions,
    out: OutputOptions,
    task: Annotated[str, typer.Option(help="xor, moons, circles, spiral or regression (generated, no download).")] = (
        "spiral"),
    schemes: Annotated[str, typer.Option(help="Comma list of schemes to train from.")] = (
        "zeros,constant,normal,xavier-normal,he-normal"),
    activation: Activation = "relu",
    depth: Annotated[Optional[int], typer.Option(help="Hidden layers (default 4).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Units per hidden layer (default 64).")] = None,
    sizes: Annotated[Optional[str], typer.Option(
        help="Hidden widths, e.g. 64,64,32; the task fixes the input and output sizes.")] = None,
    optimizer: Annotated[str, typer.Option(help="sgd or adam.")] = "sgd",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.1,
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 300,
    batch: Annotated[int, typer.Option(help="Mini-batch size; 0, or any size ≥ --samples, is full batch.")] = 128,
    target: Annotated[float, typer.Option(help="Accuracy (R² for regression) that counts as learned, in (0, 1].")] = (
        0.9),
    samples: Annotated[int, typer.Option(
        help="Size of the generated data set: at least 2, and at least one per class.")] = 512,
    classes: Annotated[Optional[int], typer.Option(help="Spiral arms (default 3).")] = None,
    noise: Annotated[Optional[float], typer.Option(
        help="Noise std of the task (each has a default), at most 2**52 ≈ 4.5e15.")] = None,
    curves: Annotated[bool, typer.Option(help="Print per-epoch rows scheme, epoch, loss and the metric instead.")] = (
        False),
    dtype: Annotated[str, typer.Option(help="float32 (what networks train in) or float64.")] = "float32",
    seed: Annotated[int, typer.Option(help="Seeds weights, biases, data and batch order (separate streams).")] = 0,
    jobs: Jobs = None,
) -> None:
    """Train the same MLP from each scheme on the same data and seed: does it learn, and how fast?

    Columns: final_loss, the final and best score (final_accuracy/best_accuracy for
    classification, final_r2/best_r2 for regression), epochs_to_target (first epoch at
    --target; empty in CSV, never in the table), diverged (the loss became inf/nan) and
    final_effective_rank of the last hidden layer (1: its units are still identical). Every
    scheme trains on one BLAS thread, so the numbers do not depend on --jobs.
    """
    from ..render import print_table
    from ..training import train

    fmt = output_format(out.fmt)
    names = parse_name_list(schemes, "schemes")
    check_applies(schemes=names, arch=arch)
    check_outputs(out)
    if init.bias_std != 0:
        from ..errors import InitcliError

        raise InitcliError("bias_std", "does not apply to train: its layers start with zero bias")
    with progress(len(names) * max(epochs, 0), "training") as advance:
        result = train(
            names, activation, task=task, samples=samples, classes=classes, noise=noise,
            sizes=None if sizes is None else parse_int_list(sizes, "sizes"), depth=depth, width=width,
            optimizer=optimizer, lr=lr, epochs=epochs, batch=None if batch == 0 else batch, target=target,
            seed=seed, dtype=dtype, jobs=jobs, progress=advance, **arch.domain(), **init.scheme_options(),
        )
    warn_ignored(names, init)
    rows, columns = (result.curve_rows(), result.curve_columns) if curves else (result.rows(), result.columns)
    if fmt == "table":
        p = result.params
        title = (f"{p['task']} · {p['activation']} · hidden {widths_text(p['hidden_sizes'])} · "
                 f"{p['optimizer']} lr {p['lr']:g} · {p['epochs']} epochs · seed {p['seed']}")
        say_hidden(print_table(rows, columns, title=title, console=stdout_console(), cell_style=_train_style,
                               none_text={"epochs_to_target": "never"}))
    else:
        write_machine(fmt, "train", result.params, rows, columns)
    if out.plot or out.save_plot:
        from ..charts import curve_series, log_chart, save_figure

        p = result.params
        title = f"{p['task']} · {p['activation']} · {p['optimizer']} lr {p['lr']:g} · seed {p['seed']}"
        curve = result.curve_rows()
        metric = result.metric
        if out.plot:
            show(log_chart(curve_series(curve, "loss"), width=chart_width(chart_console()),
                           title=f"training loss · {title}", x_label="epoch"))
        if out.save_plot:
            save_figure(out.save_plot, [
                {"series": curve_series(curve, "loss"), "xlabel": "epoch", "ylabel": "loss", "log": True,
                 "title": "loss"},
                {"series": curve_series(curve, metric), "xlabel": "epoch", "ylabel": metric, "log": False,
                 "title": metric}], title=title, force=out.force, dpi=out.dpi)


def _train_style(column: str, value) -> str | None:
    if column == "diverged" and value is True:
        return "bold red"
    if column == "epochs_to_target" and value is None:
        return "red"
    return None
