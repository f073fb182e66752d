"""`sweep`: run `propagate` over a grid of points and give each point one row.

The parts: `grid` (the axes, the points made lazily, their seeds, a row's columns),
`measures` (one point's row: propagate's summary, the measured depth scales, theory's
columns, the training's), `results` (the CSV/Parquet results file and resumption) and
`heatmaps`; this module runs the points (`sweep`, on an executor of `initcli.executors`) and
gives every name of the parts, as the single module it was gave them.

A grid is the product of axes (σ_w or scheme, σ_b, depth, width, batch, activation) times
seeds. σ_w and σ_b are mean-field's (Poole et al. 2016): weights N(0, σ_w²/fan_in), drawn
with the LeCun normal preset times a gain σ_w, biases N(0, σ_b²).

Reproducibility: every point's random seed is derived from its coordinates alone (a SHA-256
of them, through numpy's SeedSequence), and every point runs on one BLAS thread, so a row
is the same bytes whichever executor, worker count, batch or order produced it.

With training (`options["train"]`, see `train_options`), each point also trains its MLP on a
generated task, seeded with the point's run_seed and on one BLAS thread (see `measures`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice

import numpy as np

from ..errors import InitcliError
from ..executors import (  # noqa: F401 - the executors' names, as this module gave them before
    CONNECT_SECONDS,
    DaskExecutor,
    LocalExecutor,
    check_scheduler,
    connect,
    make_executor,
    probe,
)
from ..propagation import check_memory
from .grid import (  # noqa: F401 - the grid's names, as this module gave them before
    ARCH_AXES,
    COORDINATES,
    DEFAULTS,
    FLOAT_AXES,
    INT_AXES,
    KEY,
    MAX_AXIS,
    MAX_POINTS,
    MEASURED,
    NAME_AXES,
    SUMMARY,
    THEORY,
    Grid,
    Point,
    columns,
    coordinates,
    grid,
    key_columns,
    parse_axis,
    point_seed,
)
from .heatmaps import (  # noqa: F401 - as this module gave them before
    HEATMAP_METRICS,
    LOG_METRICS,
    Heatmap,
    check_heatmap_axes,
    critical_line,
    critical_sigma_w,
    heatmap,
    heatmap_metric,
    trainable_depth,
)
from .measures import (  # noqa: F401 - as this module gave them before
    approach_scale,
    effective_sigma_w,
    gradient_scale,
    measure_point,
    propagate_call,
    theory_columns,
    train_bytes,
    train_call,
)
from .results import (  # noqa: F401 - as this module gave them before
    RESULT_SUFFIXES,
    KeySet,
    ParquetResults,
    ResultsFile,
    check_results_path,
    read_results,
    remove_stale_temporaries,
    results_file,
    settings_text,
)

_theory = theory_columns  # the name tests/benchmarks/bench_sweep.py imports

TRAIN_DEFAULTS = {"epochs": 100, "lr": 0.1, "optimizer": "sgd", "samples": 512, "batch": 128}
MAX_KEPT_ROWS = 200_000  # a row held is about 4 KiB of Python objects: 800 MB at most


def train_options(task: str, epochs: int = TRAIN_DEFAULTS["epochs"], *, lr: float = TRAIN_DEFAULTS["lr"],
                  optimizer: str = TRAIN_DEFAULTS["optimizer"], samples: int = TRAIN_DEFAULTS["samples"],
                  batch: int | None = TRAIN_DEFAULTS["batch"], classes: int | None = None,
                  noise: float | None = None) -> dict:
    """`options["train"]` for `sweep`, every value checked as `initcli train` checks it.
    `batch` is the training mini-batch (None: full batch), not the grid's batch axis."""
    from ..propagation import positive_int
    from ..tasks import check_samples, check_task, metric_for
    from ..training import MAX_EPOCHS, OPTIMIZERS, number_in

    key, n_classes, noise = check_task(task, classes, noise)
    samples = check_samples(samples, n_classes)
    name = str(optimizer).strip().lower()
    if name not in OPTIMIZERS:
        raise InitcliError("optimizer", f"unknown optimizer '{optimizer}'; choose from {', '.join(OPTIMIZERS)}")
    batch = samples if batch is None else min(positive_int("train_batch", batch), samples)
    return {"task": key, "metric": metric_for(key), "classes": classes, "noise": noise, "samples": samples,
            "epochs": positive_int("epochs", epochs, MAX_EPOCHS), "optimizer": name,
            "lr": number_in("lr", lr, "a finite number > 0", lambda v: v > 0), "batch": batch}


def check_points(points: Sequence[Point], options: dict, at_once: int = 1) -> None:
    """Every distinct setting checked (names, sizes, memory) before any work starts; the
    memory guard counts the largest point `at_once` times, for the runs that go side by side
    (a point's propagate run and its training are one after the other)."""
    from ..propagation import estimate_bytes, prepare

    seen = set()
    largest = 0
    dtype = None
    for point in points.to_check() if isinstance(points, Grid) else points:
        if "train" in options and (point.residual or point.param not in (None, "sp")
                                   or options.get("propagate", {}).keys() & {"residual", "block", "norm"}):
            raise InitcliError("train", "does not apply with --residual-init, --param, --residual, --block or "
                                        "--norm yet: the trained network is a plain MLP")
        call = propagate_call(point, options)
        call.pop("seed")
        signature = tuple(sorted((k, repr(v)) for k, v in call.items()))
        if signature not in seen:
            seen.add(signature)
            run = prepare(**call, seed=0)  # one run's own memory guard is in here
            dtype = run.dtype
            needed = estimate_bytes(run.sizes, run.batch, run.dtype, checkpoint=run.checkpoint, arch=run.arch)
            if "train" in options:
                from ..schemes import make_init

                train = train_call(point, options)
                make_init(train["scheme"], activation=point.activation, **train["init_options"])
                needed = max(needed, train_bytes(point, options))
            largest = max(largest, needed)
    at_once = min(at_once, len(points))
    if at_once > 1 or "train" in options:
        options_named = ("--batch", "--width", "--depth") + (("--samples", "--epochs") if "train" in options else ())
        check_memory(at_once * largest, dtype=dtype,
                     options=options_named + (("--jobs",) if at_once > 1 else ()))


def run_point(point: Point, index: int, options: dict) -> dict:
    """A whole row: coordinates, run_seed, and the measurements or the error that stopped them."""
    row = {name: getattr(point, name) for name in point.coordinates}
    row["run_seed"] = point.run_seed
    try:
        with np.errstate(all="ignore"):
            row |= measure_point(point, options)
        row["error"] = None
    except Exception as exc:  # one point's failure is its row's; the sweep goes on
        row["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, InitcliError) else str(exc)
    row["_index"] = index
    return row


def run_batch(points: Sequence[tuple[int, Point]], options: dict,
              progress: Callable[[int], None] | None = None) -> list[dict]:
    """One task: its points in order, each on one BLAS thread (see the module docstring)."""
    from ..threads import blas_threads_limited

    rows = []
    with blas_threads_limited(1):
        for index, point in points:
            rows.append(run_point(point, index, options))
            if progress is not None:
                progress(1)
    return rows


# -- executors ----------------------------------------------------------------------------------


def batches(indexed: Iterable[tuple[int, Point]], workers: int, size: int | None = None,
            count: int | None = None) -> Iterator[list]:
    """Points cut into tasks, as they are read: about 4 per worker of the `count` points (all of
    `indexed` when not given), so a slow task does not hold the end back, and at most 64 points
    each, so a finished task reaches the file soon."""
    if size is None:
        count = len(indexed) if count is None else count
        size = max(1, min(64, math.ceil(count / (4 * workers))))
    indexed = iter(indexed)
    while task := list(islice(indexed, size)):
        yield task


# -- the sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    params: dict
    rows: tuple[dict, ...]  # in grid order; with a results file, only this run's
    columns: tuple[str, ...]
    skipped: int = 0  # points already in the results file
    errors: int = 0
    ran: int = 0  # points run: len(rows), unless the rows were not kept (see `sweep`)


def sweep(points: Sequence[Point], *, executor=None, options: dict | None = None, out: str | None = None,
          progress: Callable[[int], None] | None = None, batch_size: int | None = None,
          params: dict | None = None, keep_rows: bool = True) -> SweepResult:
    """Run every point (those not already in `out`) and return the rows in grid order.

    `options`: {"propagate": extra propagate keywords (dtype, input_std, …), "train": `train_options(…)`
    to train every point too}. Rows reach `out` as tasks finish. The memory guard counts the
    runs that go at once on this machine (`executor.here`). Points are read from `points` as
    tasks are sent, a few per worker at a time; with `keep_rows` False (and `out`), rows go to
    the file only, so that no part of a sweep grows with the grid."""
    options = dict(options or {})
    executor = executor or LocalExecutor(1)
    header = columns(options["train"]["metric"] if "train" in options else None,
                     points[0].arch_axes if points else ())
    if keep_rows and len(points) > MAX_KEPT_ROWS:
        raise InitcliError("out", f"the grid has {len(points):,} points; rows are kept in memory for the output up to "
                                  f"{MAX_KEPT_ROWS:,}: give --out FILE.csv to stream them to a file")
    if out is not None and os.fspath(out).lower().endswith(".parquet") and len(points) > MAX_KEPT_ROWS:
        raise InitcliError("out", f"the grid has {len(points):,} points; a .parquet file is rewritten whole after "
                                  f"every task, up to {MAX_KEPT_ROWS:,} points: give a .csv file, which grows by "
                                  "appending")
    check_points(points, options, executor.here)
    settings = settings_text(options)
    results = results_file(out, header) if out is not None else None
    todo = ((i, p) for i, p in enumerate(points) if results is None or (*p.key, settings) not in results.done)
    collected: list[dict] = []
    counts = {"ran": 0, "errors": 0}

    def on_rows(rows: list[dict]) -> None:
        rows = sorted(rows, key=lambda row: row["_index"])
        for row in rows:
            row["settings"] = settings
        if results is not None:
            results.append(rows)
        counts["ran"] += len(rows)
        counts["errors"] += sum(1 for row in rows if row["error"])
        if keep_rows:
            collected.extend(rows)

    first = next(todo, None)
    if first is not None:
        # the points left, as the old eager list had them: the grid less those of this run in the file
        count = len(points) - (0 if results is None else results.done.settings[settings])
        tasks = batches(chain([first], todo), executor.workers, batch_size, count=max(1, count))
        executor.run(run_batch, ({"points": task, "options": options} for task in tasks), on_rows, progress,
                     connect_seconds=CONNECT_SECONDS)
    collected.sort(key=lambda row: row["_index"])
    rows = tuple({c: row.get(c) for c in header} for row in collected)
    return SweepResult(params or {}, rows, header, len(points) - counts["ran"], counts["errors"], counts["ran"])
