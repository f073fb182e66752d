"""Draw the weights of a stack or of one tensor and measure them against the formula."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import __version__
from .activations import get_activation
from .engine import build_stack, seed_streams
from .errors import InitcliError
from .files import atomic_output, check_input_file
from .lsuv import DEFAULT_MAX_ITER, DEFAULT_TOL, check_lsuv_options, lsuv
from .propagation import _positive_int, check_dtype, check_memory, check_seed, stack_sizes
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
    **init_options,
) -> SampleResult:
    """Draw one matrix per consecutive pair of `sizes` (default 784,256,256,10), or one tensor
    of `shape` (torch layout, e.g. 64,3,7,7; 1-D, a bias vector, for the schemes without
    fans), with the same seed streams as `propagate`.

    lsuv calibrates the stack as propagate does: on `batch` (default 512) N(0, input_std²)
    inputs from the seed's input stream, so `propagate` with the same seed, sizes, batch and
    input_std runs these very weights. `batch`, `input_std` and the lsuv options are used
    by lsuv only."""
    init = scheme if isinstance(scheme, Init) else make_init(scheme, activation=activation, **init_options)
    np_dtype = check_dtype(dtype)
    seed = check_seed(seed)
    bias_std = check_weight_scale("bias_std", bias_std)
    calibrate = init.kind == "lsuv"
    if calibrate:
        batch = _positive_int("batch", DEFAULT_BATCH if batch is None else batch)
        input_std = check_weight_scale("input_std", input_std)
        lsuv_tol, lsuv_max_iter = check_lsuv_options(lsuv_tol, lsuv_max_iter)
    iterations = None
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
        stack = build_stack(init, stack_sizes_, bias_std=bias_std, seed=seed, dtype=np_dtype)
        if calibrate:
            # the inputs propagate draws for this seed (propagation._inputs)
            x = gaussian(seed_streams(seed)["inputs"], (batch, stack_sizes_[0]), np_dtype) * np_dtype.type(input_std)
            act = get_activation(init.activation, init.negative_slope)
            with np.errstate(all="ignore"):
                stack, iterations = lsuv(stack, act, x, tol=lsuv_tol, max_iter=lsuv_max_iter)
        weights, biases = stack.weights, stack.biases
        params_shape = {"sizes": list(stack_sizes_)}
    params = {**init.params(), **params_shape, "bias_std": bias_std, "dtype": np_dtype.name, "seed": seed}
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


_METADATA_MAX = 1 << 20  # bytes of metadata JSON: far more than initcli writes, far less than a bomb
_HEADER_READERS = {(1, 0): "read_array_header_1_0", (2, 0): "read_array_header_2_0"}


@dataclass(frozen=True)
class WeightFile:
    """What an .npz weight file declares, read from its .npy headers and its metadata
    without reading any weight array: `shapes` maps weight_i/bias_i to (shape, dtype)."""

    path: str
    shapes: dict
    metadata: dict

    @property
    def depth(self) -> int:
        return sum(1 for name in self.shapes if name.startswith("weight_"))

    @property
    def sizes(self) -> list[int]:
        return [self.shapes["weight_1"][0][1], *(self.shapes[f"weight_{i}"][0][0] for i in range(1, self.depth + 1))]

    @property
    def nbytes(self) -> int:
        """The bytes the arrays take once read."""
        return sum(math.prod(shape) * dtype.itemsize for shape, dtype in self.shapes.values())


def _refuse(path, why: str):
    raise InitcliError("weights", f"'{path}': {why}")


def _member_header(archive, info) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from a member's .npy header, decompressing only its start."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        reader = _HEADER_READERS.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        return getattr(np.lib.format, reader)(member)


def inspect_npz(path: str) -> WeightFile:
    """Check a weight file (initcli sample --save) from its headers alone: it must be a
    regular file (a FIFO, folder or device is refused before it is opened), a zip of .npy
    members weight_1…weight_n, bias_1…bias_n and a `metadata` JSON string; every array 2-D
    (biases 1-D), floating point, with positive sizes that chain into a stack; the metadata
    an object whose `sizes`, `seed` and `scheme` (where present) have the right types and
    agree with the arrays. Nothing here reads an array, so a file whose arrays declare more
    than memory holds can be refused (`load_npz`) before any is decompressed."""
    import zipfile

    check_input_file(path, "weights")
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # an .npz file is a zip archive
                _refuse(path, "is not an .npz file (it is not a zip archive)")
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                _refuse(path, "holds two members with one name")
            headers = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    _refuse(path, f"holds '{info.filename[:80]}', which is not an .npy array")
                headers[info.filename[:-4]] = (_member_header(archive, info), info)
            if "metadata" not in headers:
                _refuse(path, "has no metadata: write it with `initcli sample --save`")
            (meta_shape, _, meta_dtype), meta_info = headers.pop("metadata")
            if meta_shape != () or meta_dtype.kind != "U" or meta_dtype.itemsize > _METADATA_MAX:
                _refuse(path, "its metadata is not a JSON string")
            with archive.open(meta_info) as member:
                text = str(np.lib.format.read_array(member, allow_pickle=False))
    except InitcliError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, SyntaxError, RuntimeError) as exc:
        # ValueError/SyntaxError: a malformed .npy header; RuntimeError: an encrypted member
        _refuse(path, f"not a readable .npz file ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
        _refuse(path, "its metadata is not valid JSON (or is nested too deeply)")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("layout"), str):
        _refuse(path, "its metadata does not describe an initcli weight file")
    count = sum(1 for name in headers if name.startswith("weight_"))
    expected = {f"weight_{i}" for i in range(1, count + 1)} | {f"bias_{i}" for i in range(1, count + 1)}
    if count == 0 or set(headers) != expected:
        _refuse(path, f"expected arrays weight_1…weight_n and bias_1…bias_n, found "
                      f"{', '.join(sorted(headers))[:200] or 'none'}")
    shapes = {}
    for i in range(1, count + 1):
        (w_shape, _, w_dtype), _ = headers[f"weight_{i}"]
        (b_shape, _, b_dtype), _ = headers[f"bias_{i}"]
        if w_dtype.kind != "f" or b_dtype.kind != "f":
            _refuse(path, f"weight_{i} or bias_{i} is not floating point ({w_dtype}, {b_dtype})")
        if len(w_shape) != 2:
            _refuse(path, f"weight_{i} has shape {w_shape}; propagate needs a stack of 2-D (out, in) matrices")
        if 0 in w_shape:
            _refuse(path, f"weight_{i} has shape {w_shape}: a layer needs at least one row and one column")
        if b_shape != (w_shape[0],):
            _refuse(path, f"bias_{i} has shape {b_shape}, expected ({w_shape[0]},)")
        if i > 1 and w_shape[1] != shapes[f"weight_{i - 1}"][0][0]:
            _refuse(path, f"weight_{i} takes {w_shape[1]} inputs but layer {i - 1} gives "
                          f"{shapes[f'weight_{i - 1}'][0][0]}")
        shapes[f"weight_{i}"] = (w_shape, w_dtype)
        shapes[f"bias_{i}"] = (b_shape, b_dtype)
    found = WeightFile(str(path), shapes, metadata)
    if "sizes" in metadata:
        saved = metadata["sizes"]
        if not isinstance(saved, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in saved):
            _refuse(path, "its metadata's sizes is not a list of integers")
        if saved != found.sizes:
            _refuse(path, f"its metadata says sizes {saved[:20]} but the arrays chain as {found.sizes}")
    if "seed" in metadata and (isinstance(metadata["seed"], bool) or not isinstance(metadata["seed"], int)):
        _refuse(path, "its metadata's seed is not an integer")
    if "scheme" in metadata and not isinstance(metadata["scheme"], str):
        _refuse(path, "its metadata's scheme is not a name")
    return found


def load_npz(path: str, *, reserve: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Weights, biases and metadata from a file written by `save_npz` (initcli sample --save).

    Checked first from its headers (`inspect_npz`); then the arrays' declared size, plus
    `reserve` bytes the caller will need beside them, goes through the memory guard before
    any array is read, so a small file declaring huge arrays is refused without being
    decompressed. Read with allow_pickle=False, so a file cannot run code. Every refusal
    is a one-line error naming --weights; so are arrays shorter than declared, a corrupt
    archive, and inf or nan values.
    """
    import zipfile

    found = inspect_npz(path)
    try:
        check_memory(found.nbytes + reserve, options=("--weights",))
    except InitcliError as exc:
        _refuse(path, f"its arrays declare {found.nbytes / 2**30:.1f} GiB: {exc.message}")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in found.shapes:
                with archive.open(name + ".npy") as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, SyntaxError, RuntimeError) as exc:
        _refuse(path, f"not a readable .npz file ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")
    for name, (shape, dtype) in found.shapes.items():
        if arrays[name].shape != shape or arrays[name].dtype != dtype:  # changed between the two reads
            _refuse(path, f"{name} changed while it was read")
    weights = [arrays[f"weight_{i}"] for i in range(1, found.depth + 1)]
    biases = [arrays[f"bias_{i}"] for i in range(1, found.depth + 1)]
    for i, (w, b) in enumerate(zip(weights, biases), start=1):
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            _refuse(path, f"weight_{i} or bias_{i} holds inf or nan")
    return weights, biases, found.metadata
