"""The .safetensors reader: the header checked whole (names, dtypes, shapes, offsets inside the
file and matching the declared sizes) before any tensor is read, then each tensor memory-mapped
when it is read (bf16 and fp8 widened lazily)."""

from __future__ import annotations

import math
import stat
import struct
from pathlib import Path

import numpy as np

from ..errors import InitcliError
from .source import Entry, Source, error_text, parse_json, read_config, reading_file, refuse
from .widened import Widened

_HEADER_MAX = 100 * 2**20  # safetensors caps its JSON header at 100 MB


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
        with reading_file(file):
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
        with reading_file(self.path):
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
        raise refuse(file, f"is not a .safetensors file (its header is not JSON: {error_text(exc)})") from None
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
