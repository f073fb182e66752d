"""Weight files written by `initcli sample --save` (.npz, torch layout), read back safely.

Read without pickle, and checked from the .npy headers (names, shapes, dtypes, metadata,
declared size against the memory guard) before any array is decompressed. `propagate
--weights` reads through here; `sampling` writes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from .checks import check_memory
from .errors import InitcliError
from .files import check_input_file

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
