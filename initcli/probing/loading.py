"""Loading the user's model and its inputs: the MODULE:CALLABLE import, the seeded call of the
builder (shared with coordcheck --module), and the inputs drawn from the seed."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

from ..engine import seed_streams
from ..errors import InitcliError, suggest
from ..schemes import gaussian

MAX_BATCH = 1 << 20
MAX_SHAPE_ELEMENTS = 1 << 31


def require_torch(param: str | None = None):
    from ..optional import require

    return require("torch", param, "probe")


def parse_kwargs(text: str | None) -> dict:
    """`--kwargs` JSON: an object of keyword arguments."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InitcliError("kwargs", f"is not valid JSON ({exc.msg if hasattr(exc, 'msg') else 'too deep'}); "
                                     "give an object such as '{\"depth\": 20}'") from None
    if not isinstance(value, dict):
        raise InitcliError("kwargs", f"must be a JSON object such as '{{\"depth\": 20}}', got {type(value).__name__}")
    return value


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_callable(target: str) -> Callable:
    """`MODULE:CALLABLE` imported as `python -m` would (the current directory first on
    sys.path), or `path/to/file.py:CALLABLE` (its directory on sys.path, as `python file.py`)."""
    if not isinstance(target, str) or ":" not in target:
        raise InitcliError(None, f"must be MODULE:CALLABLE or path/to/file.py:CALLABLE, got '{target}'")
    where, _, name = target.rpartition(":")
    if not where or not name:
        raise InitcliError(None, f"must be MODULE:CALLABLE or path/to/file.py:CALLABLE, got '{target}'")
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            module = _import_file(where)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(where)
    except InitcliError:
        raise
    except (Exception, SystemExit) as exc:  # the user's module may raise anything at import
        raise InitcliError(None, f"cannot import '{where}': {one_line(exc)}") from None
    value = module
    for part in name.split("."):
        if not hasattr(value, part):
            known = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
            raise InitcliError(None, f"'{where}' has no '{name}'{suggest(part, known)}")
        value = getattr(value, part)
    if not callable(value):
        raise InitcliError(None, f"'{name}' in '{where}' is a {type(value).__name__}, not a callable")
    return value


def _import_file(path: str):
    if not os.path.isfile(path):
        raise InitcliError(None, f"'{path}' is not a file")
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"_initcli_probe_{stem}_{abs(hash(os.path.abspath(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InitcliError(None, f"'{path}' cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_model(target: str, kwargs: dict | None = None, *, seed: int | None = None):
    """Build the user's model: (module, example_input or None). With `seed`, torch's global
    generators (and Python's and numpy's) are seeded with it for the call and put back after,
    so the same seed builds the same weights whatever ran before."""
    require_torch("target")
    name = target.rpartition(":")[2]
    factory = load_callable(target)
    with seeded(seed):
        return build_model(factory, kwargs or {}, name=name, call_text=f"{name}(**kwargs)",
                           call_param="kwargs" if kwargs else None, type_param=None)


@contextlib.contextmanager
def seeded(seed: int | None):
    """torch's default CPU generator (and every CUDA device's, when CUDA is in use), Python's
    `random` and numpy's global generator seeded with `seed` inside, restored on the way out.
    Nothing is touched for seed None."""
    if seed is None:
        yield
        return
    import random

    torch = require_torch()
    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        torch.manual_seed(seed)  # the default generator, and CUDA's
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        yield
    finally:
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def build_model(factory: Callable, kwargs: dict, *, name: str, call_text: str, call_param: str | None,
                type_param: str | None):
    """Call the user's builder: (module, example_input or None). Whatever it raises, or a
    result that is not a torch.nn.Module (or a (model, example_input) pair), is one line:
    naming `call_param` or `type_param`. Shared by probe and coordcheck --module."""
    torch = require_torch(type_param)
    try:
        built = factory(**kwargs)
    except (Exception, SystemExit) as exc:  # the user's code may raise anything
        raise InitcliError(call_param, f"calling {call_text} failed: {one_line(exc)}") from None
    example = None
    if isinstance(built, tuple) and len(built) == 2:
        built, example = built
    if not isinstance(built, torch.nn.Module):
        raise InitcliError(type_param, f"{name} returned {type(built).__name__}, not a torch.nn.Module (or a "
                                       "(model, example_input) pair)")
    return built, example


def draw_inputs(*, seed: int, dtype, batch: int, input_shape: Sequence[int] | None = None,
                input_std: float = 1.0, tokens: int | None = None, seq_len: int | None = None) -> np.ndarray:
    """The inputs of a run, from the seed's `inputs` stream: N(0, input_std²) of shape
    (batch, *input_shape) drawn as propagate draws its (batch, n0), or token ids uniform in
    [0, tokens) of shape (batch, seq_len)."""
    streams = seed_streams(seed)
    if tokens is not None:
        return streams["inputs"].integers(0, tokens, size=(batch, seq_len), dtype=np.int64)
    dtype = np.dtype(dtype)
    return gaussian(streams["inputs"], (batch, *input_shape), dtype) * dtype.type(input_std)


def check_input_options(*, batch: int, input_shape, tokens, seq_len, example) -> None:
    if tokens is not None or seq_len is not None:
        if tokens is None or seq_len is None:
            raise InitcliError("tokens" if tokens is None else "seq_len", "--tokens and --seq-len go together")
        if input_shape is not None:
            raise InitcliError("input_shape", "give either --input-shape or --tokens/--seq-len, not both")
        for param, value in (("tokens", tokens), ("seq_len", seq_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > MAX_SHAPE_ELEMENTS:
                raise InitcliError(param, f"must be a positive integer, got {value!r}")
    elif input_shape is None and example is None:
        raise InitcliError("input_shape", "the model needs inputs: give --input-shape (e.g. 3,32,32) or "
                                          "--tokens VOCAB --seq-len T, or return (model, example_input)")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise InitcliError("batch", f"must be an integer in [1, {MAX_BATCH}], got {batch!r}")
    if input_shape is not None:
        elements = batch * math.prod(int(d) for d in input_shape)
        if elements > MAX_SHAPE_ELEMENTS:
            raise InitcliError("input_shape", f"--batch × --input-shape is {elements} values, more than any run here "
                                              f"can hold ({MAX_SHAPE_ELEMENTS})")

