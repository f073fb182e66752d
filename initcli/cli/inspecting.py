"""`initcli inspect`: which init explains each tensor of a model's weight file."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .options import (
    Activation,
    OutputOptions,
    chart_console,
    chart_width,
    check_outputs,
    command,
    given,
    note,
    output_format,
    progress,
    say_hidden,
    show,
    stdout_console,
    write_machine,
)

INSPECT_PRIORITY = ("name", "match", "verdict", "std", "expected_std", "std_ratio", "shape", "role", "p_value",
                    "kurtosis", "layout", "fan_in", "fan_out", "max_abs_z", "zero_frac", "mean", "note")


def _inspect_style(column: str, value) -> str | None:
    if column == "verdict":
        return {"ok": "green", "unusual": "yellow", "suspicious": "bold red", "trained": "cyan"}.get(value)
    return None


@command(app, "inspect")
def inspect_command(
    path: Annotated[str, typer.Argument(help="A .safetensors file, a folder of shards (*.safetensors.index.json, "
                                             "pytorch_model.bin.index.json or *.safetensors), .npz/.npy, a PyTorch "
                                             ".pt/.pth/.bin/.ckpt state_dict or checkpoint (optimizer state is "
                                             "skipped), or an .onnx model (initializers, Constant nodes, subgraphs).",
                                        show_default=False)],
    out: OutputOptions,
    layout: Annotated[str, typer.Option(help="How matrices are stored: torch (out, in, *kernel), keras "
                                             "(*kernel, in, out), or auto (each read both ways).")] = "auto",
    activation: Activation = "relu",
    negative_slope: Annotated[float, typer.Option(help="Slope of leaky-relu for the chain summary.")] = 0.01,
    n_layer: Annotated[Optional[int], typer.Option(
        help="Blocks of a GPT-2-like model (its residual projections are 0.02/√(2·n_layer)); default: from the "
             "names.")] = None,
    propagate: Annotated[bool, typer.Option(
        help="Run the propagate engine (--batch random inputs, biases left out) through the longest chain of "
             "connecting matrices found, and report each layer.")] = False,
    batch: Annotated[int, typer.Option(help="--propagate: the number of random inputs.")] = 512,
    seed: Annotated[int, typer.Option(help="--propagate: seeds the inputs and the cotangent.")] = 0,
    tensor: Annotated[Optional[str], typer.Option(
        help="With --plot/--save-plot: the tensors to draw, a glob on their names (e.g. '*.mlp.*').")] = None,
    against: Annotated[Optional[str], typer.Option(
        help="The weight file this one started from (its init): adds delta_norm_ratio (‖W − W₀‖/‖W₀‖) and "
             "std_change (std/std₀ − 1) per tensor.")] = None,
) -> None:
    """Say which init explains each tensor of a weight file, without running its code.

    One row per tensor: its role and layout, its statistics, the scheme (and its options)
    whose std formula and distribution family explain it (every reading that does, joined by
    |), a KS p-value against it, and a verdict (ok, unusual, suspicious; trained in a file
    whose weights look trained) with the reason. Every reading is a valid --scheme.
    A summary follows: schemes counted, suspicious tensors, and the mean-field forward factor
    of each chain of connecting matrices under --activation (stderr for CSV, a key in JSON).
    """
    from ..errors import InitcliError
    from ..inspection import inspect
    from ..inspection.readers import open_source
    from ..propagation import LAYER_COLUMNS
    from ..render import print_table

    fmt = output_format(out.fmt)
    if tensor is not None and not (out.plot or out.save_plot):
        raise InitcliError("tensor", "only applies with --plot or --save-plot")
    if "negative_slope" in given() and activation.strip().lower().replace("_", "-") not in ("leaky-relu", "leakyrelu"):
        raise InitcliError("negative_slope", "only applies with --activation leaky-relu")
    for name in sorted(given() & {"batch", "seed"}):
        if not propagate:
            raise InitcliError(name, "only applies with --propagate")
    if propagate and (isinstance(batch, bool) or batch < 1 or batch > 1 << 20):
        raise InitcliError("batch", f"must be a positive integer of at most {1 << 20}, got {batch}")
    check_outputs(out)
    if against is not None:  # the file it is compared with is checked before any work
        try:
            with open_source(against):
                pass
        except InitcliError as exc:
            raise InitcliError("against", exc.message) from None
    # the chains' activation: as given, else config.json's, else relu (the summary says which)
    chain_activation = activation if "activation" in given() else None
    with open_source(path) as source:
        if tensor is not None:  # a glob that names nothing is refused before the work
            _check_glob(tensor, [e.name for e in source.entries], source.path)
        with progress(len(source.entries), "inspecting") as advance:
            result = inspect(source, layout=layout, activation=chain_activation, negative_slope=negative_slope,
                             n_layer=n_layer, progress=advance)
    if against is not None:
        from ..inspection import with_changes

        result = with_changes(result, path, against)
    rows = result.rows()
    drawn = _chosen(result, tensor) if out.plot or out.save_plot else None
    engine = _propagate(path, result, chain_activation, negative_slope, batch, seed) if propagate else None
    if fmt == "table":
        p = result.params
        hidden = print_table(rows, list(result.columns), title=f"{p['path']} · {p['format']} · {p['tensors']} tensors "
                                                               f"· layout {p['layout']}",
                             cell_style=_inspect_style, priority=INSPECT_PRIORITY, console=stdout_console())
        say_hidden(hidden)
        for line in result.summary.lines:
            stdout_console().print(line, soft_wrap=True, highlight=False, markup=False)
        if engine is not None:
            chain, layer_rows = engine
            say_hidden(print_table(layer_rows, list(LAYER_COLUMNS), title=_engine_title(chain, batch, seed),
                                   console=stdout_console()))
    else:
        extra = {"summary": result.summary.document()}
        if engine is not None:
            chain, layer_rows = engine
            extra["propagate"] = {"tensors": [layer.name for layer in chain.layers], "batch": batch, "seed": seed,
                                  "activation": chain.activation, "rows": layer_rows}
        write_machine(fmt, "inspect", result.params, rows, result.columns, **extra)
        if fmt == "csv":
            for line in result.summary.lines:
                note(line)
            if engine is not None:
                chain, layer_rows = engine
                note(_engine_title(chain, batch, seed) + ": preact_var by layer "
                     + ", ".join(f"{r['preact_var']:.3g}" for r in layer_rows)
                     + "; grad_var " + ", ".join(f"{r['grad_var']:.3g}" for r in layer_rows))
    if drawn is not None:
        _charts(path, result, drawn, out)


def _check_glob(pattern: str, names: list[str], path: str) -> None:
    import fnmatch

    from ..errors import InitcliError

    if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
        raise InitcliError("tensor", f"'{pattern}' names no tensor of '{path}' (a glob on the tensors' names, "
                                     f"e.g. '*.weight')")


def _check_propagate_memory(result, batch: int) -> None:
    """The engine's peak for the chain --propagate will run, before anything is allocated."""
    import numpy as np

    from ..checks import check_memory
    from ..propagation import estimate_bytes

    if not result.summary.chains:
        return
    chain = max(result.summary.chains, key=lambda c: len(c.layers))  # the one propagate_chain runs
    sizes = [chain.layers[0].fan_in] + [layer.fan_out for layer in chain.layers]
    check_memory(estimate_bytes(sizes, batch, np.dtype(np.float32)), options=("--batch",))


def _propagate(path, result, activation, negative_slope, batch, seed):
    from dataclasses import asdict

    from ..inspection import propagate_chain

    _check_propagate_memory(result, batch)
    found = propagate_chain(path, result, activation=activation, negative_slope=negative_slope, batch=batch, seed=seed)
    if found is None:
        note("--propagate: no chain of connecting 2-D matrices in this file")
        return None
    chain, layers = found
    return chain, [asdict(layer) for layer in layers]


def _engine_title(chain, batch: int, seed: int) -> str:
    return (f"propagate through {chain.layers[0].name} … {chain.layers[-1].name} ({len(chain.layers)} layers, "
            f"no biases) · {chain.activation} · batch {batch} · seed {seed}")


def _chosen(result, pattern: str | None) -> list:
    """The tensors to draw, checked before anything is printed."""
    import fnmatch

    chosen = [t for t in result.tensors if t.std and (pattern is None or fnmatch.fnmatchcase(t.name, pattern))]
    if pattern is None:
        chosen = chosen[:8]
        if len(result.tensors) > 8:
            note(f"drawing the first {len(chosen)} tensors; choose others with --tensor GLOB")
    if not chosen:
        from ..errors import InitcliError

        raise InitcliError("tensor", f"'{pattern}' names no tensor with values to draw")
    return chosen


def _charts(path: str, result, chosen: list, out: OutputOptions) -> None:

    from ..charts import histogram_chart, save_figure
    from ..inspection import density_for, matching
    from ..inspection.readers import open_source

    panels = []
    with open_source(path) as source:
        for t in chosen:
            # the histogram of the subsample the statistics used: a huge tensor is never copied whole
            values = matching.subsample(source.read(t.name).reshape(-1), t.name)
            density = density_for(t)
            title = f"{t.name} · {t.shape} · std {t.std:.4g} · {t.match.split('|')[0] or 'no match'}"
            if out.plot:
                show(histogram_chart(values, density=density, width=chart_width(chart_console()), title=title))
            if out.save_plot:  # the density is evaluated over the histogram's finite range
                panels.append({"histogram": values, "density": density, "xlabel": "weight", "ylabel": "density",
                               "title": f"{t.name} ({t.shape})"})
    if out.save_plot:
        save_figure(out.save_plot, panels, title=f"{result.params['path']}", force=out.force, dpi=out.dpi)
