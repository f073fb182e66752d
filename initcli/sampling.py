"""Draw the weights of a stack or of one tensor and measure them against the formula."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import __version__
from .engine import build_stack, seed_streams
from .errors import InitcliError
from .files import atomic_output
from .propagation import check_dtype, check_memory, check_seed, check_std, stack_sizes
from .schemes import Init, compute_fans, gaussian, make_init

DEFAULT_SIZES = (784, 256, 256, 10)


@dataclass(frozen=True)
class WeightStats:
    """One drawn tensor: its shape (torch layout), fans, the formula's std, what was drawn."""

    layer: int
    shape: str
    fan_in: int
    fan_out: int
    expected_std: float
    mean: float
    std: float
    min: float
    max: float
    expected_mean: float
    expected_limit: float | None  # uniform limit, truncation point, constant value; None for normal
    std_ratio: float | None  # std / expected_std; None where the expected std is 0
    distribution: str


WEIGHT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(WeightStats))


@dataclass(frozen=True)
class SampleResult:
    params: dict
    layers: tuple[WeightStats, ...]
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    def rows(self) -> list[dict]:
        return [asdict(layer) for layer in self.layers]


def _measure(layer: int, init: Init, w: np.ndarray) -> WeightStats:
    fan_in, fan_out = compute_fans(w.shape)
    expected = init.expected_std(w.shape)
    w64 = w.astype(np.float64, copy=False)
    std = float(w64.std())
    distribution = init.distribution if init.scheme.kind in ("scaling", "fixed") else init.scheme.kind
    return WeightStats(
        layer=layer, shape="x".join(map(str, w.shape)), fan_in=fan_in, fan_out=fan_out,
        expected_std=expected, mean=float(w64.mean()), std=std, min=float(w64.min()), max=float(w64.max()),
        expected_mean=init.expected_mean(), expected_limit=init.bound(w.shape),
        std_ratio=std / expected if expected > 0 else None, distribution=distribution,
    )


def sample(
    scheme: str | Init = "he-normal",
    *,
    sizes: Sequence[int] | None = None,
    shape: Sequence[int] | None = None,
    bias_std: float = 0.0,
    seed: int = 0,
    dtype: str = "float32",
    activation: str = "relu",
    **init_options,
) -> SampleResult:
    """Draw one matrix per consecutive pair of `sizes` (default 784,256,256,10), or one tensor
    of `shape` (torch layout, e.g. 64,3,7,7), with the same seed streams as `propagate`."""
    init = scheme if isinstance(scheme, Init) else make_init(scheme, activation=activation, **init_options)
    if init.scheme.kind == "lsuv":
        raise InitcliError("scheme", "lsuv is data-driven: it rescales each layer on a batch of inputs, so use it "
                                     "with propagate, compare or train")
    np_dtype = check_dtype(dtype)
    seed = check_seed(seed)
    bias_std = check_std("bias_std", bias_std)
    if shape is not None:
        if sizes is not None:
            raise InitcliError("shape", "give either --shape or --sizes, not both")
        shape = tuple(int(d) for d in shape)
        compute_fans(shape)  # refuses rank < 2 and non-positive dimensions
        check_memory(math.prod(shape) * (8 + np_dtype.itemsize) * 2)
        streams = seed_streams(seed)
        weights = (init.sample(shape, streams["weights"], np_dtype),)
        biases = ((bias_std * gaussian(streams["biases"], (shape[0],))).astype(np_dtype),)
        params_shape = {"shape": list(shape)}
    else:
        stack_sizes_ = stack_sizes(DEFAULT_SIZES if sizes is None else sizes)
        check_memory(sum(a * b for a, b in zip(stack_sizes_[:-1], stack_sizes_[1:], strict=False)) * (8 + np_dtype.itemsize) * 2)
        stack = build_stack(init, stack_sizes_, bias_std=bias_std, seed=seed, dtype=np_dtype)
        weights, biases = stack.weights, stack.biases
        params_shape = {"sizes": list(stack_sizes_)}
    params = {**init.params(), **params_shape, "bias_std": bias_std, "dtype": np_dtype.name, "seed": seed}
    layers = tuple(_measure(i, init, w) for i, w in enumerate(weights, start=1))
    return SampleResult(params, layers, weights, biases)


def save_npz(result: SampleResult, path: str, *, force: bool = False) -> None:
    """Write weight_1…, bias_1… and the run's parameters (a JSON string in `metadata`) to an
    .npz file, atomically. Nothing in it needs pickle: np.load(allow_pickle=False) reads it."""
    arrays = {}
    for i, (w, b) in enumerate(zip(result.weights, result.biases, strict=False), start=1):
        arrays[f"weight_{i}"] = w
        arrays[f"bias_{i}"] = b
    metadata = {"initcli_version": __version__, "layout": "torch (out, in, *kernel)", **result.params}
    arrays["metadata"] = np.array(json.dumps(metadata))
    with atomic_output(path, "save", force=force, suffix=".npz") as handle:
        np.savez(handle, **arrays)


def load_npz(path: str) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Weights, biases and metadata from a file written by `save_npz` (initcli sample --save).

    Read with allow_pickle=False, so a file cannot run code. Refused with a one-line error
    naming --weights: a missing, unreadable or corrupt file, missing or non-contiguous
    weight_i/bias_i arrays, non-float or non-finite values, shapes that do not chain into a
    stack, and metadata that disagrees with the arrays.
    """
    import zipfile

    def refuse(why: str):
        raise InitcliError("weights", f"'{path}': {why}")

    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # an .npz file is a zip archive
                refuse("is not an .npz file (it is not a zip archive)")
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except InitcliError:
        raise
    except FileNotFoundError:
        refuse("no such file")
    except IsADirectoryError:
        refuse("is a folder, not an .npz file")
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        refuse(f"not a readable .npz file ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")
    if "metadata" not in arrays:
        refuse("has no metadata: write it with `initcli sample --save`")
    try:
        metadata = json.loads(str(arrays.pop("metadata")))
    except (ValueError, TypeError):
        refuse("its metadata is not valid JSON")
    if not isinstance(metadata, dict) or "layout" not in metadata:
        refuse("its metadata does not describe an initcli weight file")
    count = sum(1 for name in arrays if name.startswith("weight_"))
    expected = {f"weight_{i}" for i in range(1, count + 1)} | {f"bias_{i}" for i in range(1, count + 1)}
    if count == 0 or set(arrays) != expected:
        refuse(f"expected arrays weight_1…weight_n and bias_1…bias_n, found {', '.join(sorted(arrays)) or 'none'}")
    weights = [arrays[f"weight_{i}"] for i in range(1, count + 1)]
    biases = [arrays[f"bias_{i}"] for i in range(1, count + 1)]
    for i, (w, b) in enumerate(zip(weights, biases), start=1):
        if w.dtype.kind != "f" or b.dtype.kind != "f":
            refuse(f"weight_{i} or bias_{i} is not floating point ({w.dtype}, {b.dtype})")
        if w.ndim != 2:
            refuse(f"weight_{i} has shape {w.shape}; propagate needs a stack of 2-D (out, in) matrices")
        if b.shape != (w.shape[0],):
            refuse(f"bias_{i} has shape {b.shape}, expected ({w.shape[0]},)")
        if i > 1 and w.shape[1] != weights[i - 2].shape[0]:
            refuse(f"weight_{i} takes {w.shape[1]} inputs but layer {i - 1} gives {weights[i - 2].shape[0]}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            refuse(f"weight_{i} or bias_{i} holds inf or nan")
    sizes = [weights[0].shape[1], *(w.shape[0] for w in weights)]
    if "sizes" in metadata and list(metadata["sizes"]) != sizes:
        refuse(f"its metadata says sizes {metadata['sizes']} but the arrays chain as {sizes}")
    return weights, biases, metadata
