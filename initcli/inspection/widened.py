"""bf16 and fp8 tensors as float32, widened only where they are read: `Widened` wraps a tensor's
stored codes (a memory map or a torch tensor's bytes) so that a slice or a subsample costs its
own size, never the whole tensor's."""

from __future__ import annotations

import numpy as np

CHUNK = 1 << 22  # bf16/fp8 codes widened this many at a time


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


