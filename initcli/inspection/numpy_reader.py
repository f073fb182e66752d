"""The numpy readers: an .npz archive (every member's header read first; a stored member
memory-mapped, a compressed one decompressed only after its declared size passed the memory
check) and a single .npy; never with allow_pickle."""

from __future__ import annotations

import math
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InitcliError
from .source import ZIP_METHODS, Entry, Source, check_room, error_text, reading_file, refuse


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
            with reading_file(path):
                self._zip = zipfile.ZipFile(path)
                for info in self._zip.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    name = info.filename[:-4]
                    if info.flag_bits & 0x1:
                        raise refuse(path, f"holds '{name}' encrypted: initcli reads no encrypted archive")
                    if info.compress_type not in ZIP_METHODS:
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
            raise refuse(path, f"is not a readable .npz file ({error_text(exc)})") from None
        if not entries:
            self.close()
            raise refuse(path, "holds no arrays")
        self.entries = tuple(entries)

    def read(self, name: str):
        info, shape, fortran, dtype, start = self._members[name]
        order = "F" if fortran else "C"
        try:
            with reading_file(self.path):
                if info.compress_type == zipfile.ZIP_STORED and not dtype.hasobject and \
                        math.prod(shape) * dtype.itemsize > 0:
                    offset = _member_data_offset(self.path, info) + start
                    return np.asarray(np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                                order=order))
                check_room(self.path, math.prod(shape) * dtype.itemsize, f"decompresses '{name}' into")
                with self._zip.open(info) as member:
                    return np.lib.format.read_array(member, allow_pickle=False)
        except InitcliError:
            raise
        except (ValueError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
            raise refuse(self.path, f"cannot be read at '{name}' ({error_text(exc)})") from None

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
            with reading_file(path), open(path, "rb") as handle:
                shape, fortran, dtype, start = _npy_header(handle)
                size = os.fstat(handle.fileno()).st_size
        except (ValueError, EOFError, SyntaxError) as exc:
            raise refuse(path, f"is not a readable .npy file ({error_text(exc)})") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if not dtype.hasobject and nbytes > size - start:
            raise refuse(path, f"declares {list(shape)} {dtype} ({nbytes:,} bytes) but holds {size - start:,}")
        self.entries = (Entry(path.stem, shape, _dtype_name(dtype)),)

    def read(self, name: str):
        try:
            with reading_file(self.path):
                return np.load(self.path, allow_pickle=False, mmap_mode="r")
        except (ValueError, EOFError) as exc:
            raise refuse(self.path, f"cannot be read ({error_text(exc)})") from None
