"""One reader per weight-file format, behind one interface: a `Source` lists its tensors'
names, shapes and dtypes up front (headers only, where the format allows) and reads one tensor
at a time, as a numpy array (or an array-like that numpy reduces over, for bf16/fp8). Nothing
here runs a file's code: .npz is read with allow_pickle=False, PyTorch files only through
`torch.load(weights_only=True)`, ONNX graphs are walked, never executed.

Formats: .safetensors (its header checked, then each tensor memory-mapped), a folder of
shards (`*.safetensors.index.json`, `pytorch_model*.bin.index.json`, else every
`*.safetensors` in it), .npz/.npy, .pt/.pth/.bin/.ckpt (state_dicts, also inside the usual
checkpoint wrappers; needs torch) and .onnx (initializers, Constant nodes and If/Loop/Scan
subgraphs; needs onnx). Every failure to read a file is one InitcliError line naming the path;
an odd tensor inside a good file is the caller's business (`Entry.unreadable` says why it
gets a row with a note instead of values).

Sizes are checked from headers before anything is read or decompressed: a small file that
declares huge arrays is refused, not allocated.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InitcliError
from ..optional import require

SUFFIXES = (".safetensors", ".npz", ".npy", ".pt", ".pth", ".bin", ".ckpt", ".jit", ".onnx")
_HEADER_MAX = 100 * 2**20  # safetensors caps its JSON header at 100 MB
_INDEX_MAX = 64 * 2**20  # a shard index: ~100 kB for the largest public models
CONFIG_MAX = 2**20  # config.json: a few kB in practice; a bigger one is ignored
_PICKLE_MAX = 64 * 2**20  # a .pt's data.pkl: kB for a state_dict; unpickling costs a multiple of it
_PICKLE_GROWTH = 16  # what unpickling can cost per byte of pickle (a memo reference is 2 bytes)
CHUNK = 1 << 22  # bf16/fp8 codes widened this many at a time


@dataclass(frozen=True)
class Entry:
    """A tensor as the file declares it: its name, shape and dtype (the file's spelling).

    role_hint: what the format knows of the tensor's use ("conv", "linear", "embedding",
    "norm_scale", "norm_shift", "bias", "recurrent"), e.g. from an ONNX op; None when
    only the name and shape can tell. layout_hint: "torch" (out, in, ...) or "keras" (in, out)
    where the format says so. unreadable: why the tensor is not read (it gets a row with this
    note; the rest of the file is inspected)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role_hint: str | None = None
    layout_hint: str | None = None
    unreadable: str | None = None


def refuse(path, message: str) -> InitcliError:
    return InitcliError(None, f"'{path}' {message}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _reading(path):
    """An OSError while reading `path` (a link loop, a folder where a file was expected, an
    I/O error) is a read failure naming it, never mistaken for an output's."""
    try:
        yield
    except OSError as exc:
        raise refuse(path, f"cannot be read ({_why(exc)})") from None


class Source:
    """A weight file: `entries` (in the file's order) and `read(name)`, one array at a time.

    config: the parsed config.json beside the weights (safetensors and torch), or None.
    skipped: (name or group, reason) for what the file holds that is not the model
    (optimizer state, an EMA copy, integer constants of a graph)."""

    path: str
    entries: tuple[Entry, ...]
    format: str
    config: dict | None = None
    skipped: tuple[tuple[str, str], ...] = ()

    def read(self, name: str):
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for entry in self.entries:
            if entry.unreadable is None and entry.dtype != "object":
                yield entry.name, self.read(entry.name)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- JSON beside or inside weights --------------------------------------------------------------


def _no_constants(token: str):
    raise ValueError(f"{token} is not a number JSON allows")


def parse_json(data: bytes | str):
    """JSON as the standard allows it (no NaN/Infinity), nested to any depth without a crash:
    ValueError for anything else (Python's decoder recurses; a RecursionError becomes one)."""
    try:
        return json.loads(data, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _blob_store(folder_real: Path) -> Path | None:
    """A Hugging Face cache keeps a revision's files in …/snapshots/<rev>/ as links into …/blobs/."""
    if folder_real.parent.name == "snapshots":
        return folder_real.parent.parent / "blobs"
    return None


def contained(folder: Path, name: str) -> Path | None:
    """`folder/name` when it stays inside the folder once every link is resolved (or inside
    the blob store of a Hugging Face snapshot folder); None for an absolute name, a `..`, or a
    link out of the folder."""
    if not name or os.path.isabs(name) or "\\" in name or ".." in Path(name).parts or "\0" in name:
        return None
    try:
        root = folder.resolve()
        real = (folder / name).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a link loop (Python before 3.13)
        return None
    if real.is_relative_to(root):
        return folder / name
    blobs = _blob_store(root)
    if blobs is not None and real.is_relative_to(blobs.resolve()):
        return folder / name
    return None


def read_config(folder: Path) -> dict | None:
    """The config.json in `folder` (a model's architecture and init settings), or None when
    absent, too large, not a JSON object, nested too deeply or unreadable: a hint, never an error."""
    try:
        file = contained(folder, "config.json")
        if file is None or not file.is_file() or file.stat().st_size > CONFIG_MAX:
            return None
        config = parse_json(file.read_bytes())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return config if isinstance(config, dict) else None


def _read_index(index: Path) -> dict[str, str]:
    """A sharded checkpoint's weight_map (tensor name -> shard file name)."""
    with _reading(index):
        if not index.is_file():
            raise refuse(index, "is not a regular file")
        if index.stat().st_size > _INDEX_MAX:
            raise refuse(index, f"is larger than a shard index can be ({_INDEX_MAX >> 20} MiB)")
        data = index.read_bytes()
    try:
        weight_map = parse_json(data)["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
        raise refuse(index, f"is not a sharded-checkpoint index ({_why(exc)})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise refuse(index, "is not a sharded-checkpoint index (its weight_map does not map names to files)")
    return weight_map


def _index_shards(index: Path) -> list[Path]:
    folder = index.parent
    weight_map = _read_index(index)
    if not weight_map:
        raise refuse(index, "holds no tensors (its weight_map is empty)")
    files = []
    for shard in dict.fromkeys(weight_map.values()):
        file = contained(folder, shard)
        if file is None and not os.path.isabs(shard) and os.path.islink(folder / shard) \
                and ".." not in Path(shard).parts:
            with _reading(folder / shard):
                os.stat(folder / shard)  # a link that cannot be followed: a read failure naming it
        if file is None:
            raise refuse(index, f"names the shard '{shard}', which lies outside '{folder}': initcli reads only "
                                f"shards inside the checkpoint's folder (or its Hugging Face cache's blobs)")
        with _reading(file):
            if not file.exists():
                raise refuse(index, f"names the shard '{shard}', which is missing from '{folder}'")
            if not file.is_file():
                raise refuse(file, "is not a regular file")
        files.append(file)
    return files


# -- bf16 and fp8, widened where they are read -----------------------------------------------------


def _fp8_table(exponent_bits: int, bias: int, kind: str) -> np.ndarray:
    """The float32 value of each of the 256 fp8 codes. OCP FP8 (`fn`): E4M3 has no inf, its
    NaN is S.1111.111; E5M2 is IEEE-like, with inf and NaN at the top exponent. `fnuz`
    (Graphcore/AMD): no inf, no negative zero, the one NaN is 0x80."""
    mantissa_bits = 7 - exponent_bits
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> mantissa_bits) & ((1 << exponent_bits) - 1)
    mantissa = codes & ((1 << mantissa_bits) - 1)
    normal = (1 + mantissa / 2**mantissa_bits) * 2.0 ** (exponent - bias)
    subnormal = (mantissa / 2**mantissa_bits) * 2.0 ** (1 - bias)
    values = sign * np.where(exponent == 0, subnormal, normal)
    top = (1 << exponent_bits) - 1
    if kind == "ieee":
        values = np.where(exponent == top, np.where(mantissa == 0, sign * np.inf, np.nan), values)
    elif kind == "fn":
        values = np.where((exponent == top) & (mantissa == (1 << mantissa_bits) - 1), np.nan, values)
    else:  # fnuz
        values = np.where(codes == 0x80, np.nan, values)
    return values.astype(np.float32)


_FP8_TABLES = {}


def _table(kind: str) -> np.ndarray:
    if kind not in _FP8_TABLES:
        _FP8_TABLES[kind] = {"e4m3": lambda: _fp8_table(4, 7, "fn"), "e5m2": lambda: _fp8_table(5, 15, "ieee"),
                             "e4m3fnuz": lambda: _fp8_table(4, 8, "fnuz"),
                             "e5m2fnuz": lambda: _fp8_table(5, 16, "fnuz")}[kind]()
    return _FP8_TABLES[kind]


def _widen_into(codes: np.ndarray, kind: str, out: np.ndarray) -> None:
    if kind == "bf16":  # bfloat16 is the top half of a float32
        np.left_shift(codes, 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        np.take(_table(kind), codes, out=out)


def _widen(codes: np.ndarray, kind: str) -> np.ndarray:
    codes = np.asarray(codes)
    out = np.empty(codes.shape, np.float32)
    _widen_into(codes, kind, out)
    return out


class Widened(np.lib.mixins.NDArrayOperatorsMixin):
    """bf16/fp8 codes seen as a float32 array, widened only where they are indexed: a slice or
    a subsample costs its own size, never the whole tensor's (a 256 MiB bf16 tensor would be
    512 MiB as float32). `reshape`, `ravel`, indexing, `np.moveaxis`/`np.transpose`/`.T` stay
    lazy; anything else (ufuncs, operators, other numpy functions, `np.asarray`) sees the whole
    tensor widened chunk by chunk into one float32 array, so it is always right."""

    dtype = np.dtype(np.float32)

    def __init__(self, codes: np.ndarray, kind: str) -> None:
        self._codes, self._kind = codes, kind

    shape = property(lambda self: self._codes.shape)
    size = property(lambda self: self._codes.size)
    ndim = property(lambda self: self._codes.ndim)
    nbytes = property(lambda self: self._codes.size * 4)
    T = property(lambda self: Widened(self._codes.T, self._kind))

    def __len__(self) -> int:
        return len(self._codes)

    def __repr__(self) -> str:
        return f"Widened({self._kind}, shape={self.shape})"

    def reshape(self, *shape, **kwargs) -> Widened:
        return Widened(self._codes.reshape(*shape, **kwargs), self._kind)

    def ravel(self) -> Widened:
        return self.reshape(-1)

    def __getitem__(self, key):
        picked = self._codes[key]
        if isinstance(picked, np.ndarray):
            return _widen(picked, self._kind)
        return _widen(np.asarray(picked), self._kind)[()]

    def __array__(self, dtype=None, copy=None):
        flat = self._codes.reshape(-1)
        out = np.empty(flat.size, np.float32)
        for start in range(0, flat.size, CHUNK):
            _widen_into(flat[start:start + CHUNK], self._kind, out[start:start + CHUNK])
        out = out.reshape(self._codes.shape)
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype, copy=True):
        return np.asarray(self, dtype=dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(_plain(x) for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(_plain(x) for x in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if func in (np.moveaxis, np.transpose, np.swapaxes) and args and args[0] is self:
            return Widened(func(self._codes, *args[1:], **kwargs), self._kind)
        return func(*(_plain(a) for a in args), **{k: _plain(v) for k, v in kwargs.items()})


def _plain(value):
    """A Widened (or a list or tuple holding some) as numpy arrays."""
    if isinstance(value, Widened):
        return np.asarray(value)
    if isinstance(value, (list, tuple)) and any(isinstance(v, Widened) for v in value):
        return type(value)(_plain(v) for v in value)
    return value


# -- memory ------------------------------------------------------------------------------------------


def _check_room(path, needed: int, what: str) -> None:
    """Refuse, before allocating, what would not fit in 90% of the memory available."""
    from ..checks import available_bytes

    available = available_bytes()
    if available is not None and needed > 0.9 * available:
        raise refuse(path, f"{what} about {needed / 2**30:.1f} GiB of memory, but {available / 2**30:.1f} GiB "
                           f"are available")


# -- safetensors -------------------------------------------------------------------------------


# file dtype -> (numpy dtype of the stored codes, widening kind or None)
_SAFETENSORS_DTYPES = {
    "F64": ("<f8", None), "F32": ("<f4", None), "F16": ("<f2", None), "BF16": ("<u2", "bf16"),
    "F8_E4M3": ("u1", "e4m3"), "F8_E5M2": ("u1", "e5m2"),
    "I64": ("<i8", None), "I32": ("<i4", None), "I16": ("<i2", None), "I8": ("i1", None),
    "U64": ("<u8", None), "U32": ("<u4", None), "U16": ("<u2", None), "U8": ("u1", None),
    "BOOL": ("?", None), "C64": ("<c8", None),
}
_UNREAD_DTYPES = {  # dtypes numpy has no values for: a row with this note
    "F8_E8M0": "F8_E8M0 holds block scales (powers of two), not values numpy reads: not read",
    "F4": "F4 (4-bit float) is packed two to a byte: not read",
    "F6_E2M3": "F6_E2M3 (6-bit float) is packed: not read",
    "F6_E3M2": "F6_E3M2 (6-bit float) is packed: not read",
}


class SafetensorsSource(Source):
    """One .safetensors file: its header checked whole (names, dtypes, shapes, offsets inside
    the file and matching the declared sizes), then each tensor memory-mapped when read."""

    format = "safetensors"

    def __init__(self, file: Path) -> None:
        self.path = str(file)
        self.config = read_config(file.parent)
        with _reading(file):
            header, data_start, size = _safetensors_header(file)
        located = sorted((_safetensors_entry(file, name, info, size - data_start) for name, info in header.items()),
                         key=lambda found: found[0])  # the file's order
        self._where = {entry.name: (data_start + begin, entry) for begin, entry in located}
        self.entries = tuple(entry for _, entry in located)

    def read(self, name: str):
        offset, entry = self._where[name]
        storage, kind = _SAFETENSORS_DTYPES[entry.dtype]
        if math.prod(entry.shape) == 0:
            return np.zeros(entry.shape, np.float32 if kind else storage)
        with _reading(self.path):
            codes = np.asarray(np.memmap(self.path, dtype=storage, mode="r", offset=offset, shape=entry.shape))
        return Widened(codes, kind) if kind else codes


def _safetensors_header(file: Path) -> tuple[dict, int, int]:
    """The JSON header (name -> dtype, shape, data_offsets), where the data starts and the
    file's size."""
    info = file.stat()  # an OSError (a link loop, no permission) is named by the caller's _reading
    if not stat.S_ISREG(info.st_mode):
        raise refuse(file, "is not a regular file (a folder, pipe, socket or device)")
    size = info.st_size
    if size == 0:
        raise refuse(file, "is empty")
    with open(file, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise refuse(file, "is truncated (shorter than a .safetensors header)")
        (length,) = struct.unpack("<Q", head)
        if length > min(_HEADER_MAX, size - 8):
            raise refuse(file, "is not a .safetensors file, or is truncated (its header length is impossible)")
        text = handle.read(length)
    try:
        header = parse_json(text)
    except ValueError as exc:  # UnicodeDecodeError too
        raise refuse(file, f"is not a .safetensors file (its header is not JSON: {_why(exc)})") from None
    if not isinstance(header, dict):
        raise refuse(file, "is not a .safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    return header, 8 + length, size


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _safetensors_entry(file: Path, name: str, info, data_size: int) -> tuple[int, Entry]:
    """(offset into the data, Entry), once the header's description of `name` is whole and
    its bytes lie inside the file, exactly as many as its dtype and shape need."""
    def damaged(why: str) -> InitcliError:
        return refuse(file, f"has a damaged header at '{name[:80]}': {why}")

    if not isinstance(info, dict):
        raise damaged("not a tensor description")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise damaged("no dtype")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise damaged("its shape is not a list of sizes")
    if len(shape) > 64 or any(d >= 2**62 for d in shape):  # numpy's limits, whatever the bytes say
        raise damaged(f"its shape has {len(shape)} dimensions or one beyond 2^62")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise damaged("its data_offsets are not two byte offsets")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise damaged(f"its data_offsets {begin}..{end} lie outside the file's {data_size} data bytes")
    shape = tuple(shape)
    if dtype in _SAFETENSORS_DTYPES:
        needed = math.prod(shape) * np.dtype(_SAFETENSORS_DTYPES[dtype][0]).itemsize
        if end - begin != needed:
            raise damaged(f"shape {list(shape)} of {dtype} needs {needed} bytes, its offsets hold {end - begin}")
        return begin, Entry(name, shape, dtype)
    why = _UNREAD_DTYPES.get(dtype, f"dtype {dtype[:20]} is not one initcli reads: not read")
    return begin, Entry(name, shape, dtype, unreadable=why)


# -- shards -------------------------------------------------------------------------------------------


class ShardedSource(Source):
    """A folder of shards read as one file; a tensor name in two shards is refused."""

    def __init__(self, folder: Path, shards: list[Source], config: dict | None) -> None:
        self.path = str(folder)
        self.format = shards[0].format if shards else "safetensors"
        self.config = config
        self._shards = shards
        self._owner = {}
        entries, skipped = [], []
        for shard in shards:
            for entry in shard.entries:
                if entry.name in self._owner:
                    raise refuse(shard.path, f"holds '{entry.name}', which another shard holds too")
                self._owner[entry.name] = shard
                entries.append(entry)
            skipped.extend((f"{Path(shard.path).name}: {what}", why) for what, why in shard.skipped)
        if not entries:
            raise refuse(folder, "holds no tensors")
        self.entries = tuple(entries)
        self.skipped = tuple(skipped)

    def read(self, name: str):
        return self._owner[name].read(name)

    def close(self) -> None:
        for shard in self._shards:
            shard.close()


def _open_folder(folder: Path) -> Source:
    with _reading(folder):
        os.listdir(folder)  # glob would take an unreadable folder for an empty one
        safetensors_indexes = sorted(folder.glob("*.safetensors.index.json"))
        torch_indexes = sorted(folder.glob("*.bin.index.json")) + sorted(folder.glob("*.pt.index.json"))
        loose = sorted(p for p in folder.glob("*.safetensors"))
    config = read_config(folder)
    shards: list[Source] = []
    try:
        if safetensors_indexes:
            for file in _index_shards(safetensors_indexes[0]):
                shards.append(SafetensorsSource(file))
        elif torch_indexes:
            for file in _index_shards(torch_indexes[0]):
                shards.append(TorchSource(file))
        elif loose:
            for file in loose:
                shards.append(SafetensorsSource(file))
        else:
            raise refuse(folder, "is a folder without weights (inspect reads a folder through its "
                                 "*.safetensors.index.json or pytorch_model.bin.index.json, else every "
                                 "*.safetensors in it)")
        return ShardedSource(folder, shards, config)
    except BaseException:
        for shard in shards:
            shard.close()
        raise


# -- npz / npy -----------------------------------------------------------------------------------

_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length in bytes) of a .npy stream."""
    version = np.lib.format.read_magic(stream)
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0,
              (3, 0): getattr(np.lib.format, "_read_array_header", None)}.get(version)
    if reader is None:
        raise ValueError(f"unsupported .npy version {version}")
    if version == (3, 0):
        shape, fortran, dtype = reader(stream, version)
    else:
        shape, fortran, dtype = reader(stream)
    return tuple(int(d) for d in shape), bool(fortran), dtype, stream.tell()


def _dtype_name(dtype: np.dtype) -> str:
    return "object" if dtype.hasobject else dtype.name


class NpzSource(Source):
    """An .npz archive: every member's header read first; a stored member is memory-mapped, a
    compressed one decompressed only after its declared size passed the memory check."""

    format = "npz"

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._members = {}
        entries = []
        try:
            with _reading(path):
                self._zip = zipfile.ZipFile(path)
                for info in self._zip.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    name = info.filename[:-4]
                    if info.flag_bits & 0x1:
                        raise refuse(path, f"holds '{name}' encrypted: initcli reads no encrypted archive")
                    if info.compress_type not in _ZIP_METHODS:
                        raise refuse(path, f"holds '{name}' compressed by a method Python's zipfile does not "
                                           f"know (method {info.compress_type})")
                    with self._zip.open(info) as member:
                        shape, fortran, dtype, start = _npy_header(member)
                    nbytes = math.prod(shape) * dtype.itemsize
                    if nbytes > info.file_size - start:
                        raise refuse(path, f"declares '{name}' as {list(shape)} {dtype} ({nbytes:,} bytes) but "
                                           f"its member holds {max(info.file_size - start, 0):,}")
                    self._members[name] = (info, shape, fortran, dtype, start)
                    entries.append(Entry(name, shape, _dtype_name(dtype)))
        except InitcliError:
            self.close()
            raise
        except (ValueError, EOFError, zipfile.BadZipFile, struct.error, RuntimeError, NotImplementedError,
                SyntaxError) as exc:  # a malformed .npy header, zip damage, an encrypted member
            self.close()
            raise refuse(path, f"is not a readable .npz file ({_why(exc)})") from None
        if not entries:
            self.close()
            raise refuse(path, "holds no arrays")
        self.entries = tuple(entries)

    def read(self, name: str):
        info, shape, fortran, dtype, start = self._members[name]
        order = "F" if fortran else "C"
        try:
            with _reading(self.path):
                if info.compress_type == zipfile.ZIP_STORED and not dtype.hasobject and \
                        math.prod(shape) * dtype.itemsize > 0:
                    offset = _member_data_offset(self.path, info) + start
                    return np.asarray(np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                                order=order))
                _check_room(self.path, math.prod(shape) * dtype.itemsize, f"decompresses '{name}' into")
                with self._zip.open(info) as member:
                    return np.lib.format.read_array(member, allow_pickle=False)
        except InitcliError:
            raise
        except (ValueError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
            raise refuse(self.path, f"cannot be read at '{name}' ({_why(exc)})") from None

    def close(self) -> None:
        archive = getattr(self, "_zip", None)
        if archive is not None:
            archive.close()


def _member_data_offset(path: str, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start: after its local header, whose name and extra
    field lengths may differ from the central directory's."""
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename[:60]}")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


class NpySource(Source):
    format = "npy"

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        try:
            with _reading(path), open(path, "rb") as handle:
                shape, fortran, dtype, start = _npy_header(handle)
                size = os.fstat(handle.fileno()).st_size
        except (ValueError, EOFError, SyntaxError) as exc:
            raise refuse(path, f"is not a readable .npy file ({_why(exc)})") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if not dtype.hasobject and nbytes > size - start:
            raise refuse(path, f"declares {list(shape)} {dtype} ({nbytes:,} bytes) but holds {size - start:,}")
        self.entries = (Entry(path.stem, shape, _dtype_name(dtype)),)

    def read(self, name: str):
        try:
            with _reading(self.path):
                return np.load(self.path, allow_pickle=False, mmap_mode="r")
        except (ValueError, EOFError) as exc:
            raise refuse(self.path, f"cannot be read ({_why(exc)})") from None


# -- PyTorch --------------------------------------------------------------------------------------

# keys under which checkpoints keep the model's weights, most specific first (Lightning and
# most training loops: state_dict; tutorials: model_state_dict; DDP/DeepSpeed: module)
MODEL_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "network", "ema",
              "model_ema", "ema_state_dict")
OPTIMIZER_KEYS = ("optimizer", "optimizer_state", "optimizer_state_dict", "optimizer_states", "optimizers",
                  "optim", "optim_state", "opt", "lr_scheduler", "lr_schedulers", "scheduler", "scaler")
_EMA = ("ema", "model_ema", "ema_state_dict")


class TorchSource(Source):
    """A state_dict (or a checkpoint wrapping one) read with weights_only=True: tensors,
    containers and plain numbers only, never objects. Zip members are checked from the
    archive's directory first (TorchScript refused by name, the pickle's size capped,
    compressed members loaded without mmap after their size passed the memory check)."""

    format = "torch"

    def __init__(self, path: Path) -> None:
        import pickle

        self.path = str(path)
        with _reading(path):  # checked before torch is even imported
            with open(path, "rb") as handle:
                zipped = handle.read(4) == b"PK\x03\x04"
            compressed = _check_torch_zip(path) if zipped else _check_legacy(path)
        torch = require("torch", None, "reading PyTorch .pt/.pth/.bin files")
        self._torch = torch
        self.config = read_config(path.parent)
        try:
            # mmap: the zip format's storages stay on disk until a tensor is read (a compressed
            # member cannot be mapped); torch's warnings are about the file, not for the user
            with warnings.catch_warnings(), _reading(path):
                warnings.simplefilter("ignore")
                loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipped and not compressed)
        except InitcliError:
            raise
        except pickle.UnpicklingError as exc:
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise refuse(path, f"holds Python objects{_objects_in(path, torch)}, not only tensors: initcli never "
                                   f"unpickles objects (torch.load weights_only=True refused it); save "
                                   f"model.state_dict() or a .safetensors file instead") from None
            raise refuse(path, f"is not a readable PyTorch file ({_why(exc)})") from None
        except Exception as exc:  # RuntimeError, EOFError, zipfile errors: damaged or not torch
            raise refuse(path, f"is not a readable PyTorch file ({_why(exc)})") from None
        model, skipped = unwrap_checkpoint(loaded, torch)
        self._tensors = {}
        _flatten(model, self._tensors, torch)
        self.skipped = tuple(skipped)
        if not self._tensors:
            raise refuse(path, "holds no tensors" + (" besides what it skips: " + "; ".join(
                f"{what} ({why})" for what, why in skipped) if skipped else ""))
        self.entries = tuple(_torch_entry(name, t, torch) for name, t in self._tensors.items())

    def read(self, name: str):
        torch = self._torch
        tensor = self._tensors[name].detach()
        if tensor.is_conj():
            tensor = tensor.resolve_conj()
        if tensor.is_neg():
            tensor = tensor.resolve_neg()
        kind = _TORCH_WIDENED.get(str(tensor.dtype).removeprefix("torch."))
        if kind is not None:
            code_dtype = torch.int16 if kind == "bf16" else torch.uint8
            codes = tensor.view(code_dtype).numpy()
            return Widened(codes.view(np.uint16) if kind == "bf16" else codes, kind)
        return tensor.numpy()


_TORCH_WIDENED = {"bfloat16": "bf16", "float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2",
                  "float8_e4m3fnuz": "e4m3fnuz", "float8_e5m2fnuz": "e5m2fnuz"}
_TORCH_NUMPY = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                "uint64", "bool", "complex64", "complex128"}


def _objects_in(path: Path, torch) -> str:
    """' (a.B, c.D)': the classes a torch file's pickle names, found by reading its opcodes
    (nothing is constructed), or '' when they cannot be told."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # torch's scanner stops at protocol 5's FRAME: read the opcodes here
        names = _pickle_globals(path)
    shown = ", ".join(str(n)[:60] for n in names[:3]) + (" …" if len(names) > 3 else "")
    return f" ({shown})" if names else ""


def _pickle_globals(path: Path) -> list[str]:
    """The module.name of every global a zip-format torch file's pickle names, other than
    torch's own and the builtins, by walking its opcodes with pickletools (never executed)."""
    import pickletools

    try:
        with zipfile.ZipFile(path) as archive:
            member = next(i for i in archive.infolist() if i.filename.endswith("/data.pkl"))
            data = archive.read(member)  # its size was capped before torch read it
        strings, memo, found, memoized = [], {}, [], 0
        last = None  # the string the previous opcode pushed, if it pushed one
        for opcode, arg, _ in pickletools.genops(data):
            pushed = None
            if opcode.name.endswith("UNICODE") and isinstance(arg, str):
                pushed = arg
            elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
                pushed = memo.get(arg)
            elif opcode.name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                index = memoized if opcode.name == "MEMOIZE" else arg
                memoized += opcode.name == "MEMOIZE"
                if last is not None:
                    memo[index] = last
                continue  # a memo store leaves the stack as it was
            elif opcode.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if pushed is not None:
                strings.append(pushed)
            last = pushed
    except Exception:  # not a zip, no data.pkl, a malformed pickle: nothing to tell
        return []
    own = ("torch.", "collections.OrderedDict", "builtins.", "_codecs.encode", "numpy.")
    return list(dict.fromkeys(n for n in found if not n.startswith(own)))


def _torch_entry(name: str, tensor, torch) -> Entry:
    """An Entry, with the reason when numpy cannot hold the tensor's values."""
    if getattr(tensor, "is_nested", False):
        return Entry(name, (), "nested", unreadable="a nested (ragged) tensor: not read")
    dtype = str(tensor.dtype).removeprefix("torch.")
    shape = tuple(int(d) for d in tensor.shape)
    why = None
    if tensor.device.type == "meta":
        why = "on the meta device: it holds no values"
    elif tensor.layout != torch.strided:
        why = f"a sparse tensor ({str(tensor.layout).removeprefix('torch.')}): not read"
    elif tensor.is_quantized:
        why = f"a quantized tensor ({dtype}): not read"
    elif dtype not in _TORCH_NUMPY and dtype not in _TORCH_WIDENED:
        why = f"{dtype}: numpy has no such dtype; not read"
    return Entry(name, shape, dtype, unreadable=why)


def _check_torch_zip(path: Path) -> bool:
    """Check a zip-format .pt from its directory before torch reads it; True when a storage
    is compressed (a re-zipped file), which must be loaded without mmap."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError, struct.error) as exc:
        raise refuse(path, f"is not a readable PyTorch file ({_why(exc)})") from None
    names = [info.filename for info in infos]
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise refuse(path, "is a TorchScript archive (torch.jit.save): its weights sit inside compiled code, "
                           "which initcli never runs; save torch.jit.load(...).state_dict() with torch.save, "
                           "or as .safetensors")
    compressed = False
    unpacked = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise refuse(path, f"holds '{info.filename[:80]}' encrypted: initcli reads no encrypted archive")
        if info.compress_type not in _ZIP_METHODS:
            raise refuse(path, f"holds '{info.filename[:80]}' compressed by an unknown method "
                               f"({info.compress_type})")
        if info.filename.endswith(".pkl"):
            if info.file_size > _PICKLE_MAX:
                raise refuse(path, f"holds a {info.file_size / 2**20:.0f} MiB pickle ('{info.filename[:80]}'); a "
                                   f"state_dict's is a few kB and initcli reads at most {_PICKLE_MAX >> 20} MiB")
            unpacked += _PICKLE_GROWTH * info.file_size
        elif info.compress_type != zipfile.ZIP_STORED:
            compressed = True
            unpacked += info.file_size
    if compressed:  # every storage is read into memory
        unpacked += sum(i.file_size for i in infos if i.compress_type == zipfile.ZIP_STORED
                        and not i.filename.endswith(".pkl"))
    _check_room(path, unpacked, "needs, once its members are unpacked,")
    return compressed


def _check_legacy(path: Path) -> bool:
    """A legacy (pre-1.6, non-zip) torch file is read whole into memory: about its size."""
    _check_room(path, _PICKLE_GROWTH * min(path.stat().st_size, _PICKLE_MAX) + path.stat().st_size,
                "needs, read whole (a legacy torch file),")
    return False


def _is_tensor_tree(value, torch) -> bool:
    """Whether `value` holds at least one tensor (containers searched without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def _count_tensors(value, torch) -> int:
    found = {}
    _flatten(value, found, torch)
    return len(found)


def _is_optimizer_state(key: str, value) -> bool:
    if str(key).lower() in OPTIMIZER_KEYS:
        return True
    states = value if isinstance(value, (list, tuple)) else [value]
    return bool(states) and all(isinstance(s, dict) and "state" in s and "param_groups" in s for s in states)


def unwrap_checkpoint(loaded, torch) -> tuple[object, list[tuple[str, str]]]:
    """The model's tensors inside a checkpoint, and (key, reason) for each entry holding
    tensors that is not the model: optimizer state, an EMA copy beside the model, anything else
    a wrapper keeps. A plain state_dict is returned as it is."""
    skipped = []
    prefix = ""
    for _ in range(4):  # {"model": {"state_dict": {...}}} and the like
        if not isinstance(loaded, dict) or not any(isinstance(v, dict) for v in loaded.values()):
            break
        keys = {str(k): k for k in loaded}
        optimizer = [k for k in keys if _is_optimizer_state(k, loaded[keys[k]]) and _is_tensor_tree(loaded[keys[k]], torch)]
        wrapper = next((k for k in MODEL_KEYS if k in keys and isinstance(loaded[keys[k]], dict)
                        and _is_tensor_tree(loaded[keys[k]], torch)), None)
        if wrapper is None and not optimizer:
            break
        for key in optimizer:
            count = _count_tensors(loaded[keys[key]], torch)
            skipped.append((prefix + key, f"optimizer state, {count} tensors (moments, step counts): not weights, "
                                          f"not inspected"))
        rest = {k: loaded[keys[k]] for k in keys if k not in optimizer and k != wrapper}
        if wrapper is None:
            return rest, skipped
        for key, value in rest.items():
            if _is_tensor_tree(value, torch):
                why = ("an exponential-moving-average copy of the weights" if key in _EMA
                       else f"beside the model's '{wrapper}'")
                skipped.append((prefix + key, f"{_count_tensors(value, torch)} tensors, {why}: not inspected"))
        loaded = loaded[keys[wrapper]]
        prefix += wrapper + "."
    return loaded, skipped


def _flatten(value, out: dict, torch) -> None:
    """Tensors of nested dicts/lists under dotted names, in order, without recursion (a
    checkpoint nested thousands deep is no crash)."""
    stack = [("", value)]
    while stack:
        prefix, item = stack.pop()
        if isinstance(item, torch.Tensor):
            out[prefix or "tensor"] = item
        elif isinstance(item, dict):
            stack.extend((f"{prefix}.{k}" if prefix else str(k), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{prefix}.{i}" if prefix else str(i), v) for i, v in reversed(list(enumerate(item))))


# -- ONNX -----------------------------------------------------------------------------------------

# (op, input index) -> (the name's suffix, role_hint, layout_hint); Gemm's B layout follows transB
_ONNX_INPUTS = {
    ("Conv", 1): ("weight", "conv", "torch"), ("Conv", 2): ("bias", "bias", None),
    ("ConvTranspose", 1): ("weight", "conv", "torch"), ("ConvTranspose", 2): ("bias", "bias", None),
    ("Gemm", 1): ("weight", "linear", None), ("Gemm", 2): ("bias", "bias", None),
    ("MatMul", 0): ("weight", "linear", "torch"), ("MatMul", 1): ("weight", "linear", "keras"),
    ("Gather", 0): ("weight", "embedding", None),
    ("BatchNormalization", 1): ("weight", "norm_scale", None), ("BatchNormalization", 2): ("bias", "norm_shift", None),
    ("BatchNormalization", 3): ("running_mean", None, None), ("BatchNormalization", 4): ("running_var", None, None),
    ("LayerNormalization", 1): ("weight", "norm_scale", None), ("LayerNormalization", 2): ("bias", "norm_shift", None),
    ("InstanceNormalization", 1): ("weight", "norm_scale", None), ("InstanceNormalization", 2): ("bias", "norm_shift", None),
    ("GroupNormalization", 1): ("weight", "norm_scale", None), ("GroupNormalization", 2): ("bias", "norm_shift", None),
    ("SimplifiedLayerNormalization", 1): ("weight", "norm_scale", None),
    ("LSTM", 1): ("weight_ih", "recurrent", None), ("LSTM", 2): ("weight_hh", "recurrent", None),
    ("LSTM", 3): ("bias", "recurrent", None),
    ("GRU", 1): ("weight_ih", "recurrent", None), ("GRU", 2): ("weight_hh", "recurrent", None),
    ("GRU", 3): ("bias", "recurrent", None),
    ("RNN", 1): ("weight_ih", "recurrent", None), ("RNN", 2): ("weight_hh", "recurrent", None),
    ("RNN", 3): ("bias", "recurrent", None),
}
_PASS_THROUGH = ("Identity", "Cast", "DequantizeLinear")  # the value reaches the next node unchanged
_PRODUCES_LINEAR = ("MatMul", "Gemm", "Conv", "ConvTranspose")
_GENERATED = re.compile(r"^(onnx::|\d+$|Constant)|_output_\d+$|^(const|val)_\d+$")
_FLOAT_TYPES = ("FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                "FLOAT8E5M2FNUZ")


class OnnxSource(Source):
    """An ONNX model's weights: its initializers, its Constant nodes (what Paddle and many
    exporters emit) and those of every subgraph (If branches, Loop and Scan bodies), each named
    by the node that consumes it ("<node>.weight", "<node>.bias", …) unless the file gave it a
    real name, with role and layout from the op (Conv W is (out, in, k…), Gemm's B follows
    transB, MatMul's constant right operand is (in, out)). External data (models over 2 GB) is
    read one tensor at a time, only from files inside the model's folder."""

    format = "onnx"

    def __init__(self, path: Path) -> None:
        onnx = require("onnx", None, "reading .onnx files")
        self.path = str(path)
        self._base = str(path.parent)
        try:
            with _reading(path):
                model = onnx.load(str(path), load_external_data=False)
        except InitcliError:
            raise
        except Exception as exc:  # DecodeError and friends
            raise refuse(path, f"is not a readable .onnx file ({_why(exc)})") from None
        self._helper = onnx.numpy_helper
        type_names = {v: k for k, v in onnx.TensorProto.DataType.items()}
        found, skipped = _onnx_weights(model.graph, onnx, type_names)
        self._values = {}
        entries = []
        for name, value, role, layout in found:
            if isinstance(value, onnx.TensorProto):
                self._check_external(path, name, value, onnx)
                dtype = type_names.get(value.data_type, "?").lower()
                shape = tuple(int(d) for d in value.dims)
            else:
                dtype, shape = value.dtype.name, value.shape
            self._values[name] = value
            entries.append(Entry(name, shape, dtype, role_hint=role, layout_hint=layout))
        self.skipped = tuple(skipped)
        if not entries:
            raise refuse(path, "holds no weights (no initializers, no floating-point Constant nodes, in the graph "
                               "or its subgraphs)")
        self.entries = tuple(entries)

    def _check_external(self, path: Path, name: str, tensor, onnx) -> None:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            return
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if contained(path.parent, location) is None:
            raise refuse(path, f"keeps '{name}' in the external file '{location}', outside its folder: initcli "
                               f"reads external data only from the model's folder")

    def read(self, name: str):
        value = self._values[name]
        if isinstance(value, np.ndarray):
            return value
        try:
            with _reading(self.path):
                array = self._helper.to_array(value, base_dir=self._base)
        except InitcliError:
            raise
        except Exception as exc:
            raise refuse(self.path, f"cannot be read at '{name}' ({_why(exc)})") from None
        if array.dtype.kind == "V" or array.dtype.name not in np.sctypeDict:  # ml_dtypes bf16/fp8
            array = array.astype(np.float32)
        return array


def _onnx_weights(graph, onnx, type_names) -> tuple[list, list]:
    """[(name, TensorProto or array, role_hint, layout_hint)] over the graph and its
    subgraphs, and what was left out, counted."""
    producers = {}  # value name -> (TensorProto or array, made by a Constant node)
    consumers = {}  # value name -> [(node, input index, node label)]
    produced_by = {}  # value name -> the node that computes it
    order = []
    constants_left = sparse = count = 0
    stack = [(graph, "")]
    while stack:
        current, scope = stack.pop()
        for tensor in current.initializer:
            if tensor.name not in producers:
                producers[tensor.name] = (tensor, False)
                order.append(tensor.name)
        sparse += len(current.sparse_initializer)
        for node in current.node:
            count += 1
            label = node.name or f"{scope}{node.op_type}_{count}"
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                value = _constant_value(node, type_names)
                if value is None:
                    constants_left += 1
                else:
                    producers[node.output[0]] = (value, True)
                    order.append(node.output[0])
            for output in node.output:
                produced_by[output] = node
            for index, name in enumerate(node.input):
                if name:
                    consumers.setdefault(name, []).append((node, index, label))
            subgraphs = []
            for attribute in node.attribute:
                graphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
                subgraphs.extend((g, f"{label}/{attribute.name}{i if len(graphs) > 1 else ''}/")
                                 for i, g in enumerate(graphs))
            stack.extend(reversed(subgraphs))
    found, used = [], set()
    for value_name in order:
        value, constant = producers[value_name]
        node, index, label = _consumer(value_name, consumers, produced_by)
        suffix, role, layout = None, None, None
        if node is not None:
            suffix, role, layout = _ONNX_INPUTS.get((node.op_type, index), (None, None, None))
            if node.op_type == "Gemm" and index == 1:
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                layout = "torch" if trans_b else "keras"
            if (node.op_type == "MatMul" or (node.op_type, index) == ("Gemm", 1)) and len(_shape_of(value)) != 2:
                role, layout = None, None
            if node.op_type == "Gather" and len(_shape_of(value)) != 2:
                role = None
            if node.op_type == "Add" and len(_shape_of(value)) == 1:
                other = node.input[1 - index] if len(node.input) == 2 else ""
                if getattr(produced_by.get(other), "op_type", None) in _PRODUCES_LINEAR:
                    suffix, role = "bias", "bias"
            if suffix is None:
                suffix = f"input{index}"
        if constant or _GENERATED.search(value_name):
            name = f"{label}.{suffix}" if node is not None else value_name
        else:
            name = value_name
        base, k = name, 2
        while name in used:
            name, k = f"{base}#{k}", k + 1
        used.add(name)
        found.append((name, value, role, layout))
    skipped = []
    if constants_left:
        skipped.append(("Constant nodes", f"{constants_left} integer, scalar or string values (shapes, indices, "
                                          f"epsilons): not weights"))
    if sparse:
        skipped.append(("sparse initializers", f"{sparse} sparse tensors: not read"))
    return found, skipped


def _consumer(value_name: str, consumers: dict, produced_by: dict):
    """The first node that uses the value, looking through casts and identities."""
    seen = set()
    for _ in range(8):
        uses = consumers.get(value_name)
        if not uses:
            return None, None, None
        node, index, label = uses[0]
        if node.op_type in _PASS_THROUGH and index == 0 and node.output and node.output[0] not in seen:
            seen.add(value_name)
            value_name = node.output[0]
            continue
        return node, index, label
    return None, None, None


def _shape_of(value) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, np.ndarray) else tuple(int(d) for d in value.dims)


def _constant_value(node, type_names):
    """A Constant node's value when it can be a weight: floating point with at least two
    elements. Shapes, indices, epsilons and strings are not."""
    for attribute in node.attribute:
        if attribute.name == "value" and attribute.HasField("t"):
            tensor = attribute.t
            size = math.prod(int(d) for d in tensor.dims)
            if type_names.get(tensor.data_type) in _FLOAT_TYPES and len(tensor.dims) >= 1 and size >= 2:
                return tensor
            return None
        if attribute.name == "value_floats" and len(attribute.floats) >= 2:
            return np.asarray(attribute.floats, dtype=np.float32)
    return None


# -- dispatch -------------------------------------------------------------------------------------


def open_source(path: str | os.PathLike) -> Source:
    """The reader for `path`, chosen by its suffix (a folder: its shards)."""
    text = os.fspath(path)
    if not text or "\0" in str(text):
        raise InitcliError(None, f"expected a weight file's path, got {text!r}")
    target = Path(text)
    try:
        info = target.stat()
    except FileNotFoundError:
        raise refuse(target, "does not exist") from None
    except OSError as exc:
        raise refuse(target, f"cannot be read ({_why(exc)})") from None
    if target.is_dir():
        return _open_folder(target)
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise refuse(target, f"has an unknown format ('{suffix or 'no suffix'}'); inspect reads "
                             f"{', '.join(SUFFIXES)} or a folder of shards")
    if not target.is_file():
        raise refuse(target, "is not a regular file (a pipe, socket or device)")
    if not os.access(target, os.R_OK):
        raise refuse(target, "cannot be read (permission denied)")
    if info.st_size == 0:
        raise refuse(target, "is empty")
    if suffix == ".safetensors":
        source = SafetensorsSource(target)
        if not source.entries:
            raise refuse(target, "holds no tensors")
        return source
    if suffix == ".npz":
        return NpzSource(target)
    if suffix == ".npy":
        return NpySource(target)
    if suffix == ".onnx":
        return OnnxSource(target)
    return TorchSource(target)


def natural_key(name: str) -> list:
    """'h.10.mlp' after 'h.2.mlp': numbers compare as numbers (model order, not text order)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
