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

The readers, one module per format: `safetensors_reader`, `numpy_reader` (.npz/.npy),
`torch_reader`, `onnx_reader`, `shards` (a folder read as one file), over the core they share
(`source`: Entry, Source, refusals, JSON, config.json, the memory check) and `widened` (bf16/fp8
as float32). This module picks the reader for a path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InitcliError
from .numpy_reader import NpySource, NpzSource
from .onnx_reader import OnnxSource
from .safetensors_reader import SafetensorsSource
from .shards import ShardedSource, open_folder  # noqa: F401  (ShardedSource: importable here, as before)
from .source import (  # noqa: F401  (re-exported: the reader core was defined here before)
    CONFIG_MAX,
    Entry,
    Source,
    contained,
    error_text,
    parse_json,
    read_config,
    refuse,
)
from .torch_reader import MODEL_KEYS, OPTIMIZER_KEYS, TorchSource, unwrap_checkpoint  # noqa: F401  (as before)
from .widened import CHUNK, Widened  # noqa: F401  (re-exported: defined here before)

SUFFIXES = (".safetensors", ".npz", ".npy", ".pt", ".pth", ".bin", ".ckpt", ".jit", ".onnx")


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
        raise refuse(target, f"cannot be read ({error_text(exc)})") from None
    if target.is_dir():
        return open_folder(target)
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
