"""The generated tasks `train` and `sweep --train` learn, one table for every architecture.
No download: each is drawn from the run's inputs stream.

- mlp: points in the plane, standardised per feature: xor, moons, circles, spiral (`--classes`
  arms) and regression (a smooth surface, scored by R²);
- conv: waves, plane waves along a random axis whose frequency band is the class (see
  `make_waves`);
- transformer: first, sequences whose class is their first token (see `make_first`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .checks import check_std, positive_int
from .errors import InitcliError, suggest

TASKS = {"mlp": ("xor", "moons", "circles", "spiral", "regression"), "conv": ("waves",), "transformer": ("first",)}
DEFAULT_TASK = {"mlp": "spiral", "conv": "waves", "transformer": "first"}
DEFAULT_NOISE = {"waves": 1.0, "first": 0.0}
DEFAULT_CLASSES = {"waves": 2, "first": 4}
FEATURES = 2  # every mlp task's inputs are points in the plane
# Largest --noise: beyond 2**52 the noise's float64 spacing exceeds 1, so x + noise·z rounds the
# task's unit-scale inputs (or targets) away entirely and nothing is left to learn; below it no
# step of data generation or standardisation comes near float64's range.
MAX_NOISE = 2.0**52


@dataclass(frozen=True)
class Task:
    name: str
    x: np.ndarray  # (samples, features), float64, standardised
    y: np.ndarray  # class labels (int) or targets (samples, 1)
    classes: int  # 0 for regression

    @property
    def regression(self) -> bool:
        return self.classes == 0

    @property
    def metric(self) -> str:
        return metric_for(self.name)


def metric_for(task: str) -> str:
    """The score's name: 'r2' (R²) for regression, 'accuracy' for the classification tasks."""
    return "r2" if task == "regression" else "accuracy"


def check_samples(samples, classes: int) -> int:
    """At least two samples (the inputs are standardised by their spread, which one sample
    does not have), and for classification at least one per class."""
    samples = positive_int("samples", samples, 10**8)
    needed = max(2, classes)
    if samples < needed:
        why = f"one per class ({classes} classes)" if classes > 2 else "one sample has no spread to standardise by"
        raise InitcliError("samples", f"must be at least {needed}: {why}; got {samples}")
    return samples


def check_noise(noise) -> float | None:
    if noise is None:
        return None
    noise = check_std("noise", noise)
    if noise > MAX_NOISE:
        raise InitcliError("noise", f"must be at most 2**52 ≈ {MAX_NOISE:.3g}: beyond it x + noise·z rounds the "
                                    f"task's signal away in float64; got {noise:g}")
    return noise


def check_task(name: str, classes: int | None = None, noise: float | None = None) -> tuple[str, int, float | None]:
    """(task key, classes, noise) checked: classes is 0 for regression, the spiral's arms
    (default 3) or 2; noise None means the task's own default."""
    key = str(name).strip().lower()
    if key not in TASKS["mlp"]:
        raise InitcliError("task", f"unknown task '{name}'{suggest(key, list(TASKS['mlp']))}; choose from "
                                   f"{', '.join(TASKS['mlp'])}")
    if classes is None:
        classes = 3 if key == "spiral" else 2
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 2:
        raise InitcliError("classes", f"must be an integer ≥ 2, got {classes!r}")
    if key != "spiral" and classes != 2:
        raise InitcliError("classes", f"only spiral takes --classes; {key} has 2")
    return key, 0 if key == "regression" else int(classes), check_noise(noise)


def make_task(name: str, samples: int = 512, *, classes: int | None = None, noise: float | None = None,
              rng: np.random.Generator) -> Task:
    """A generated data set: no download. Inputs are standardised per feature. `classes` is
    the number of spiral arms (default 3); the other classification tasks have 2."""
    key, classes, noise = check_task(name, classes, noise)
    samples = check_samples(samples, classes)
    if key == "xor":
        x = rng.uniform(-1, 1, (samples, 2))
        y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
        x += (0.0 if noise is None else noise) * rng.standard_normal(x.shape)
    elif key == "moons":
        y = rng.integers(0, 2, samples)
        t = rng.uniform(0, math.pi, samples)
        # two interleaved half circles: the upper one, and the lower one shifted right and down
        x = np.where(y[:, None] == 0, np.stack([np.cos(t), np.sin(t)], 1),
                     np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
        x += (0.1 if noise is None else noise) * rng.standard_normal(x.shape)
    elif key == "circles":
        y = rng.integers(0, 2, samples)
        t = rng.uniform(0, 2 * math.pi, samples)
        radius = np.where(y == 0, 1.0, 0.5)
        x = radius[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
        x += (0.05 if noise is None else noise) * rng.standard_normal(x.shape)
    elif key == "spiral":
        y = rng.integers(0, classes, samples)
        r = rng.uniform(0.05, 1, samples)
        theta = 2 * math.pi * y / classes + 4 * r + (0.2 if noise is None else noise) * rng.standard_normal(samples)
        x = r[:, None] * np.stack([np.sin(theta), np.cos(theta)], 1)
    else:  # regression: a smooth 2-D surface
        x = rng.uniform(-1, 1, (samples, 2))
        y = (np.sin(math.pi * x[:, 0]) * np.cos(math.pi * x[:, 1]))[:, None]
        y = y + (0.0 if noise is None else noise) * rng.standard_normal(y.shape)
    spread = x.std(axis=0)
    # two samples can still coincide in a feature (noise 0): leave that feature centred, unscaled
    x = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    return Task(key, x, y, classes)


def check_block_task(kind: str, name: str | None, classes: int | None, noise: float | None
                     ) -> tuple[str, int, float]:
    key = DEFAULT_TASK[kind] if name is None else str(name).strip().lower()
    if key not in TASKS[kind]:
        raise InitcliError("task", f"'{name}' is not a task for --arch {kind}{suggest(key, list(TASKS[kind]))}; "
                                   f"choose from {', '.join(TASKS[kind])}")
    classes = DEFAULT_CLASSES[key] if classes is None else classes
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or not 2 <= classes <= 1024:
        raise InitcliError("classes", f"must be an integer from 2 to 1024, got {classes!r}")
    noise = check_noise(noise)
    return key, int(classes), DEFAULT_NOISE[key] if noise is None else noise


def check_waves(spatial: Sequence[int], classes: int) -> None:
    """The top band's 2·classes cycles must stay below the Nyquist limit S/2 on every axis."""
    highest = 2 * classes
    if 2 * highest >= min(spatial):
        raise InitcliError("classes", f"{classes} bands need up to {highest} cycles, more than --spatial "
                                      f"{min(spatial)} positions can hold (Nyquist: fewer than S/2); use fewer "
                                      f"classes or a larger --spatial")


def make_waves(samples: int, spatial: Sequence[int], channels: int, classes: int, noise: float,
               rng: np.random.Generator) -> Task:
    """The waves task: x (samples, *spatial, channels), channels-last, float64."""
    check_waves(spatial, classes)
    y = rng.integers(0, classes, samples)
    cycles = 2 * y + 1 + rng.integers(0, 2, samples)
    axis = rng.integers(0, len(spatial), samples)
    phase = rng.uniform(0, 2 * math.pi, samples)
    x = np.empty((samples, *spatial, channels))
    grids = np.meshgrid(*[np.arange(n) / n for n in spatial], indexing="ij")
    for i in range(samples):
        wave = math.sqrt(2) * np.sin(2 * math.pi * cycles[i] * grids[axis[i]] + phase[i])  # unit variance
        x[i] = wave[..., None]
    x += noise * rng.standard_normal(x.shape)
    x /= math.sqrt(1 + noise * noise)
    return Task("waves", x, y, classes)


def make_first(samples: int, seq_len: int, width: int, classes: int, noise: float,
               rng: np.random.Generator) -> Task:
    """The first-token task: x (samples, T, D), float64."""
    if seq_len < 2:
        raise InitcliError("seq_len", "the first task needs at least 2 tokens: the first and one to pool with")
    tokens = rng.integers(0, classes, (samples, seq_len))
    embedding = rng.standard_normal((classes, width))
    positions = rng.standard_normal((seq_len, width))
    x = (embedding[tokens] + positions) / math.sqrt(2)
    x += noise * rng.standard_normal(x.shape)
    return Task("first", x, tokens[:, 0].copy(), classes)


@dataclass(frozen=True)
class BlockTask:
    """A conv or transformer task as `train` uses it: checks against a prepared run (before
    any work), the float64 bytes of its inputs, and the maker (samples, classes, noise, run,
    rng) -> Task, each reading the geometry it needs from the run's shape."""

    check: Callable[[object, int], None]
    input_bytes: Callable[[object, int], int]
    make: Callable[..., Task]


def _check_first(run, classes: int) -> None:
    if run.shape.seq_len < 2:
        raise InitcliError("seq_len", "the first task needs at least 2 tokens: the first and one to pool with")


BLOCK_TASKS = {
    "waves": BlockTask(
        check=lambda run, classes: check_waves(run.shape.spatial, classes),
        input_bytes=lambda run, samples: samples * run.shape.positions * run.shape.channels * 8,
        make=lambda samples, classes, noise, run, rng: make_waves(samples, run.shape.spatial, run.shape.channels,
                                                                  classes, noise, rng)),
    "first": BlockTask(
        check=_check_first,
        input_bytes=lambda run, samples: samples * run.shape.seq_len * run.shape.width * 8,
        make=lambda samples, classes, noise, run, rng: make_first(samples, run.shape.seq_len, run.shape.width,
                                                                  classes, noise, rng)),
}
