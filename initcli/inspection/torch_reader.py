"""The PyTorch reader: a state_dict, or a checkpoint wrapping one, read only through
`torch.load(weights_only=True)` after the file was checked from its zip directory (TorchScript
refused by name, the pickle's size capped, the memory an unpacking needs checked); optimizer
state, EMA copies and whatever else a wrapper keeps beside the model are named and skipped."""

from __future__ import annotations

import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InitcliError
from ..optional import require
from .source import ZIP_METHODS, Entry, Source, check_room, error_text, read_config, reading_file, refuse
from .widened import Widened

_PICKLE_MAX = 64 * 2**20  # a .pt's data.pkl: kB for a state_dict; unpickling costs a multiple of it
_PICKLE_GROWTH = 16  # what unpickling can cost per byte of pickle (a memo reference is 2 bytes)

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
        with reading_file(path):  # checked before torch is even imported
            with open(path, "rb") as handle:
                zipped = handle.read(4) == b"PK\x03\x04"
            compressed = _check_torch_zip(path) if zipped else _check_legacy(path)
        torch = require("torch", None, "reading PyTorch .pt/.pth/.bin files")
        self._torch = torch
        self.config = read_config(path.parent)
        try:
            # mmap: the zip format's storages stay on disk until a tensor is read (a compressed
            # member cannot be mapped); torch's warnings are about the file, not for the user
            with warnings.catch_warnings(), reading_file(path):
                warnings.simplefilter("ignore")
                loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipped and not compressed)
        except InitcliError:
            raise
        except pickle.UnpicklingError as exc:
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise refuse(path, f"holds Python objects{_objects_in(path, torch)}, not only tensors: initcli never "
                                   f"unpickles objects (torch.load weights_only=True refused it); save "
                                   f"model.state_dict() or a .safetensors file instead") from None
            raise refuse(path, f"is not a readable PyTorch file ({error_text(exc)})") from None
        except Exception as exc:  # RuntimeError, EOFError, zipfile errors: damaged or not torch
            raise refuse(path, f"is not a readable PyTorch file ({error_text(exc)})") from None
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
        raise refuse(path, f"is not a readable PyTorch file ({error_text(exc)})") from None
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
        if info.compress_type not in ZIP_METHODS:
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
    check_room(path, unpacked, "needs, once its members are unpacked,")
    return compressed


def _check_legacy(path: Path) -> bool:
    """A legacy (pre-1.6, non-zip) torch file is read whole into memory: about its size."""
    check_room(path, _PICKLE_GROWTH * min(path.stat().st_size, _PICKLE_MAX) + path.stat().st_size,
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
