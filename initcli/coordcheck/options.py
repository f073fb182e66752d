"""The options both forms of the coordinate check share (the built-in stacks and --module),
checked."""

from __future__ import annotations

import numpy as np

from ..checks import check_seed, positive_int
from ..errors import InitcliError
from ..training import OPTIMIZERS, number_in

DEFAULT_WIDTHS = (128, 256, 512, 1024, 2048)
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.1}
MAX_STEPS = 10_000


def parse_sizes(values, param: str) -> tuple[int, ...]:
    """--widths or --depths: positive sizes, none twice, in increasing order."""
    if isinstance(values, (int, np.integer)):
        values = [values]
    values = tuple(positive_int(param, v, 1 << 16) for v in values)
    if not values:
        raise InitcliError(param, "needs at least one value")
    if len(set(values)) != len(values):
        raise InitcliError(param, f"lists a value twice: {','.join(map(str, values))}")
    return tuple(sorted(values))


def check_training(*, steps, optimizer, lr, seeds, seed, batch, flat_tol) -> dict:
    """The options both forms share, checked: steps, optimizer (its key), lr (its default),
    seeds, seed, batch and flat_tol."""
    steps = positive_int("steps", steps, MAX_STEPS) if steps != 0 else 0
    key = str(optimizer).strip().lower()
    if key not in OPTIMIZERS:
        raise InitcliError("optimizer", f"unknown optimizer '{optimizer}'; choose from {', '.join(OPTIMIZERS)}")
    lr = DEFAULT_LR[key] if lr is None else number_in("lr", lr, "a finite number > 0", lambda v: v > 0)
    batch = positive_int("batch", batch, 1 << 20)
    if batch < 2:
        raise InitcliError("batch", "must be at least 2: the task's inputs are standardised by their spread")
    return {"steps": steps, "optimizer": key, "lr": lr, "seeds": positive_int("seeds", seeds, 1000),
            "seed": check_seed(seed), "batch": batch,
            "flat_tol": number_in("flat_tol", flat_tol, "a number ≥ 0", lambda v: v >= 0)}


