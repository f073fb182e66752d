"""`coordcheck`: does each layer's activation scale stay put as the network gets wider (or
deeper) and trains a few steps? The coordinate check of µP (Yang et al. 2022, Tensor
Programs V, §5 and Fig. 5; mup's `get_coord_data`): for each width, train K optimizer steps
on one fixed batch and record each layer's mean |x| over the batch and its units before every
step; under the standard parametrization with Adam the hidden layers and the output grow with
width after one step, under µP they stay flat.

The network is `initcli.training`'s (Linear → activation layers, then a linear readout),
trained on one batch of the generated regression task with SGD or Adam, under `--param`
(see `initcli.parametrization`) and optionally as a residual stack with `--residual-init`.

Slopes: for each (layer, step) the least-squares slope of log(l1) against log(width) over
every width and seed, with its standard error (the usual OLS one, σ̂/√Sxx) — against depth
likewise when several depths are given. A slope is `flat` when |slope| ≤ flat_tol or within
3·SE of 0 with SE ≤ flat_tol, `grows` or `shrinks` beyond flat_tol and 3·SE, `unclear` when
the fit is too loose to tell (SE > flat_tol); `zero` when a layer is exactly 0 (a zero readout at
step 0) and `overflow` when a value is not finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from .activations import get_activation
from .checks import _positive_int, check_dtype, check_memory, check_seed
from .engine import forward, make_architecture, seed_streams
from .errors import InitcliError
from .parametrization import check_base_width, check_param, predicted_slope
from .schemes import get_scheme, make_init
from .threads import blas_threads_limited
from .training import (
    OPTIMIZERS,
    _check_residual_init_trains,
    _number_in,
    _Optimizer,
    build_network,
    gradients,
    make_task,
)

DEFAULT_WIDTHS = (128, 256, 512, 1024, 2048)
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.1}
READOUT_INITS = ("scheme", "zero")
# |slope| below this is flat whatever its standard error: an exponent of 0.1 is a factor
# 2^0.4 ≈ 1.3 from 128 to 2048, within what finite-width corrections O(n^−1/2) move.
DEFAULT_FLAT_TOL = 0.1
SE_FACTOR = 3.0  # and within 3 standard errors of 0
ROW_COLUMNS = ("layer", "step", "width", "depth", "seed", "l1")
SUMMARY_COLUMNS = ("layer", "step", "against", "width", "depth", "points", "slope", "slope_se", "predicted",
                   "verdict")
MAX_STEPS = 10_000


@dataclass(frozen=True)
class CoordRow:
    layer: str  # "1" … str(depth) for the hidden layers (1 is the input layer), "readout"
    step: int  # optimizer steps taken before the measurement
    width: int
    depth: int
    seed: int
    l1: float  # mean |x| over the batch and the units


@dataclass(frozen=True)
class Slope:
    layer: str
    step: int
    against: str  # "width" or "depth"
    width: int | None  # fixed when against depth
    depth: int | None  # fixed when against width
    points: int
    slope: float | None
    slope_se: float | None
    predicted: float | None  # the exponent theory gives, where it gives one
    verdict: str


@dataclass(frozen=True)
class CoordResult:
    params: dict
    rows: tuple[CoordRow, ...]
    slopes: tuple[Slope, ...]

    def row_dicts(self) -> list[dict]:
        return [asdict(row) for row in self.rows]

    def summary_rows(self) -> list[dict]:
        return [asdict(slope) for slope in self.slopes]


def fit_slope(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(slope, standard error) of the least-squares line of log y on log x; the error is nan
    with fewer than three points or a single x."""
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    if sxx == 0:
        return math.nan, math.nan
    slope = float(np.sum((lx - lx.mean()) * (ly - ly.mean())) / sxx)
    if len(lx) < 3:
        return slope, math.nan
    residuals = ly - ly.mean() - slope * (lx - lx.mean())
    return slope, math.sqrt(float(np.sum(residuals**2)) / (len(lx) - 2) / sxx)


def verdict(slope: float, se: float, flat_tol: float = DEFAULT_FLAT_TOL) -> str:
    """flat: |slope| ≤ flat_tol, or within 3 standard errors of 0 when those errors are small
    (≤ flat_tol); grows / shrinks: beyond flat_tol and 3 standard errors; unclear: a fit too
    loose to tell (large errors: l1 is far from a power of width, as when a run overshoots)."""
    known = math.isfinite(se)
    if abs(slope) <= flat_tol or (known and se <= flat_tol and abs(slope) <= SE_FACTOR * se):
        return "flat"
    if not known or abs(slope) > SE_FACTOR * se:
        return "grows" if slope > 0 else "shrinks"
    return "unclear"


def _parse_sizes(values, param: str) -> tuple[int, ...]:
    if isinstance(values, (int, np.integer)):
        values = [values]
    values = tuple(_positive_int(param, v, 1 << 16) for v in values)
    if not values:
        raise InitcliError(param, "needs at least one value")
    if len(set(values)) != len(values):
        raise InitcliError(param, f"lists a value twice: {','.join(map(str, values))}")
    return tuple(sorted(values))


def _measure(network, x: np.ndarray) -> list[tuple[str, float]]:
    """Each Linear's output h = m·a Wᵀ + b, mean |h| over the batch and the units — what mup's
    coord check records, its hooks sitting on the Linear modules — the readout's last."""
    values: list[float] = []

    def record(index, h, branch, state):
        values.append(float(np.mean(np.abs(h), dtype=np.float64)))

    a = x
    for stack, act in network.stages:
        a = forward(stack, act, a, record, keep=False).states[-1].act
    names = [str(i) for i in range(1, len(values))] + ["readout"]
    return list(zip(names, values))


def _run_one(*, width: int, depth: int, seed: int, data_seed: int, scheme: str, activation: str, param: str,
             base_width: float, optimizer: str, lr: float, steps: int, batch: int, outputs: int, readout_zero: bool,
             dtype: str, arch_options: dict, init_options: dict) -> list[CoordRow]:
    streams = seed_streams(data_seed)
    task = make_task("regression", batch, rng=streams["inputs"])
    task = replace(task, y=np.tile(task.y, (1, outputs)))  # every output fits the same surface
    act = get_activation(activation, init_options.get("negative_slope", 0.01))
    init = make_init(scheme, activation=activation, **init_options)
    arch = make_architecture(depth=depth - 1, **arch_options) if arch_options.get("residual") else \
        make_architecture(norm=arch_options.get("norm"))
    network = build_network(init, act, task, [width] * depth, seed=seed, dtype=dtype, arch=arch, param=param,
                            base_width=base_width, readout_zero=readout_zero, outputs=outputs)
    params = network.parameters
    opt = _Optimizer(optimizer, lr, params, network.lr_factors(optimizer))
    x, rows, everything = task.x.astype(network.dtype), [], np.arange(batch)
    with np.errstate(all="ignore"):  # overflow is a result: inf/nan l1, verdict overflow
        for step in range(steps + 1):
            rows += [CoordRow(name, step, width, depth, seed, l1) for name, l1 in _measure(network, x)]
            if step < steps:
                _, _, grads = gradients(network, task, everything)
                opt.step(params, grads)
    return rows


def _slopes(rows: Sequence[CoordRow], against: str, param: str, readout_zero: bool, steps: int,
            flat_tol: float) -> list[Slope]:
    fixed = "depth" if against == "width" else "width"
    groups: dict[tuple, list[CoordRow]] = {}
    for row in rows:
        groups.setdefault((row.layer, row.step, getattr(row, fixed)), []).append(row)
    out = []
    for (layer, step, fixed_value), members in groups.items():
        xs = [getattr(r, against) for r in members]
        if len(set(xs)) < 2:
            continue  # a layer only some depths have
        l1 = [r.l1 for r in members]
        role = "readout" if layer == "readout" else ("input" if layer == "1" else "hidden")
        predicted = predicted_slope(param, role, step, readout_zero=readout_zero) if against == "width" else None
        if not all(math.isfinite(v) for v in l1):
            slope, se, word = None, None, "overflow"
        elif any(v == 0 for v in l1):
            slope, se, word = None, None, "zero"
        else:
            slope, se = fit_slope(xs, l1)
            word = verdict(slope, se, flat_tol)
            se = None if math.isnan(se) else se
        out.append(Slope(layer, step, against, fixed_value if fixed == "width" else None,
                         fixed_value if fixed == "depth" else None, len(members), slope, se, predicted, word))
    order = {"readout": 1 << 30}
    return sorted(out, key=lambda s: (s.width or 0, s.depth or 0, s.step, order.get(s.layer, 0) or int(s.layer)))


def coordcheck(*, widths: Sequence[int] = DEFAULT_WIDTHS, depths: Sequence[int] = (3,), steps: int = 3,
               optimizer: str = "adam", lr: float | None = None, outputs: int = 1, seeds: int = 3, seed: int = 0,
               batch: int = 64, scheme: str = "he-normal", activation: str = "relu", param: str = "sp",
               base_width: float | None = None, readout_init: str | None = None, flat_tol: float = DEFAULT_FLAT_TOL,
               dtype: str = "float32", residual: bool = False, residual_scale: float = 1.0, block: int = 1,
               norm: str | None = None, residual_init: str | None = None,
               progress: Callable[[int], None] | None = None, **init_options) -> CoordResult:
    """The coordinate check of the built-in network at each width and depth (hidden layers),
    `seeds` weight seeds from `seed` on, one batch of `batch` regression samples (drawn from
    `seed`), `steps` optimizer steps at learning rate `lr` (default 1e-3 for Adam, 0.1 for
    SGD) under `param`. `base_width` is the width at which µP's and NTK's factors are 1
    (default: the smallest width, mup's base model); `readout_init` 'zero' or 'scheme'
    (default: zero under µP, as mup's examples initialise it, the scheme's draw otherwise).
    `progress(1)` after each (width, depth, seed) run."""
    widths = _parse_sizes(widths, "widths")
    depths = _parse_sizes(depths, "depths")
    if len(widths) < 2 and len(depths) < 2:
        raise InitcliError("widths", "needs at least two widths (or two --depths) to fit a slope")
    steps = _positive_int("steps", steps, MAX_STEPS) if steps != 0 else 0
    key = str(optimizer).strip().lower()
    if key not in OPTIMIZERS:
        raise InitcliError("optimizer", f"unknown optimizer '{optimizer}'; choose from {', '.join(OPTIMIZERS)}")
    lr = DEFAULT_LR[key] if lr is None else _number_in("lr", lr, "a finite number > 0", lambda v: v > 0)
    outputs = _positive_int("outputs", outputs, 1 << 16)
    seeds = _positive_int("seeds", seeds, 1000)
    seed = check_seed(seed)
    batch = _positive_int("batch", batch, 1 << 20)
    if batch < 2:
        raise InitcliError("batch", "must be at least 2: the task's inputs are standardised by their spread")
    param = check_param(param)
    base_width = float(widths[0]) if base_width is None else check_base_width(base_width)
    if readout_init is None:
        readout_init = "zero" if param == "mup" else "scheme"
    readout_init = str(readout_init).strip().lower()
    if readout_init not in READOUT_INITS:
        raise InitcliError("readout_init", f"unknown readout init '{readout_init}'; choose from "
                                           f"{', '.join(READOUT_INITS)}")
    flat_tol = _number_in("flat_tol", flat_tol, "a number ≥ 0", lambda v: v >= 0)
    dtype = check_dtype(dtype).name
    if get_scheme(scheme).kind == "lsuv":
        raise InitcliError("scheme", "lsuv rescales every layer from the data, over the parametrization's factors")
    make_init(scheme, activation=activation, **init_options)
    get_activation(activation, init_options.get("negative_slope", 0.01))
    arch_options = {"residual": residual, "residual_scale": residual_scale, "block": block, "norm": norm,
                    "residual_init": residual_init}
    for depth in depths:
        if residual and depth < 2:
            raise InitcliError("depths", "a residual stack needs at least two hidden layers: the first changes "
                                         "the width")
        arch = make_architecture(depth=depth - 1, **arch_options) if residual else make_architecture(
            False, residual_scale, block, norm, residual_init)
        if arch.residual and (depth - 1) % arch.block:
            raise InitcliError("block", f"{depth - 1} residual layers do not split into blocks of {arch.block}")
        if arch.residual_init is not None:
            _check_residual_init_trains(arch, [scheme])
    itemsize = np.dtype(dtype).itemsize
    widest, deepest = widths[-1], depths[-1]
    # weights with their gradients and Adam's moments; activations, φ' and δ of the batch
    check_memory(deepest * widest * widest * itemsize * 5 + batch * deepest * widest * (itemsize * 4 + 8),
                 dtype=dtype, options=("--widths", "--depths", "--batch"))
    rows: list[CoordRow] = []
    with blas_threads_limited(1):  # one thread: the bytes do not depend on the machine
        for depth in depths:
            for width in widths:
                for i in range(seeds):
                    rows += _run_one(width=width, depth=depth, seed=seed + i, data_seed=seed, scheme=scheme,
                                     activation=activation, param=param, base_width=base_width, optimizer=key,
                                     lr=lr, steps=steps, batch=batch, outputs=outputs,
                                     readout_zero=readout_init == "zero", dtype=dtype, arch_options=arch_options,
                                     init_options=init_options)
                    if progress is not None:
                        progress(1)
    slopes = []
    if len(widths) > 1:
        slopes += _slopes(rows, "width", param, readout_init == "zero", steps, flat_tol)
    if len(depths) > 1:
        slopes += _slopes(rows, "depth", param, readout_init == "zero", steps, flat_tol)
    init = make_init(scheme, activation=activation, **init_options)
    arch = (make_architecture(depth=depths[0] - 1, **arch_options) if residual
            else make_architecture(False, residual_scale, block, norm))
    params = {**init.params(), "param": param, "base_width": base_width, "readout_init": readout_init,
              "widths": list(widths), "depths": list(depths), "steps": steps, "optimizer": key, "lr": lr,
              "outputs": outputs, "seeds": seeds, "seed": seed, "batch": batch, "task": "regression",
              "flat_tol": flat_tol, "dtype": dtype, **arch.params()}
    return CoordResult(params, tuple(rows), tuple(slopes))
