"""One reader per weight-file format, behind one interface: a `Source` lists its tensors'
names, shapes and dtypes up front (headers only, where the format allows) and reads one tensor
at a time, as a numpy array. Nothing here runs a file's code: .npz is read with
allow_pickle=False, PyTorch files only through `torch.load(weights_only=True)`.

Formats: .safetensors (memory-mapped through the `safetensors` package; a folder through its
`*.safetensors.index.json`, else every `*.safetensors` in it), .npz/.npy, .pt/.pth/.bin
(state_dicts; needs torch) and .onnx initializers (needs onnx). Every failure to read a file
is one InitcliError line naming the path; an odd tensor inside a good file is the caller's
business (it gets a row with a note).
"""

from __future__ import annotations

import json
import os
import re
import struct
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InitcliError
from ..optional import require

SUFFIXES = (".safetensors", ".npz", ".npy", ".pt", ".pth", ".bin", ".onnx")
_HEADER_MAX = 100 * 2**20  # safetensors caps its JSON header at 100 MB


@dataclass(frozen=True)
class Entry:
    """A tensor as the file declares it: its name, shape and dtype (the file's spelling)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def refuse(path, message: str) -> InitcliError:
    return InitcliError(None, f"'{path}' {message}")


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Source:
    """A weight file: `entries` (in the file's order) and `read(name)`, one array at a time."""

    path: str
    entries: tuple[Entry, ...]
    format: str

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for entry in self.entries:
            yield entry.name, self.read(entry.name)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- safetensors -------------------------------------------------------------------------------

# dtypes numpy cannot hold; read raw from the memory map and widened to float32 here
_RAW = {"BF16": np.uint16, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}


def _fp8_table(exponent_bits: int, bias: int, ieee: bool) -> np.ndarray:
    """The float32 value of each of the 256 fp8 codes (OCP FP8: E4M3 has no inf, its NaN is
    S.1111.111; E5M2 is IEEE-like, with inf and NaN at the top exponent)."""
    mantissa_bits = 7 - exponent_bits
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> mantissa_bits) & ((1 << exponent_bits) - 1)
    mantissa = codes & ((1 << mantissa_bits) - 1)
    normal = (1 + mantissa / 2**mantissa_bits) * 2.0 ** (exponent - bias)
    subnormal = (mantissa / 2**mantissa_bits) * 2.0 ** (1 - bias)
    values = sign * np.where(exponent == 0, subnormal, normal)
    top = (1 << exponent_bits) - 1
    if ieee:
        values = np.where(exponent == top, np.where(mantissa == 0, sign * np.inf, np.nan), values)
    else:
        values = np.where((exponent == top) & (mantissa == (1 << mantissa_bits) - 1), np.nan, values)
    return values.astype(np.float32)


def _widen(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        return (raw.astype(np.uint32) << 16).view(np.float32)
    table = _fp8_table(4, 7, False) if dtype == "F8_E4M3" else _fp8_table(5, 15, True)
    return table[raw]


class SafetensorsSource(Source):
    format = "safetensors"

    def __init__(self, files: list[Path], label) -> None:
        safetensors = require("safetensors", None, "reading .safetensors")
        self.path = str(label)
        self._handles, self._where, self._raw = [], {}, {}
        entries = []
        for file in files:
            header, data_start = _safetensors_header(file)
            try:
                handle = safetensors.safe_open(str(file), framework="numpy")
            except Exception as exc:  # SafetensorError and friends: a damaged file
                raise refuse(file, f"is not a readable .safetensors file ({_why(exc)})") from None
            self._handles.append(handle)
            for name in handle.keys():  # noqa: SIM118  (safe_open is not a dict)
                info = header.get(name)
                if not isinstance(info, dict):
                    raise refuse(file, f"lists '{name}' but its header does not describe it")
                if name in self._where:
                    raise refuse(file, f"holds '{name}', which another shard holds too")
                shape = tuple(int(d) for d in info["shape"])
                self._where[name] = handle
                if info["dtype"] in _RAW:
                    self._raw[name] = (file, data_start + int(info["data_offsets"][0]), shape, info["dtype"])
                entries.append(Entry(name, shape, str(info["dtype"])))
        self.entries = tuple(entries)

    def read(self, name: str) -> np.ndarray:
        if name in self._raw:
            file, offset, shape, dtype = self._raw[name]
            raw = np.memmap(file, dtype=_RAW[dtype], mode="r", offset=offset, shape=shape)
            return _widen(raw, dtype)
        try:
            return self._where[name].get_tensor(name)
        except Exception as exc:
            raise refuse(self.path, f"cannot be read at tensor '{name}' ({_why(exc)})") from None


def _safetensors_header(file: Path) -> tuple[dict, int]:
    """The JSON header (name -> dtype, shape, data_offsets) and where the data starts,
    checked against the file's size so that a truncated file is one clear line."""
    size = file.stat().st_size
    if size == 0:
        raise refuse(file, "is empty")
    with open(file, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise refuse(file, "is truncated (shorter than a .safetensors header)")
        (length,) = struct.unpack("<Q", head)
        if length > min(_HEADER_MAX, size - 8):
            raise refuse(file, "is not a .safetensors file, or is truncated (its header length is impossible)")
        try:
            header = json.loads(handle.read(length))
        except (ValueError, UnicodeDecodeError):
            raise refuse(file, "is not a .safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise refuse(file, "is not a .safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    end = 0
    for name, info in header.items():
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise refuse(file, f"has a damaged header at '{str(name)[:60]}'") from None
    if 8 + length + end > size:
        raise refuse(file, f"is truncated: its header needs {8 + length + end} bytes, the file has {size}")
    return header, 8 + length


def _safetensors_folder(folder: Path) -> list[Path]:
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        index = indexes[0]
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = list(dict.fromkeys(str(v) for v in weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise refuse(index, f"is not a sharded-checkpoint index ({_why(exc)})") from None
        files = []
        for shard in shards:
            file = folder / shard
            if not file.is_file():
                raise refuse(index, f"names the shard '{shard}', which is missing from '{folder}'")
            files.append(file)
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise refuse(folder, "is a folder without .safetensors files (inspect reads a folder through its "
                             "*.safetensors.index.json, else every *.safetensors in it)")
    return files


# -- npz / npy -----------------------------------------------------------------------------------


class NpzSource(Source):
    format = "npz"

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        try:
            self._zip = zipfile.ZipFile(path)
            entries = []
            self._members = {}
            for info in self._zip.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with self._zip.open(info) as member:
                    shape, dtype = _npy_header(member)
                name = info.filename[:-4]
                self._members[name] = info
                entries.append(Entry(name, shape, "object" if dtype.hasobject else dtype.name))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, struct.error) as exc:
            raise refuse(path, f"is not a readable .npz file ({_why(exc)})") from None
        if not entries:
            raise refuse(path, "holds no arrays")
        self.entries = tuple(entries)

    def read(self, name: str) -> np.ndarray:
        try:
            with self._zip.open(self._members[name]) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise refuse(self.path, f"cannot be read at '{name}' ({_why(exc)})") from None

    def close(self) -> None:
        self._zip.close()


def _npy_header(stream) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if reader is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = reader(stream)
    return tuple(int(d) for d in shape), dtype


class NpySource(Source):
    format = "npy"

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        try:
            with open(path, "rb") as handle:
                shape, dtype = _npy_header(handle)
        except (OSError, ValueError, EOFError) as exc:
            raise refuse(path, f"is not a readable .npy file ({_why(exc)})") from None
        self.entries = (Entry(path.stem, shape, "object" if dtype.hasobject else dtype.name),)

    def read(self, name: str) -> np.ndarray:
        try:
            return np.load(self.path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:
            raise refuse(self.path, f"cannot be read ({_why(exc)})") from None


# -- PyTorch --------------------------------------------------------------------------------------


class TorchSource(Source):
    """A state_dict (possibly nested: {"state_dict": {...}}, {"model": {...}}) read with
    weights_only=True: tensors, containers and plain numbers only, never objects."""

    format = "torch"

    def __init__(self, path: Path) -> None:
        torch = require("torch", None, "reading PyTorch .pt/.pth/.bin files")
        import pickle

        self.path = str(path)
        with open(path, "rb") as handle:
            zipped = handle.read(4) == b"PK\x03\x04"
        try:
            # mmap: the zip format's storages stay on disk until a tensor is read; torch's
            # warnings (pickle protocol, storage types) are about the file, not for the user
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipped)
        except pickle.UnpicklingError as exc:
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise refuse(path, "holds Python objects, not only tensors: initcli never unpickles objects "
                                   "(torch.load weights_only=True refused it); save model.state_dict() "
                                   "or a .safetensors file instead") from None
            raise refuse(path, f"is not a readable PyTorch file ({_why(exc)})") from None
        except Exception as exc:  # RuntimeError, EOFError, zipfile errors: damaged or not torch
            raise refuse(path, f"is not a readable PyTorch file ({_why(exc)})") from None
        self._tensors = {}
        _flatten(loaded, "", self._tensors, torch)
        if not self._tensors:
            raise refuse(path, "holds no tensors")
        self.entries = tuple(Entry(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))
                             for name, t in self._tensors.items())
        self._torch = torch

    def read(self, name: str) -> np.ndarray:
        tensor = self._tensors[name].detach()
        if tensor.dtype.is_floating_point and tensor.dtype not in (self._torch.float32, self._torch.float64):
            tensor = tensor.float()  # bf16, fp16, fp8: numpy holds float32
        return tensor.numpy()


def _flatten(value, prefix: str, out: dict, torch) -> None:
    if isinstance(value, torch.Tensor):
        out[prefix or "tensor"] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out, torch)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}.{i}" if prefix else str(i), out, torch)


# -- ONNX -----------------------------------------------------------------------------------------


class OnnxSource(Source):
    format = "onnx"

    def __init__(self, path: Path) -> None:
        onnx = require("onnx", None, "reading .onnx files")
        self.path = str(path)
        try:
            model = onnx.load(str(path), load_external_data=True)
        except Exception as exc:  # DecodeError, a missing external-data file
            raise refuse(path, f"is not a readable .onnx file ({_why(exc)})") from None
        self._init = {t.name: t for t in model.graph.initializer}
        if not self._init:
            raise refuse(path, "holds no initializers (no weights)")
        names = {v: k for k, v in onnx.TensorProto.DataType.items()}
        self.entries = tuple(Entry(t.name, tuple(int(d) for d in t.dims), names.get(t.data_type, "?").lower())
                             for t in self._init.values())
        self._helper = onnx.numpy_helper

    def read(self, name: str) -> np.ndarray:
        try:
            array = self._helper.to_array(self._init[name])
        except Exception as exc:
            raise refuse(self.path, f"cannot be read at initializer '{name}' ({_why(exc)})") from None
        if array.dtype.kind == "V" or array.dtype.name not in np.sctypeDict:  # ml_dtypes bf16/fp8
            array = array.astype(np.float32)
        return array


# -- dispatch -------------------------------------------------------------------------------------


def open_source(path: str | os.PathLike) -> Source:
    """The reader for `path`, chosen by its suffix (a folder: its .safetensors shards)."""
    target = Path(path)
    try:
        info = target.stat()
    except FileNotFoundError:
        raise refuse(target, "does not exist") from None
    except OSError as exc:
        raise refuse(target, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if target.is_dir():
        return SafetensorsSource(_safetensors_folder(target), target)
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise refuse(target, f"has an unknown format ('{suffix or 'no suffix'}'); inspect reads "
                             f"{', '.join(SUFFIXES)} or a folder of .safetensors shards")
    if not target.is_file():
        raise refuse(target, "is not a regular file (a pipe, socket or device)")
    if not os.access(target, os.R_OK):
        raise refuse(target, "cannot be read (permission denied)")
    if info.st_size == 0:
        raise refuse(target, "is empty")
    if suffix == ".safetensors":
        return SafetensorsSource([target], target)
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
