"""The coordinate check of initcli's own network (`initcli.training`'s Linear → activation
layers and a linear readout) under --param, optionally a residual stack."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ..activations import get_activation
from ..checks import check_dtype, check_memory, positive_int
from ..engine import forward, make_architecture, seed_streams
from ..errors import InitcliError
from ..parametrization import check_base_width, check_param, predicted_slope
from ..schemes import get_scheme, make_init
from ..threads import blas_threads_limited
from ..training import Optimizer, build_network, check_residual_init_trains, gradients, make_task
from .options import DEFAULT_WIDTHS, check_training, parse_sizes
from .slopes import DEFAULT_FLAT_TOL, CoordResult, CoordRow, Slope, group_slopes

READOUT_INITS = ("scheme", "zero")


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
    opt = Optimizer(optimizer, lr, params, network.lr_factors(optimizer))
    x, rows, everything = task.x.astype(network.dtype), [], np.arange(batch)
    with np.errstate(all="ignore"):  # overflow is a result: inf/nan l1, verdict overflow
        for step in range(steps + 1):
            rows += [CoordRow(name, step, width, depth, seed, l1) for name, l1 in _measure(network, x)]
            if step < steps:
                _, _, grads = gradients(network, task, everything)
                opt.step(params, grads)
    return rows


def _builtin_slopes(rows: Sequence[CoordRow], against: str, param: str, readout_zero: bool,
                    flat_tol: float) -> list[Slope]:
    def predict(layer: str, step: int) -> float | None:
        role = "readout" if layer == "readout" else ("input" if layer == "1" else "hidden")
        return predicted_slope(param, role, step, readout_zero=readout_zero)

    return group_slopes(rows, against, flat_tol, predict, lambda layer: 1 << 30 if layer == "readout" else int(layer))


def _check_readout_init(readout_init: str | None, param: str) -> str:
    """--readout-init checked; by default zero under µP (as mup's examples), the scheme's draw otherwise."""
    if readout_init is None:
        readout_init = "zero" if param == "mup" else "scheme"
    readout_init = str(readout_init).strip().lower()
    if readout_init not in READOUT_INITS:
        raise InitcliError("readout_init", f"unknown readout init '{readout_init}'; choose from "
                                           f"{', '.join(READOUT_INITS)}")
    return readout_init


def _check_depths(depths: Sequence[int], scheme: str, arch_options: dict) -> None:
    """Every depth's architecture built and checked: a residual stack's layers split into
    blocks, and its residual-init preset trains with the scheme."""
    residual = arch_options["residual"]
    for depth in depths:
        if residual and depth < 2:
            raise InitcliError("depths", "a residual stack needs at least two hidden layers: the first changes "
                                         "the width")
        arch = make_architecture(depth=depth - 1, **arch_options) if residual else make_architecture(
            False, arch_options["residual_scale"], arch_options["block"], arch_options["norm"],
            arch_options["residual_init"])
        if arch.residual and (depth - 1) % arch.block:
            raise InitcliError("block", f"{depth - 1} residual layers do not split into blocks of {arch.block}")
        if arch.residual_init is not None:
            check_residual_init_trains(arch, [scheme])


def _check_scheme(scheme: str, activation: str, init_options: dict) -> None:
    """The scheme and activation made once, so that a bad name or option stops the run before
    it starts; lsuv is refused (it rescales from data, over the parametrization's factors)."""
    if get_scheme(scheme).kind == "lsuv":
        raise InitcliError("scheme", "lsuv rescales every layer from the data, over the parametrization's factors")
    make_init(scheme, activation=activation, **init_options)
    get_activation(activation, init_options.get("negative_slope", 0.01))


def _check_memory(widest: int, deepest: int, batch: int, dtype: str) -> None:
    """The largest run's memory: weights with their gradients and Adam's moments; activations,
    φ' and δ of the batch."""
    itemsize = np.dtype(dtype).itemsize
    check_memory(deepest * widest * widest * itemsize * 5 + batch * deepest * widest * (itemsize * 4 + 8),
                 dtype=dtype, options=("--widths", "--depths", "--batch"))


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
    widths = parse_sizes(widths, "widths")
    depths = parse_sizes(depths, "depths")
    if len(widths) < 2 and len(depths) < 2:
        raise InitcliError("widths", "needs at least two widths (or two --depths) to fit a slope")
    checked = check_training(steps=steps, optimizer=optimizer, lr=lr, seeds=seeds, seed=seed, batch=batch,
                             flat_tol=flat_tol)
    steps, key, lr, seeds, seed, batch, flat_tol = (checked[k] for k in ("steps", "optimizer", "lr", "seeds", "seed",
                                                                          "batch", "flat_tol"))
    outputs = positive_int("outputs", outputs, 1 << 16)
    param = check_param(param)
    base_width = float(widths[0]) if base_width is None else check_base_width(base_width)
    readout_init = _check_readout_init(readout_init, param)
    dtype = check_dtype(dtype).name
    _check_scheme(scheme, activation, init_options)
    arch_options = {"residual": residual, "residual_scale": residual_scale, "block": block, "norm": norm,
                    "residual_init": residual_init}
    _check_depths(depths, scheme, arch_options)
    _check_memory(widths[-1], depths[-1], batch, dtype)
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
        slopes += _builtin_slopes(rows, "width", param, readout_init == "zero", flat_tol)
    if len(depths) > 1:
        slopes += _builtin_slopes(rows, "depth", param, readout_init == "zero", flat_tol)
    init = make_init(scheme, activation=activation, **init_options)
    arch = (make_architecture(depth=depths[0] - 1, **arch_options) if residual
            else make_architecture(False, residual_scale, block, norm))
    params = {**init.params(), "param": param, "base_width": base_width, "readout_init": readout_init,
              "widths": list(widths), "depths": list(depths), "steps": steps, "optimizer": key, "lr": lr,
              "outputs": outputs, "seeds": seeds, "seed": seed, "batch": batch, "task": "regression",
              "flat_tol": flat_tol, "dtype": dtype, **arch.params()}
    return CoordResult(params, tuple(rows), tuple(slopes))


