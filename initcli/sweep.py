"""`sweep`: run `propagate` over a grid of points and give each point one row.

A grid is the product of axes (σ_w or scheme, σ_b, depth, width, batch, activation) times
seeds. σ_w and σ_b are mean-field's (Poole et al. 2016): weights N(0, σ_w²/fan_in), drawn
with the LeCun normal preset times a gain σ_w, biases N(0, σ_b²). The architecture axes
(ARCH_AXES: residual_init, 'none' or a preset that makes the point a residual stack; param,
sp/ntk/mup) are coordinates only in grids that give them.

Reproducibility: every point's random seed is derived from its coordinates alone (a SHA-256
of them, through numpy's SeedSequence), and every point runs on one BLAS thread, so a row
is the same bytes whichever executor, worker count, batch or order produced it.

Depth scales measured per point (Schoenholz et al. 2017's definitions):
- xi_grad: 1/|slope| of a least-squares line through ln grad_var over the deeper half of the
  layers (where q has settled near q*, as `compare` measures its rates); inf where the
  slope is exactly 0.
- xi_q, xi_c: 1/|slope| of ln|x_l − x*| for x = preact_var, input_cosine, fitted over the
  layers from the first within half the initial distance of x* (the linear regime of the
  map) to the last above the noise floor. x* is exact where theory knows it (q* = 0; c* = 1
  in the ordered phase), else the mean over the deeper half of the stack, and then the floor
  is 3 standard deviations of the deepest quarter. nan where fewer than 2 layers are in the
  window; inf where the distance does not shrink.

With training (`options["train"]`, see `train_options`), each point also trains its MLP —
`depth` hidden layers of `width` units with the point's weights (σ_w as the LeCun-normal
gain, or the scheme), read-out included — on a generated task with `training.train_one`,
seeded with the point's run_seed and on one BLAS thread, and adds `final_loss` and the final
score (`final_accuracy`, or `final_r2` for regression). Its biases start at zero, as
`initcli train`'s do: σ_b acts on the propagate columns only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import chain, islice, product

import numpy as np

from .errors import InitcliError
from .executors import (  # noqa: F401 - the executors' names, as this module gave them before
    CONNECT_SECONDS,
    DaskExecutor,
    LocalExecutor,
    check_scheduler,
    connect,
    make_executor,
    probe,
)
from .propagation import check_memory

COORDINATES = ("sigma_w", "sigma_b", "depth", "width", "batch", "scheme", "activation", "seed")
# Architecture axes: coordinates of a row, its key and its seed only when the grid has them, so
# that a grid without them keeps the rows (and run_seeds) it had before they existed.
ARCH_AXES = ("residual_init", "param")
FLOAT_AXES = ("sigma_w", "sigma_b")
INT_AXES = ("depth", "width", "batch")
NAME_AXES = ("scheme", "activation") + ARCH_AXES
SUMMARY = ("first_act_var", "last_act_var", "first_grad_var", "last_grad_var", "grad_ratio", "max_saturated_frac",
           "max_dead_frac", "min_effective_rank", "last_input_cosine", "verdict", "reason")
MEASURED = ("xi_q", "xi_c", "xi_grad")
THEORY = ("theory_q_star", "theory_chi", "theory_xi_c", "theory_xi_q", "theory_xi_grad", "theory_phase")
TRAIN_DEFAULTS = {"epochs": 100, "lr": 0.1, "optimizer": "sgd", "samples": 512, "batch": 128}
MAX_POINTS = 10_000_000  # streamed to a results file (--out); held for stdout up to MAX_KEPT_ROWS
MAX_KEPT_ROWS = 200_000  # a row held is about 4 KiB of Python objects: 800 MB at most
MAX_AXIS = 100_000
DEFAULTS = {"sigma_b": [0.0], "depth": [10], "width": [256], "batch": [512], "activation": ["relu"]}


def coordinates(arch: Iterable[str] = ()) -> tuple[str, ...]:
    """A row's coordinate columns: the architecture axes in `arch` go before the seed."""
    arch = set(arch)
    return COORDINATES[:-1] + tuple(name for name in ARCH_AXES if name in arch) + COORDINATES[-1:]


def columns(metric: str | None = None, arch: Iterable[str] = ()) -> tuple[str, ...]:
    """A row's columns; with training (`metric` 'accuracy' or 'r2'), its final loss and score
    too; with architecture axes (`arch`, names from ARCH_AXES), their coordinate columns."""
    trained = () if metric is None else ("final_loss", f"final_{metric}")
    return coordinates(arch) + ("run_seed", "settings") + SUMMARY + MEASURED + THEORY + trained + ("error",)


KEY = COORDINATES + ("settings",)  # what resumption compares: the point and every other setting


def key_columns(header: Sequence[str]) -> tuple[str, ...]:
    """KEY for a file of these columns: its coordinates (architecture axes included) and settings."""
    return tuple(c for c in header if c in COORDINATES or c in ARCH_AXES) + ("settings",)


def settings_text(options: dict) -> str:
    """The options that are not axes but change a row (dtype, input_std, the training's), as
    one cell such as 'dtype=float32;input_std=1.0': part of a row's key, so resuming a results
    file with other settings runs every point again instead of mixing them."""
    from .render import csv_cell

    items = {**options.get("propagate", {}), **{f"train_{k}": v for k, v in options.get("train", {}).items()
                                                if k != "metric"}}
    return ";".join(f"{name}={csv_cell(items[name])}" for name in sorted(items) if items[name] is not None)


def train_options(task: str, epochs: int = TRAIN_DEFAULTS["epochs"], *, lr: float = TRAIN_DEFAULTS["lr"],
                  optimizer: str = TRAIN_DEFAULTS["optimizer"], samples: int = TRAIN_DEFAULTS["samples"],
                  batch: int | None = TRAIN_DEFAULTS["batch"], classes: int | None = None,
                  noise: float | None = None) -> dict:
    """`options["train"]` for `sweep`, every value checked as `initcli train` checks it.
    `batch` is the training mini-batch (None: full batch), not the grid's batch axis."""
    from .propagation import positive_int
    from .tasks import check_samples, check_task, metric_for
    from .training import MAX_EPOCHS, OPTIMIZERS, number_in

    key, n_classes, noise = check_task(task, classes, noise)
    samples = check_samples(samples, n_classes)
    name = str(optimizer).strip().lower()
    if name not in OPTIMIZERS:
        raise InitcliError("optimizer", f"unknown optimizer '{optimizer}'; choose from {', '.join(OPTIMIZERS)}")
    batch = samples if batch is None else min(positive_int("train_batch", batch), samples)
    return {"task": key, "metric": metric_for(key), "classes": classes, "noise": noise, "samples": samples,
            "epochs": positive_int("epochs", epochs, MAX_EPOCHS), "optimizer": name,
            "lr": number_in("lr", lr, "a finite number > 0", lambda v: v > 0), "batch": batch}


# -- grid ---------------------------------------------------------------------------------------


def _number(text: str, param: str, integer: bool) -> float | int:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "positive integers" if integer else "numbers"
        raise InitcliError(param, f"must be a comma list of {kind} or start:stop:count; '{text}' is not one") from None
    if not integer and not math.isfinite(value):
        raise InitcliError(param, f"must be finite, got '{text}'")
    return value


def parse_axis(text: str, param: str) -> list:
    """'1,2,3' or 'start:stop:count' (count values evenly spaced, both ends included) for a
    number axis; a comma list of names for scheme and activation. Repeats are dropped."""
    text = str(text).strip()
    if param in NAME_AXES:
        import re

        # commas inside NAME(key=value,...) belong to the scheme
        values = [item.strip().lower() for item in re.split(r",(?![^()]*\))", text)]
        if not all(values):
            raise InitcliError(param, f"must be a comma list of names such as relu,tanh; got '{text}'")
        return list(dict.fromkeys(values))
    integer = param in INT_AXES
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise InitcliError(param, f"a range is start:stop:count, got '{text}'")
        start, stop = (_number(p.strip(), param, integer) for p in parts[:2])
        count = parts[2].strip()
        if not count.isdecimal() or not 1 <= int(count) <= MAX_AXIS:
            raise InitcliError(param, f"the count of start:stop:count must be an integer from 1 to {MAX_AXIS:,}, "
                                      f"got '{count}'")
        count = int(count)
        if count == 1:
            values = [start]
        elif integer:
            step, extra = divmod(stop - start, count - 1)
            if extra:
                raise InitcliError(param, f"{text} does not give integers: stop − start must be a multiple of count − 1")
            values = [start + i * step for i in range(count)]
        else:
            # 12 significant digits: 0.1·3 is 0.3 in the file, not 0.30000000000000004
            values = [float(f"{v:.12g}") for v in np.linspace(start, stop, count)]
    else:
        values = [_number(item.strip(), param, integer) for item in text.split(",")]
    for value in values:
        if integer and value <= 0:
            raise InitcliError(param, f"must be positive integers, got {value}")
        if not integer and value < 0:
            raise InitcliError(param, f"must be numbers ≥ 0, got {value:g}")
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class Point:
    """One run of a sweep. Either sigma_w (mean-field weights) or scheme is set."""

    sigma_w: float | None
    sigma_b: float
    depth: int
    width: int
    batch: int
    scheme: str | None
    activation: str
    seed: int  # the replica: base seed + 0, 1, … (not the random seed, see run_seed)
    residual_init: str | None = None  # None: not an axis of the grid; 'none' or a preset name
    param: str | None = None  # None: not an axis of the grid; sp, ntk or mup

    @property
    def arch_axes(self) -> tuple[str, ...]:
        return tuple(name for name in ARCH_AXES if getattr(self, name) is not None)

    @property
    def coordinates(self) -> tuple[str, ...]:
        return coordinates(self.arch_axes)

    @property
    def residual(self) -> bool:
        """Whether the point's residual-init axis makes it a residual stack."""
        return self.residual_init not in (None, "none")

    @property
    def key(self) -> tuple[str, ...]:
        """The coordinates as the CSV file spells them: what resumption compares."""
        return tuple(_cell(getattr(self, name)) for name in self.coordinates)

    @property
    def run_seed(self) -> int:
        return point_seed(self)


def _cell(value) -> str:
    from .render import csv_cell

    return str(csv_cell(value))


def point_seed(point: Point) -> int:
    """The random seed of a point, from its coordinates only (never the worker or the order):
    SHA-256 of the coordinates as the file spells them, through numpy's SeedSequence, as a
    63-bit integer that `propagate --seed` accepts to reproduce the point."""
    digest = hashlib.sha256("\x1f".join(point.key).encode()).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    low, high = np.random.SeedSequence(words).generate_state(2, np.uint32).tolist()
    return ((high << 32) | low) >> 1


def grid(axes: dict[str, Sequence], seeds: int = 1, base_seed: int = 0) -> Grid:
    """Every point of the product of `axes` (values per axis name) times `seeds` replicas,
    in a fixed order: the order rows come out in. The points are made as they are read
    (see `Grid`), so a grid of millions costs nothing until it runs."""
    from .propagation import check_seed

    known = COORDINATES[:-1] + ARCH_AXES
    unknown = set(axes) - set(known)
    if unknown:
        raise InitcliError(sorted(unknown)[0], f"is not a sweep axis; axes are {', '.join(known)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_AXIS:
        raise InitcliError("seeds", f"must be an integer from 1 to {MAX_AXIS:,}, got {seeds!r}")
    base_seed = check_seed(base_seed)
    values = {name: list(axes[name]) for name in axes if axes[name] is not None}
    if values.get("sigma_w") and values.get("scheme"):
        raise InitcliError("scheme", "give either --sigma-w (mean-field weights) or --scheme, not both")
    if not values.get("sigma_w") and not values.get("scheme"):
        raise InitcliError("sigma_w", "give --sigma-w (weights N(0, σ_w²/fan_in)) or --scheme")
    for name, default in DEFAULTS.items():
        values.setdefault(name, default)
        if not values[name]:
            raise InitcliError(name, "needs at least one value")
    for name in ARCH_AXES:
        if name in values:
            if not values[name]:
                raise InitcliError(name, "needs at least one value")
            values[name] = list(dict.fromkeys(_check_arch_value(name, v) for v in values[name]))
    # an axis not given is one None: the points keep the coordinates (and seeds) of before
    arch = {name: values.get(name) or [None] for name in ARCH_AXES}
    weights = [(s, None) for s in values.get("sigma_w") or []] + [(None, s) for s in values.get("scheme") or []]
    made = Grid((tuple(weights), *(tuple(values[n]) for n in ("sigma_b", "depth", "width", "batch", "activation")),
                 *(tuple(arch[n]) for n in ARCH_AXES), tuple(range(base_seed, base_seed + seeds))))
    if len(made) > MAX_POINTS:
        raise InitcliError(None, f"the grid has {len(made):,} points; at most {MAX_POINTS:,} are accepted")
    return made


class Grid(Sequence):
    """The points of a product of axes, made when read: point i is found from i alone (the
    axes as digits, the seed fastest), so a grid holds its axes, never its points. Slices and
    sums are lists."""

    def __init__(self, axes: tuple[tuple, ...]) -> None:
        # axes: (σ_w, scheme) pairs, σ_b, depth, width, batch, activation, residual_init, param, seed
        self.axes = axes
        self._length = math.prod(len(values) for values in axes)

    def __len__(self) -> int:
        return self._length

    @staticmethod
    def _point(values: tuple) -> Point:
        (sigma_w, scheme), sigma_b, depth, width, batch, activation, residual_init, param, seed = values
        return Point(sigma_w, sigma_b, depth, width, batch, scheme, activation, seed, residual_init, param)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError("grid index out of range")
        index %= len(self)
        values = []
        for axis in reversed(self.axes):
            index, digit = divmod(index, len(axis))
            values.append(axis[digit])
        return self._point(tuple(reversed(values)))

    def __iter__(self) -> Iterator[Point]:
        return map(self._point, product(*self.axes))

    def to_check(self) -> Iterator[Point]:
        """The points whose checks decide every point's, in grid order: the replicas differ only
        in their seed, and σ_w and σ_b matter to the checks only through bounds (finite, ≥ 0, the
        dtype's range, zero biases for fixup) that their smallest and largest values decide."""
        weights, sigma_b, *middle, seeds = self.axes
        return map(self._point, product(_ends(weights, 0), _ends(sigma_b), *middle, seeds[:1]))

    def __add__(self, other) -> list[Point]:
        return [*self, *other]

    def __radd__(self, other) -> list[Point]:
        return [*other, *self]

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None


def _ends(values: tuple, part: int | None = None) -> tuple:
    """The smallest and largest of `values` (or of their `part`, where it is a number), in
    their order; a value whose part is not a number (a scheme name) stays."""
    numbers = [v if part is None else v[part] for v in values]
    numbers = [n for n in numbers if n is not None]
    if not numbers:
        return values
    low, high = min(numbers), max(numbers)
    return tuple(v for v in values if (v if part is None else v[part]) in (None, low, high))


def _check_arch_value(name: str, value) -> str:
    """A residual-init axis value ('none' or a preset) or a param axis value, as the file spells it."""
    from .residual_init import RESIDUAL_INIT_NAMES

    key = str(value).strip().lower()
    if name == "param":
        from .parametrization import check_param

        return check_param(key)
    if key != "none" and key not in RESIDUAL_INIT_NAMES:
        raise InitcliError("residual_init", f"unknown residual-init preset '{value}'; choose from none, "
                                            f"{', '.join(RESIDUAL_INIT_NAMES)}")
    return key


# -- one point ----------------------------------------------------------------------------------


def _call(point: Point, options: dict) -> dict:
    """propagate's keywords for a point; a residual-init preset implies a residual stack."""
    scheme, extra = (point.scheme, {}) if point.scheme is not None else ("lecun-normal", {"gain": point.sigma_w})
    if point.residual:
        extra |= {"residual": True, "residual_init": point.residual_init}
    if point.param is not None:
        extra["param"] = point.param
    return {"scheme": scheme, "activation": point.activation, "depth": point.depth, "width": point.width,
            "batch": point.batch, "bias_std": point.sigma_b, "seed": point.run_seed, "theory": False,
            **options.get("propagate", {}), **extra}


def _train_call(point: Point, options: dict) -> dict:
    """training.train_one's keywords for a point: its weights, shape and seed, zero biases."""
    train = options["train"]
    scheme, init_options = (point.scheme, {}) if point.scheme is not None else ("lecun-normal", {"gain": point.sigma_w})
    return {"scheme": scheme, "activation": point.activation, "task": train["task"], "samples": train["samples"],
            "classes": train["classes"], "noise": train["noise"], "hidden_widths": (point.width,) * point.depth,
            "optimizer": train["optimizer"], "lr": train["lr"], "epochs": train["epochs"], "batch": train["batch"],
            "target": 1.0, "seed": point.run_seed, "dtype": options.get("propagate", {}).get("dtype", "float32"),
            "init_options": init_options}


def _train_bytes(point: Point, options: dict) -> int:
    """Peak memory of a point's training, as `training.train` estimates it: parameters with
    their gradients and Adam's moments, then per sample the activations, φ' and a gradient of
    every layer; plus the (loss, score) curve."""
    from .tasks import FEATURES
    from .training import CURVE_POINT_BYTES

    train = options["train"]
    itemsize = np.dtype(options.get("propagate", {}).get("dtype", "float32")).itemsize
    classes = 1 if train["task"] == "regression" else (train["classes"] or (3 if train["task"] == "spiral" else 2))
    widths = [FEATURES, *([point.width] * point.depth), classes]
    return (sum(a * b for a, b in zip(widths[:-1], widths[1:])) * itemsize * 4
            + train["samples"] * sum(widths) * (itemsize * 3 + 8) + train["epochs"] * CURVE_POINT_BYTES)


def check_points(points: Sequence[Point], options: dict, at_once: int = 1) -> None:
    """Every distinct setting checked (names, sizes, memory) before any work starts; the
    memory guard counts the largest point `at_once` times, for the runs that go side by side
    (a point's propagate run and its training are one after the other)."""
    from .propagation import estimate_bytes, prepare

    seen = set()
    largest = 0
    dtype = None
    for point in points.to_check() if isinstance(points, Grid) else points:
        if "train" in options and (point.residual or point.param not in (None, "sp")
                                   or options.get("propagate", {}).keys() & {"residual", "block", "norm"}):
            raise InitcliError("train", "does not apply with --residual-init, --param, --residual, --block or "
                                        "--norm yet: the trained network is a plain MLP")
        call = _call(point, options)
        call.pop("seed")
        signature = tuple(sorted((k, repr(v)) for k, v in call.items()))
        if signature not in seen:
            seen.add(signature)
            run = prepare(**call, seed=0)  # one run's own memory guard is in here
            dtype = run.dtype
            needed = estimate_bytes(run.sizes, run.batch, run.dtype, checkpoint=run.checkpoint, arch=run.arch)
            if "train" in options:
                from .schemes import make_init

                train = _train_call(point, options)
                make_init(train["scheme"], activation=point.activation, **train["init_options"])
                needed = max(needed, _train_bytes(point, options))
            largest = max(largest, needed)
    at_once = min(at_once, len(points))
    if at_once > 1 or "train" in options:
        options_named = ("--batch", "--width", "--depth") + (("--samples", "--epochs") if "train" in options else ())
        check_memory(at_once * largest, dtype=dtype,
                     options=options_named + (("--jobs",) if at_once > 1 else ()))


@lru_cache(maxsize=4096)
def _theory(activation: str, sigma_w: float, sigma_b: float) -> dict:
    from .activations import get_activation
    from .theory import phase

    with np.errstate(all="ignore"):
        p = phase(get_activation(activation), sigma_w, sigma_b)
    return {"theory_q_star": p.q_star, "theory_chi": p.chi, "theory_xi_c": p.xi_c, "theory_xi_q": p.xi_q,
            "theory_xi_grad": p.xi_grad, "theory_phase": p.phase, "c_star": p.c_star}


def effective_sigma_w(point: Point, negative_slope: float | None = None) -> float:
    """σ_w = √fan_in·std of the point's weights; nan where the weights are not i.i.d. zero-mean
    (constant, identity) or scaled by data (lsuv)."""
    if point.scheme is None:
        return point.sigma_w
    from .schemes import make_init

    init = make_init(point.scheme, activation=point.activation)
    if init.kind in ("zeros", "constant", "identity", "dirac", "lsuv", "fixed"):
        return math.nan
    return init.expected_std((point.width, point.width)) * math.sqrt(point.width)


def _slope(layers: Sequence[int], values: Sequence[float]) -> float:
    x = np.asarray(layers, dtype=np.float64)
    y = np.log(np.asarray(values, dtype=np.float64))
    x = x - x.mean()
    return float(np.dot(x, y - y.mean()) / np.dot(x, x))


def _scale(slope: float) -> float:
    if math.isnan(slope):
        return math.nan
    return math.inf if slope == 0 else 1 / abs(slope)


def gradient_scale(grad_var: Sequence[float]) -> float:
    """ξ_grad: 1/|slope of ln grad_var per layer| over the deeper half of the stack."""
    depth = len(grad_var)
    start = depth // 2 if depth >= 4 else 0
    pairs = [(i + 1, v) for i, v in enumerate(grad_var) if i >= start and math.isfinite(v) and v > 0]
    if len(pairs) < 2:
        return math.nan
    return _scale(_slope(*zip(*pairs)))


def approach_scale(values: Sequence[float], target: float | None, eps: float) -> float:
    """ξ of the approach of a per-layer quantity to its fixed point (see the module docstring).
    `target` None: the fixed point is measured, the mean over the deeper half."""
    values = np.asarray(values, dtype=np.float64)
    depth = len(values)
    if depth < 3 or not np.all(np.isfinite(values)):
        return math.nan
    if target is None:
        target = float(np.mean(values[depth // 2:]))
        tail = values[depth - max(2, depth // 4):]
        floor = 3 * float(np.std(tail, ddof=1))
    else:
        floor = 0.0
    floor = max(floor, 8 * eps * max(1.0, abs(target)))
    distance = np.abs(values - target)
    first = int(np.argmax(distance <= distance[0] / 2)) if np.any(distance <= distance[0] / 2) else depth
    layers = []
    for i in range(first, depth):
        if distance[i] <= floor:
            break
        layers.append(i)
    if len(layers) < 2:
        return math.nan
    slope = _slope([i + 1 for i in layers], distance[layers])
    return math.inf if slope >= 0 else 1 / -slope


def measure_point(point: Point, options: dict) -> dict:
    """The row of one point (without error handling: see `run_point`)."""
    from .compare import compare_row
    from .propagation import propagate

    call = _call(point, options)
    result = propagate(**call)
    summary = asdict(compare_row(result))
    # mean-field theory here is the plain MLP's: none for residual or normalised stacks
    plain = not call.get("residual") and str(call.get("norm") or "none").lower() == "none"
    sigma_w = effective_sigma_w(point) if plain else math.nan
    theory = (_theory(point.activation, float(sigma_w), float(point.sigma_b)) if math.isfinite(sigma_w)
              else {**{name: math.nan for name in THEORY}, "theory_phase": "", "c_star": math.nan})
    eps = float(np.finfo(result.params["dtype"]).eps)
    layers = result.layers
    q_target = 0.0 if theory["theory_q_star"] == 0 else None
    c_target = 1.0 if theory["c_star"] == 1.0 else None
    row = {**{name: summary[name] for name in SUMMARY},
           "xi_q": approach_scale([layer.preact_var for layer in layers], q_target, eps),
           "xi_c": approach_scale([layer.input_cosine for layer in layers], c_target, eps),
           "xi_grad": gradient_scale([layer.grad_var for layer in layers]),
           **{name: theory[name] for name in THEORY}}
    if "train" in options:
        from .training import train_one

        trained = train_one(**_train_call(point, options)).row
        row["final_loss"] = trained.final_loss
        row[f"final_{options['train']['metric']}"] = trained.final_score
    return row


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
    from .threads import blas_threads_limited

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


# -- the results file ---------------------------------------------------------------------------


def _whole_lines_end(stream) -> int:
    """Where the last whole line of a binary file ends (0: none), found from its end."""
    position = stream.seek(0, os.SEEK_END)
    while position > 0:
        start = max(0, position - 65536)
        stream.seek(start)
        block = stream.read(position - start)
        found = block.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


class KeySet:
    """The keys of a results file's rows (tuples of cells, settings last) as 16-byte BLAKE2b
    digests in one sorted array: resuming a file of ten million rows takes 160 MB, where the
    cells as Python strings took gigabytes. Two keys share a digest with a chance of about
    rows² / 2¹²⁹. `settings` counts the rows of each settings cell."""

    def __init__(self, keys: Iterable[tuple[str, ...]] = ()) -> None:
        from collections import Counter

        digests = bytearray()
        self.settings: Counter = Counter()
        for key in keys:
            digests += self._digest(key)
            self.settings[key[-1]] += 1
        self._sorted = np.unique(np.frombuffer(digests, dtype="S16")) if digests else np.empty(0, dtype="S16")

    @staticmethod
    def _digest(key: tuple[str, ...]) -> bytes:
        return hashlib.blake2b("\x1f".join(key).encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __contains__(self, key: tuple[str, ...]) -> bool:
        digest = np.bytes_(self._digest(key))
        i = int(np.searchsorted(self._sorted, digest))
        return i < len(self._sorted) and self._sorted[i] == digest

    def __len__(self) -> int:
        return len(self._sorted)


@contextmanager
def _csv_fields_up_to(size: int) -> Iterator[None]:
    """The csv module's field limit (128 KiB unless set) raised to `size`, the length of the text
    read, which no field can exceed: a long error message is a field like any other, and the
    text is in memory already."""
    before = csv.field_size_limit()
    csv.field_size_limit(min(max(before, size + 1), sys.maxsize))
    try:
        yield
    finally:
        csv.field_size_limit(before)


class ResultsFile:
    """A CSV file that rows are appended to as tasks finish, whole lines only: each batch is
    one write of complete lines, then fsync, so a killed sweep leaves at worst a partial last
    line, which the next run cuts off before it appends."""

    def __init__(self, path: str | os.PathLike, header: Sequence[str]) -> None:
        self.path = os.fspath(path)
        self.header = list(header)
        self.done = KeySet()
        self.kept = 0
        self._read()

    def _read(self) -> None:
        """The keys of the file's whole rows, read line by line: the file is never held whole."""
        try:
            with open(self.path, "rb") as stream:
                end, size = _whole_lines_end(stream), stream.seek(0, os.SEEK_END)
        except FileNotFoundError:
            end = size = 0
        except OSError as exc:
            raise InitcliError("out", f"cannot read '{self.path}': {exc.strerror or exc}") from None
        if end != size:  # whole lines only: a killed run may have left half of one
            try:
                os.truncate(self.path, end)
            except OSError as exc:
                raise InitcliError("out", f"cannot repair '{self.path}': {exc.strerror or exc}") from None
        if end == 0:
            self._append(self._lines([self.header]))
            return
        try:
            with (open(self.path, encoding="utf-8", errors="replace", newline="") as text,
                  _csv_fields_up_to(end)):
                reader = csv.reader(text)
                header = next(reader)
                if header != self.header:
                    raise InitcliError("out", f"'{self.path}' holds other columns than this sweep writes; "
                                              "give another --out file")
                key = [header.index(c) for c in key_columns(header)]
                self.done = KeySet(tuple(fields_[i] for i in key) for fields_ in reader if len(fields_) == len(header))
        except OSError as exc:
            raise InitcliError("out", f"cannot read '{self.path}': {exc.strerror or exc}") from None
        except csv.Error as exc:
            raise InitcliError("out", f"cannot read '{self.path}' as CSV: {exc}") from None
        self.kept = sum(self.done.settings.values())

    @staticmethod
    def _lines(rows: Iterable[Sequence]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue().encode()

    def _append(self, data: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:  # one write for any sane size; a short write continues, still whole lines at the end
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # a half line left behind is cut off by the next run's resume
            raise InitcliError("out", f"could not write '{self.path}': {exc.strerror or exc}; the rows "
                                      "before are kept and a rerun resumes after them") from None

    def append(self, rows: Sequence[dict]) -> None:
        from .render import csv_cell

        if rows:
            self._append(self._lines([[csv_cell(row.get(c)) for c in self.header] for row in rows]))


# Column types of a .parquet results file: fixed, so that a batch whose column is all empty
# (error, most often) still writes the file's type; every other column is float64.
_INT_COLUMNS = ("depth", "width", "batch", "seed", "run_seed")
_TEXT_COLUMNS = ("scheme", "activation", "residual_init", "param", "settings", "verdict", "reason", "theory_phase", "error")
RESULT_SUFFIXES = (".csv", ".parquet")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise InitcliError("out", "writing .parquet results needs pyarrow, which is not installed: "
                                  "pip install 'initcli[parquet]'") from None
    return pyarrow


def check_results_path(path: str | os.PathLike) -> None:
    """--out checked before any work: a .csv or .parquet file that may exist (it is resumed),
    pyarrow installed for .parquet."""
    from .files import check_output

    target = check_output(path, "out", force=True, suffixes=RESULT_SUFFIXES)
    if target.suffix.lower() == ".parquet":
        _pyarrow()


class ParquetResults:
    """A .parquet file that grows by whole row groups as tasks finish: each batch's rows are
    one new row group after those already there, written to a temporary file renamed over
    the old one (`files.atomic_output`), so a killed sweep leaves the file as it was after
    the last batch, never half of one. Parquet keeps its index at the end of the file, so
    adding a row group means writing the file again; the rows already there are kept in
    memory as Arrow tables, not read back each time."""

    def __init__(self, path: str | os.PathLike, header: Sequence[str]) -> None:
        pa = _pyarrow()
        self.path = os.fspath(path)
        self.header = list(header)
        types = {c: pa.int64() if c in _INT_COLUMNS else pa.string() if c in _TEXT_COLUMNS else pa.float64()
                 for c in self.header}
        self.schema = pa.schema([(c, types[c]) for c in self.header])
        self.tables: list = []
        self.done = KeySet()
        self.kept = 0
        remove_stale_temporaries(self.path)
        if os.path.exists(self.path):
            try:
                table = pa.parquet.read_table(self.path)
            except (OSError, pa.ArrowException) as exc:
                raise InitcliError("out", f"cannot read '{self.path}' as Parquet: {str(exc)[:120]}") from None
            if table.schema.names != self.header:
                raise InitcliError("out", f"'{self.path}' holds other columns than this sweep writes; "
                                          "give another --out file")
            table = self._typed(table)
            self.tables.append(table)
            self.done = KeySet(tuple(_cell(v) for v in values)
                               for values in zip(*(table.column(c).to_pylist() for c in key_columns(self.header))))
            self.kept = table.num_rows

    def _typed(self, table):
        """The file's columns as this sweep writes them, or one line naming the first that is not."""
        pa = _pyarrow()
        columns = []
        for field in self.schema:
            column = table.column(field.name)
            try:
                columns.append(column.cast(field.type))
            except (pa.ArrowException, TypeError, ValueError):
                raise InitcliError("out", f"'{self.path}' holds a {field.name} column of type {column.type}, "
                                          f"where this sweep writes {field.type}; give another --out file") from None
        return pa.table(columns, schema=self.schema)

    def append(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        pa = _pyarrow()
        from .files import atomic_output

        batch = pa.table({c: pa.array([_plain_cell(row.get(c)) for row in rows], type=self.schema.field(c).type)
                          for c in self.header}, schema=self.schema)
        with (atomic_output(self.path, "out", force=True, suffix=".parquet") as handle,
              _owned(handle), pa.parquet.ParquetWriter(handle, self.schema) as writer):
            for table in [*self.tables, batch]:
                writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.tables.append(batch)


@contextmanager
def _owned(handle) -> Iterator[None]:
    """A lock on a temporary file while it is written: a resuming sweep removes the temporaries
    that no one holds (see `remove_stale_temporaries`). The kernel drops the lock with the
    process, however it dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: nothing marks the file, and nothing is removed
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    yield


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove what a killed rewrite of the results file `path` left: regular files in its folder
    named as `files.atomic_output` names its temporaries (.NAME.XXXXXXXX.tmp, the random part
    as `tempfile.mkstemp` makes it) that no live process holds locked (`_owned`). Other files
    are never touched; where locks cannot be read (not POSIX), nothing is removed."""
    import re
    import stat
    from pathlib import Path

    try:
        import fcntl
    except ImportError:
        return []
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    pattern = re.compile(re.escape(f".{target.name}.") + r"[a-z0-9_]{8}\.tmp")
    try:
        names = [name for name in os.listdir(folder) if pattern.fullmatch(name)]
    except OSError:
        return []
    removed = []
    for name in names:
        candidate = folder / name
        try:
            fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:  # gone already, a link, or not ours to read
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live sweep is writing it
                continue
            try:
                os.unlink(candidate)
                removed.append(str(candidate))
            except OSError:
                pass
        finally:
            os.close(fd)
    return removed


def _plain_cell(value):
    """A row value as Arrow takes it: numpy scalars as Python numbers."""
    return value.item() if hasattr(value, "item") else value


def results_file(path: str | os.PathLike, header: Sequence[str]):
    """The results file for `path`'s suffix: CSV lines or Parquet row groups."""
    if os.fspath(path).lower().endswith(".parquet"):
        return ParquetResults(path, header)
    return ResultsFile(path, header)


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


# -- heatmaps -------------------------------------------------------------------------------

HEATMAP_METRICS = ("xi_grad", "xi_c", "xi_q", "grad_ratio", "verdict", "accuracy", "final_loss", "theory_chi",
                   "theory_xi_c", "theory_xi_grad")
# depth scales and ratios span decades: averaged and coloured on log10
LOG_METRICS = ("xi_grad", "xi_c", "xi_q", "grad_ratio", "theory_xi_c", "theory_xi_grad", "final_loss")


@dataclass(frozen=True)
class Heatmap:
    """`metric` over two axes: cells[i][j] at (ys[i], xs[j]), each the mean over the other
    axes and the seeds of the rows without an error (the geometric mean, of the finite
    positive values, for a `log` metric; for the verdict, the one seen most often, the
    first seen on a tie); None where no row has a value."""

    y_axis: str
    x_axis: str
    metric: str  # the column: accuracy resolves to final_accuracy or final_r2
    ys: tuple
    xs: tuple
    cells: tuple[tuple, ...]
    log: bool


def heatmap_metric(metric: str, row_columns: Sequence[str]) -> str:
    """The column a heatmap --metric names; 'accuracy' is the training score column."""
    key = str(metric).strip().lower()
    if key == "accuracy":
        found = [c for c in ("final_accuracy", "final_r2") if c in row_columns]
        if not found:
            raise InitcliError("metric", "accuracy needs --train TASK: the points were not trained")
        return found[0]
    if key not in HEATMAP_METRICS and key not in ("final_accuracy", "final_r2"):
        raise InitcliError("metric", f"must be one of {', '.join(HEATMAP_METRICS)}, got '{metric}'")
    if key == "final_loss" and key not in row_columns:
        raise InitcliError("metric", "final_loss needs --train TASK: the points were not trained")
    return key


def check_heatmap_axes(text: str) -> tuple[str, str]:
    """'sigma_w,sigma_b' → (rows axis, columns axis), two different coordinates."""
    pair = [item.strip().lower() for item in str(text).split(",")]
    known = coordinates(ARCH_AXES)
    if len(pair) != 2 or not all(p in known for p in pair) or pair[0] == pair[1]:
        raise InitcliError("heatmap", f"must be two different axes such as sigma_w,sigma_b; axes are "
                                      f"{', '.join(known)}")
    return pair[0], pair[1]


def _order(values) -> list:
    return sorted(values, key=lambda v: (v is None, isinstance(v, str), v if v is not None else 0))


def heatmap(rows: Sequence[dict], y_axis: str, x_axis: str, metric: str) -> Heatmap:
    from collections import Counter, defaultdict

    log = metric in LOG_METRICS
    gathered: dict = defaultdict(list)
    for row in rows:
        if not row.get("error"):
            gathered[(row[y_axis], row[x_axis])].append(row.get(metric))
    ys = tuple(_order({key[0] for key in gathered}))
    xs = tuple(_order({key[1] for key in gathered}))

    def cell(values):
        if metric == "verdict":
            named = [v for v in values if v]
            return Counter(named).most_common(1)[0][0] if named else None
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        numbers = [v for v in numbers if math.isfinite(v) and (v > 0 or not log)]
        if not numbers:
            return None
        if log:
            return 10 ** (sum(math.log10(v) for v in numbers) / len(numbers))
        return sum(numbers) / len(numbers)

    cells = tuple(tuple(cell(gathered[(y, x)]) if (y, x) in gathered else None for x in xs) for y in ys)
    return Heatmap(y_axis, x_axis, metric, ys, xs, cells, log)


@lru_cache(maxsize=4096)
def critical_sigma_w(activation: str, sigma_b: float) -> float:
    """theory.critical_sigma_w by activation name, remembered: each is a bisection over
    fixed-point quadratures (~0.1 s), and a heatmap asks for the same σ_b's twice."""
    from .activations import get_activation
    from .theory import critical_sigma_w as edge

    with np.errstate(all="ignore"):
        return edge(get_activation(activation), float(sigma_b))


def critical_line(rows: Sequence[dict], y_axis: str, x_axis: str, samples: int = 8) -> list[tuple[float, float]]:
    """Theory's edge of chaos (χ₁ = 1) as (σ_b, σ_w) pairs at the rows' σ_b values and
    `samples` evenly between them, when the axes are σ_w and σ_b and the rows are of one
    activation; [] otherwise."""
    activations = {row.get("activation") for row in rows}
    if {y_axis, x_axis} != {"sigma_w", "sigma_b"} or len(activations) != 1:
        return []
    sigma_bs = {float(row["sigma_b"]) for row in rows if row.get("sigma_b") is not None}
    if not sigma_bs:
        return []
    activation = activations.pop()
    sigma_bs |= {float(v) for v in np.linspace(min(sigma_bs), max(sigma_bs), samples)}
    line = [(sigma_b, critical_sigma_w(activation, sigma_b)) for sigma_b in sorted(sigma_bs)]
    return [(b, w) for b, w in line if math.isfinite(w)]


def trainable_depth(rows: Sequence[dict], y_axis: str, x_axis: str,
                    samples: int = 40) -> list[tuple[float, float]]:
    """Schoenholz et al. 2017's trainability bound as (σ_w, 6·ξ_c) pairs over the rows' σ_w
    range, when the axes are σ_w and depth and the rows share one activation and one σ_b;
    [] otherwise. ξ_c is infinite on the critical line: those σ_w are left out."""
    activations = {row.get("activation") for row in rows}
    sigma_bs = {row.get("sigma_b") for row in rows}
    if {y_axis, x_axis} != {"sigma_w", "depth"} or len(activations) != 1 or len(sigma_bs) != 1:
        return []
    sigma_ws = [float(row["sigma_w"]) for row in rows if row.get("sigma_w") is not None]
    if not sigma_ws:
        return []
    activation, sigma_b = activations.pop(), float(sigma_bs.pop())
    low, high = min(sigma_ws), max(sigma_ws)
    line = []
    for sigma_w in np.linspace(low, high, samples if high > low else 1):
        if sigma_w > 0:
            xi = _theory(activation, float(sigma_w), sigma_b)["theory_xi_c"]
            if math.isfinite(xi):
                line.append((float(sigma_w), 6 * xi))
    return line


def read_results(path: str) -> list[dict]:
    """A results file's rows (CSV or Parquet) as strings, as the CSV spells them, in file order."""
    if str(path).lower().endswith(".parquet"):
        table = _pyarrow().parquet.read_table(path)
        return [{c: str(_cell(v)) for c, v in row.items()} for row in table.to_pylist()]
    with open(path, newline="") as stream, _csv_fields_up_to(os.fstat(stream.fileno()).st_size):
        return list(csv.DictReader(stream))

