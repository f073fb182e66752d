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
from .stacks import shape_text


@command(app, "train")
def train_command(
    init: InitOptions,
    arch: ArchOptions,
    out: OutputOptions,
    task: Annotated[Optional[str], typer.Option(
        help="xor, moons, circles, spiral (the default) or regression for the MLP; waves with --arch conv; first "
             "with --arch transformer (generated, no download).")] = None,
    schemes: Annotated[str, typer.Option(help="Comma list of schemes to train from.")] = (
        "zeros,constant,normal,xavier-normal,he-normal"),
    activation: Activation = "relu",
    depth: Annotated[Optional[int], typer.Option(
        help="Hidden layers (default 4), conv layers (default 4) or transformer blocks (default 4).")] = None,
    width: Annotated[Optional[int], typer.Option(
        help="Units per hidden layer (default 64), or a transformer's width (default 32).")] = None,
    sizes: Annotated[Optional[str], typer.Option(
        help="Hidden widths, e.g. 64,64,32; the task fixes the input and output sizes.")] = None,
    optimizer: Annotated[Optional[str], typer.Option(
        help="sgd or adam (default: sgd, adam with --arch transformer).")] = None,
    lr: Annotated[Optional[float], typer.Option(
        help="Learning rate (default 0.1; with --arch conv or transformer, 0.001 for adam).")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        help="Passes over the data (default 300; 100 with --arch conv or transformer).")] = None,
    batch: Annotated[int, typer.Option(help="Mini-batch size; 0, or any size ≥ --samples, is full batch.")] = 128,
    target: Annotated[float, typer.Option(help="Accuracy (R² for regression) that counts as learned, in (0, 1].")] = (
        0.9),
    samples: Annotated[int, typer.Option(
        help="Size of the generated data set: at least 2, and at least one per class.")] = 512,
    classes: Annotated[Optional[int], typer.Option(
        help="Spiral arms (default 3); waves: frequency bands (default 2); first: the vocabulary (default "
             "4).")] = None,
    noise: Annotated[Optional[float], typer.Option(
        help="Noise std of the task (each has a default), at most 2**52 ≈ 4.5e15.")] = None,
    curves: Annotated[bool, typer.Option(help="Print per-epoch rows scheme, epoch, loss and the metric instead.")] = (
        False),
    dtype: Annotated[str, typer.Option(help="float32 (what networks train in) or float64.")] = "float32",
    seed: Annotated[int, typer.Option(help="Seeds weights, biases, data and batch order (separate streams).")] = 0,
    jobs: Jobs = None,
) -> None:
    """Train the same network from each scheme on the same data and seed: does it learn, and how fast?

    The network is an MLP, or with --arch conv a conv stack on the waves task (a plane wave's
    frequency band), with --arch transformer a transformer on the first task (name the
    sequence's first token, which attention must carry to the pooled read-out), each read
    out by a linear layer from the mean over positions or tokens.

    Columns: final_loss, the final and best score (final_accuracy/best_accuracy for
    classification, final_r2/best_r2 for regression), epochs_to_target (first epoch at
    --target; empty in CSV, never in the table), diverged (the loss became inf/nan) and
    final_effective_rank of the last hidden layer (1: its units are still identical). Every
    scheme trains on one BLAS thread, so the numbers do not depend on --jobs.
    """
    from ..render import print_table
    from ..tasks import DEFAULT_TASK
    from ..training import train

    fmt = output_format(out.fmt)
    names = parse_name_list(schemes, "schemes")
    check_applies(schemes=names, arch=arch)
    check_outputs(out)
    if init.bias_std != 0:
        from ..errors import InitcliError

        raise InitcliError("bias_std", "does not apply to train: its layers start with zero bias")
    if arch.kind != "mlp":
        result = _train_blocks(names, activation, init, arch, task=task, samples=samples, classes=classes,
                               noise=noise, depth=depth, width=width, sizes=sizes, optimizer=optimizer, lr=lr,
                               epochs=epochs, batch=batch, target=target, seed=seed, dtype=dtype, jobs=jobs)
    else:
        epochs = 300 if epochs is None else epochs
        optimizer = "sgd" if optimizer is None else optimizer
        lr = 0.1 if lr is None else lr  # the MLP's default for either optimizer, as before --arch
        with progress(len(names) * max(epochs, 0), "training") as advance:
            result = train(
                names, activation, task=DEFAULT_TASK["mlp"] if task is None else task, samples=samples, classes=classes,
                noise=noise, sizes=None if sizes is None else parse_int_list(sizes, "sizes"), depth=depth,
                width=width, optimizer=optimizer, lr=lr, epochs=epochs, batch=None if batch == 0 else batch,
                target=target, seed=seed, dtype=dtype, jobs=jobs, progress=advance, **arch.domain(),
                **init.scheme_options(),
            )
    warn_ignored(names, init)
    rows, columns = (result.curve_rows(), result.curve_columns) if curves else (result.rows(), result.columns)
    if fmt == "table":
        p = result.params
        network = (f"hidden {widths_text(p['hidden_sizes'])}" if "hidden_sizes" in p else shape_text(p))
        title = (f"{p['task']} · {p['activation']} · {network} · "
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


def _train_blocks(names, activation, init: InitOptions, arch: ArchOptions, *, task, samples, classes, noise, depth,
                  width, sizes, optimizer, lr, epochs, batch, target, seed, dtype, jobs):
    """`train --arch conv|transformer` (`initcli.blocktraining`)."""
    from ..blocktraining import train as train_blocks

    kind = arch.kind
    engine_options = arch.engine_domain()
    engine_options.pop("arch")
    # the engine takes or refuses --width and --sizes itself, naming its own geometry options
    engine_options |= {"depth": depth, "width": width,
                       "sizes": None if sizes is None else parse_int_list(sizes, "sizes")}
    epochs = 100 if epochs is None else epochs
    with progress(len(names) * max(epochs, 0), "training") as advance:
        return train_blocks(kind, names, activation, task=task, samples=samples, classes=classes, noise=noise,
                            optimizer=optimizer, lr=lr, epochs=epochs, batch=None if batch == 0 else batch,
                            target=target, seed=seed, dtype=dtype, jobs=jobs, progress=advance,
                            engine_options=engine_options, **init.scheme_options())


def _train_style(column: str, value) -> str | None:
    if column == "diverged" and value is True:
        return "bold red"
    if column == "epochs_to_target" and value is None:
        return "red"
    return None
