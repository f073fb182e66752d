"""The reader core every format shares: `Entry` (a tensor as a file declares it), the `Source`
interface (entries up front, one tensor read at a time), the one-line refusals naming the path,
standard JSON, the folder containment rule for files a checkpoint names, config.json, and the
memory check made before anything is allocated or decompressed."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InitcliError

CONFIG_MAX = 2**20  # config.json: a few kB in practice; a bigger one is ignored
# the compression methods Python's zipfile reads (.npz members, zip-format torch files)
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


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


def error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def reading_file(path):
    """An OSError while reading `path` (a link loop, a folder where a file was expected, an
    I/O error) is a read failure naming it, never mistaken for an output's."""
    try:
        yield
    except OSError as exc:
        raise refuse(path, f"cannot be read ({error_text(exc)})") from None


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


# -- memory ------------------------------------------------------------------------------------------


def check_room(path, needed: int, what: str) -> None:
    """Refuse, before allocating, what would not fit in 90% of the memory available."""
    from ..checks import available_bytes

    available = available_bytes()
    if available is not None and needed > 0.9 * available:
        raise refuse(path, f"{what} about {needed / 2**30:.1f} GiB of memory, but {available / 2**30:.1f} GiB "
                           f"are available")

