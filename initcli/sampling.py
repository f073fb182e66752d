"""Draw the weights of a stack or of one tensor and measure them against the formula."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import __version__
from .activations import get_activation
from .checks import check_dtype, check_memory, check_seed, positive_int, stack_sizes
from .engine import build_stack, make_architecture, seed_streams
from .errors import InitcliError
from .files import atomic_output
from .lsuv import DEFAULT_MAX_ITER, DEFAULT_TOL, check_lsuv_options, lsuv
from .schemes import Init, check_weight_scale, gaussian, make_init

DEFAULT_SIZES = (784, 256, 256, 10)


@dataclass(frozen=True)
class WeightStats:
    """One drawn tensor: its shape (torch layout), fans, the formula's std, what was drawn."""

    layer: int
    shape: str
    fan_in: int | None  # None for a 1-D tensor (a bias vector has no fans)
    fan_out: int | None
    expected_std: float | None  # None for lsuv, whose scale comes from the data
    mean: float
    std: float
    min: float
    max: float
    expected_mean: float | None
    expected_limit: float | None  # uniform limit, truncation point, constant value; None for normal
    std_ratio: float | None  # std / expected_std; None where the expected std is 0 or unknown
    distribution: str


WEIGHT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(WeightStats))


@dataclass(frozen=True)
class SampleResult:
    params: dict
    layers: tuple[WeightStats, ...]
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]  # empty for a 1-D --shape, which is itself a bias vector
    lsuv_iterations: tuple[int, ...] | None = None  # rescalings per layer, for lsuv

    def rows(self) -> list[dict]:
        return [asdict(layer) for layer in self.layers]


def _measure(layer: int, init: Init, w: np.ndarray, *, calibrated: bool = False) -> WeightStats:
    fan_in, fan_out = init.fans(w.shape) if w.ndim >= 2 else (None, None)
    expected = None if calibrated else init.expected_std(w.shape)
    w64 = w.astype(np.float64, copy=False)
    std = float(w64.std())
    distribution = init.distribution if init.kind in ("scaling", "fixed") else init.kind
    return WeightStats(
        layer=layer, shape="x".join(map(str, w.shape)), fan_in=fan_in, fan_out=fan_out,
        expected_std=expected, mean=float(w64.mean()), std=std, min=float(w64.min()), max=float(w64.max()),
        expected_mean=None if calibrated else init.expected_mean(w.shape),
        expected_limit=None if calibrated else init.bound(w.shape),
        std_ratio=std / expected if expected else None, distribution=distribution,
    )


DEFAULT_BATCH = 512  # propagate's default batch, so that sample --scheme lsuv calibrates on the same inputs


def sample(
    scheme: str | Init = "he-normal",
    *,
    sizes: Sequence[int] | None = None,
    shape: Sequence[int] | None = None,
    bias_std: float = 0.0,
    seed: int = 0,
    dtype: str = "float32",
    activation: str = "relu",
    batch: int | None = None,
    input_std: float = 1.0,
    lsuv_tol: float = DEFAULT_TOL,
    lsuv_max_iter: int = DEFAULT_MAX_ITER,
    residual_init: str | None = None,
    block: int = 1,
    **init_options,
) -> SampleResult:
    """Draw one matrix per consecutive pair of `sizes` (default 784,256,256,10), or one tensor
    of `shape` (torch layout, e.g. 64,3,7,7; 1-D, a bias vector, for the schemes without
    fans), with the same seed streams as `propagate`.

    lsuv calibrates the stack as propagate does: on `batch` (default 512) N(0, input_std²)
    inputs from the seed's input stream, so `propagate` with the same seed, sizes, batch and
    input_std runs these very weights. `batch`, `input_std` and the lsuv options are used
    by lsuv only. `residual_init` (with `block` layers per branch) applies a residual-init
    preset's factors to the drawn stack, as `propagate --residual --residual-init` does, so
    the weights can be saved; `expected_std` stays the scheme's, and `std_ratio` shows the
    preset's factor."""
    init = scheme if isinstance(scheme, Init) else make_init(scheme, activation=activation, **init_options)
    np_dtype = check_dtype(dtype)
    seed = check_seed(seed)
    bias_std = check_weight_scale("bias_std", bias_std)
    calibrate = init.kind == "lsuv"
    if calibrate:
        batch = positive_int("batch", DEFAULT_BATCH if batch is None else batch)
        input_std = check_weight_scale("input_std", input_std)
        lsuv_tol, lsuv_max_iter = check_lsuv_options(lsuv_tol, lsuv_max_iter)
    iterations = None
    presets = residual_init is not None and str(residual_init).strip().lower() != "none"
    if presets and calibrate:
        raise InitcliError("residual_init", "does not apply to lsuv, which rescales every layer from the data")
    if shape is not None and presets:
        raise InitcliError("residual_init", "applies to a stack of --sizes, not to one --shape tensor")
    if shape is not None:
        if sizes is not None:
            raise InitcliError("shape", "give either --shape or --sizes, not both")
        if calibrate:
            raise InitcliError("shape", "lsuv calibrates a stack of layers on a batch of inputs, which one "
                                        "tensor is not: give --sizes instead")
        shape = tuple(int(d) for d in shape)
        if not shape:
            raise InitcliError("shape", "needs at least one dimension")
        if len(shape) == 1 and bias_std:
            raise InitcliError("bias_std", "a 1-D --shape is itself a bias vector: it has no biases of its own")
        check_memory(math.prod(shape) * (8 + np_dtype.itemsize) * 2, dtype=np_dtype, options=("--shape",))
        streams = seed_streams(seed)
        weights = (init.sample(shape, streams["weights"], np_dtype),)  # refuses what the scheme cannot take
        biases = () if len(shape) == 1 else (
            (bias_std * gaussian(streams["biases"], (shape[0],))).astype(np_dtype),)
        params_shape = {"shape": list(shape)}
    else:
        stack_sizes_ = stack_sizes(DEFAULT_SIZES if sizes is None else sizes)
        needed = sum(a * b for a, b in zip(stack_sizes_[:-1], stack_sizes_[1:], strict=False)) * (8 + np_dtype.itemsize) * 2
        options: tuple[str, ...] = ("--sizes",)
        if calibrate:  # the inputs, one layer's pre-activations and activations, LSUV's copy of the weights
            needed += batch * max(stack_sizes_) * (np_dtype.itemsize * 3 + 8)
            options = ("--sizes", "--batch")
        check_memory(needed, dtype=np_dtype, options=options)
        arch = (make_architecture(True, 1.0, block, None, residual_init, depth=len(stack_sizes_) - 1) if presets
                else make_architecture(block=block))
        stack = build_stack(init, stack_sizes_, bias_std=bias_std, seed=seed, dtype=np_dtype, arch=arch)
        if calibrate:
            # the inputs propagate draws for this seed (propagation.run_inputs)
            x = gaussian(seed_streams(seed)["inputs"], (batch, stack_sizes_[0]), np_dtype) * np_dtype.type(input_std)
            act = get_activation(init.activation, init.negative_slope)
            with np.errstate(all="ignore"):
                stack, iterations = lsuv(stack, act, x, tol=lsuv_tol, max_iter=lsuv_max_iter)
        weights, biases = stack.weights, stack.biases
        params_shape = {"sizes": list(stack_sizes_)}
    params = {**init.params(), **params_shape, "bias_std": bias_std, "dtype": np_dtype.name, "seed": seed}
    if presets:
        params.update(arch.params())
    if calibrate:
        params.update(batch=batch, input_std=input_std, lsuv_tol=lsuv_tol, lsuv_max_iter=lsuv_max_iter,
                      lsuv_iterations=list(iterations))
    layers = tuple(_measure(i, init, w, calibrated=calibrate) for i, w in enumerate(weights, start=1))
    return SampleResult(params, layers, weights, biases, iterations)


def save_npz(result: SampleResult, path: str, *, force: bool = False) -> None:
    """Write weight_1…, bias_1… and the run's parameters (a JSON string in `metadata`) to an
    .npz file, atomically. Nothing in it needs pickle: np.load(allow_pickle=False) reads it."""
    arrays = {}
    for i, w in enumerate(result.weights, start=1):
        arrays[f"weight_{i}"] = w
    for i, b in enumerate(result.biases, start=1):  # none for a 1-D --shape
        arrays[f"bias_{i}"] = b
    metadata = {"initcli_version": __version__, "layout": "torch (out, in, *kernel)", **result.params}
    arrays["metadata"] = np.array(json.dumps(metadata))
    with atomic_output(path, "save", force=force, suffix=".npz") as handle:
        np.savez(handle, **arrays)


# Reading them back lives in initcli.weightfile (propagate imports it without sampling).
from .weightfile import WeightFile, inspect_npz, load_npz  # noqa: E402, F401
