"""`probe`: propagate's per-layer diagnosis on any `torch.nn.Module`, through hooks.

A forward hook on every probed module measures its output as it is produced; a tensor hook
on that output measures ∂L/∂output as the backward pass reaches it. The loss is propagate's,
L = Σ g ⊙ y for a unit-Gaussian cotangent g on the model's output y, and the inputs and g
come from the seed's `inputs` and `cotangent` streams exactly as propagate draws them, so an
`nn.Sequential` of Linear and ReLU holding a stack's weights gives propagate's numbers: a
Linear row's act_* and grad_var are propagate's preact_* and grad_var (δ = ∂L/∂h), the
following ReLU row's act_*, dead_frac, effective_rank and input_cosine are propagate's.

Statistics are initcli's own (`initcli.stats`) on numpy views of the tensors:
- act_mean, act_var, grad_var, weight_std, weight_grad_var: over every entry (batch, units,
  and for conv outputs channels and positions).
- effective_rank, input_cosine: between the inputs of the batch, each input's whole output
  flattened to one vector.
- channel_mean_sq, channel_var (Brock et al. 2021, signal-propagation plots): the mean over
  channels of the squared channel mean and of the channel variance, each taken over batch
  and positions. The channel axis is 1 (torch's N, C, … layout) for outputs of 3 or more
  dimensions, except for token inputs, whose (batch, sequence, features) outputs have it last.
- dead_frac: share of channels (units) whose output is exactly 0 for every input and position.
- saturated_frac: share of outputs in the flat part of a Tanh or Sigmoid (initcli's
  thresholds); 0 for the other activations initcli knows, nan (null) for other modules.

Rows are the modules in execution order (a module called twice gives two rows, the second
named `name#2`): leaves, modules holding parameters of their own, and residual branches.
A module is a residual branch when its attribute name is `branch` or `residual` (say
`self.branch = nn.Sequential(…)`), or when it carries `initcli_branch = True`; its row has
`branch_var`, the variance of what the branch adds to the stream before the sum.

The user's model is never modified: hooks are removed in `finally`, the training flags and
every buffer (BatchNorm's running statistics under `train_mode`) are put back, weight
gradients come from `torch.autograd.grad`, which leaves `.grad` alone, and `--reinit`
works on a `copy.deepcopy`.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from .checks import check_dtype, check_memory, check_seed
from .compare import DEAD_FRAC, SATURATED_FRAC, SYMMETRY_RANK, _ratio, _settled_rate, drift_bound
from .engine import seed_streams
from .errors import InitcliError, suggest
from .schemes import check_weight_scale, gaussian, make_init
from .stats import dead_fraction, effective_rank, mean_input_cosine, moments

BRANCH_NAMES = ("branch", "residual")
BRANCH_ATTRIBUTE = "initcli_branch"
MAX_BATCH = 1 << 20
MAX_SHAPE_ELEMENTS = 1 << 31


def _torch(param: str | None = None):
    from .optional import require

    return require("torch", param, "probe")


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleStats:
    """What one module call measured. Column names of `initcli probe`, in its order."""

    module: str
    type: str
    output_shape: str
    act_mean: float
    act_var: float
    grad_var: float
    weight_std: float
    weight_grad_var: float
    dead_frac: float
    saturated_frac: float
    effective_rank: float
    input_cosine: float
    channel_mean_sq: float
    channel_var: float
    branch_var: float | None = None  # only on residual-branch rows


PROBE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ModuleStats))[:-1]
COMPARE_PROBE_COLUMNS = ("scheme", "modules", "first_act_var", "last_act_var", "first_grad_var", "last_grad_var",
                         "grad_ratio", "max_saturated_frac", "max_dead_frac", "min_effective_rank",
                         "last_input_cosine", "verdict", "reason")


@dataclass(frozen=True)
class ProbeResult:
    """A probe run: its parameters, one record per module call, and a compare-style verdict."""

    params: dict
    modules: tuple[ModuleStats, ...]
    verdict: str
    reason: str

    @property
    def has_branches(self) -> bool:
        return any(m.branch_var is not None for m in self.modules)

    @property
    def columns(self) -> tuple[str, ...]:
        return PROBE_COLUMNS + (("branch_var",) if self.has_branches else ())

    def rows(self) -> list[dict]:
        keep = set(self.columns)
        return [{k: v for k, v in asdict(m).items() if k in keep} for m in self.modules]


@dataclass(frozen=True)
class ProbeComparison:
    """`--reinit` with several schemes: one probe per scheme and one summary row each."""

    params: dict
    runs: tuple[ProbeResult, ...]

    def rows(self) -> list[dict]:
        return [summary_row(run) for run in self.runs]


# -- loading the user's model -----------------------------------------------------------------


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


def _one_line(exc: BaseException) -> str:
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
        raise InitcliError(None, f"cannot import '{where}': {_one_line(exc)}") from None
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


def load_model(target: str, kwargs: dict | None = None):
    """Build the user's model: (module, example_input or None)."""
    _torch("target")
    name = target.rpartition(":")[2]
    return build_model(load_callable(target), kwargs or {}, name=name, call_text=f"{name}(**kwargs)",
                       call_param="kwargs" if kwargs else None, type_param=None)


def build_model(factory: Callable, kwargs: dict, *, name: str, call_text: str, call_param: str | None,
                type_param: str | None):
    """Call the user's builder: (module, example_input or None). Whatever it raises, or a
    result that is not a torch.nn.Module (or a (model, example_input) pair), is one line:
    naming `call_param` or `type_param`. Shared by probe and coordcheck --module."""
    torch = _torch(type_param)
    try:
        built = factory(**kwargs)
    except (Exception, SystemExit) as exc:  # the user's code may raise anything
        raise InitcliError(call_param, f"calling {call_text} failed: {_one_line(exc)}") from None
    example = None
    if isinstance(built, tuple) and len(built) == 2:
        built, example = built
    if not isinstance(built, torch.nn.Module):
        raise InitcliError(type_param, f"{name} returned {type(built).__name__}, not a torch.nn.Module (or a "
                                       "(model, example_input) pair)")
    return built, example


# -- inputs ------------------------------------------------------------------------------------


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


# -- re-initialising a copy ----------------------------------------------------------------------


def reinit_copy(model, init, *, seed: int, bias_std: float = 0.0):
    """A deep copy of `model` whose Linear, Conv and Embedding weights are drawn with `init`
    (torch layout: fans from (out, in, *kernel)) from the seed's `weights` stream, in
    `named_modules` order, and their biases from N(0, bias_std²) on the `biases` stream, as
    `engine.build_stack` draws a stack's; so a Sequential of Linear layers gets the weights
    propagate would sample. Other parameters (norms' affine weights) are left as they are."""
    torch = _torch()
    clone = copy.deepcopy(model)
    streams = seed_streams(seed)
    kinds = (torch.nn.Linear, torch.nn.modules.conv._ConvNd, torch.nn.Embedding)
    with torch.no_grad():
        for _, module in clone.named_modules():
            if not isinstance(module, kinds):
                continue
            weight = module.weight
            dtype = _numpy_dtype(weight.dtype)
            drawn = init.sample(tuple(weight.shape), streams["weights"], dtype)
            weight.copy_(torch.from_numpy(np.ascontiguousarray(drawn)))
            if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
                weight[module.padding_idx].zero_()  # the padding row stays 0, as torch initialises it
            bias = getattr(module, "bias", None)
            if bias is not None:
                drawn = (bias_std * gaussian(streams["biases"], tuple(bias.shape))).astype(dtype)
                bias.copy_(torch.from_numpy(drawn))
    return clone


def _numpy_dtype(torch_dtype) -> np.dtype:
    name = str(torch_dtype).removeprefix("torch.")
    if name not in ("float32", "float64"):
        raise InitcliError("dtype", f"probe measures float32 or float64 models, this one holds {name}; "
                                    "convert it or pass --dtype")
    return np.dtype(name)


# -- the probe ---------------------------------------------------------------------------------


def _selected(model, modules: str | Sequence[str] | None, max_depth: int | None) -> dict:
    """{module: (name, is_branch)} of the modules that get a row."""
    if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0):
        raise InitcliError("max_depth", f"must be an integer ≥ 0, got {max_depth!r}")
    globs = None
    if modules is not None:
        globs = [g.strip() for g in (modules.split(",") if isinstance(modules, str) else modules)]
        if not all(globs):
            raise InitcliError("modules", f"must be a comma list of name patterns such as 'layer1.*', got {modules!r}")
    chosen = {}
    for name, module in model.named_modules():
        depth = 0 if name == "" else name.count(".") + 1
        if max_depth is not None and depth > max_depth:
            continue
        leaf = next(module.children(), None) is None or (max_depth is not None and depth == max_depth)
        own = next(module.parameters(recurse=False), None) is not None
        branch = bool(getattr(module, BRANCH_ATTRIBUTE, False)) or name.rpartition(".")[2] in BRANCH_NAMES
        if not (leaf or own or branch):
            continue
        label = name or "(model)"
        if globs is not None and not any(fnmatch.fnmatchcase(label, g) for g in globs):
            continue
        chosen[module] = (label, branch)
    if not chosen:
        raise InitcliError("modules", f"no module matches {modules!r}" if modules is not None
                           else "the model has no module to probe")
    return chosen


def _first_tensor(value, torch):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    if isinstance(value, dict):
        return next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
    return None


_SATURATING = {"Tanh": "tanh", "Sigmoid": "sigmoid"}
_NON_SATURATING = {"ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "ELU", "SELU", "Softplus", "Mish", "PReLU", "CELU"}


def _saturated_frac(type_name: str, y: np.ndarray) -> float:
    if type_name in _SATURATING:
        from .activations import get_activation

        return float(np.count_nonzero(get_activation(_SATURATING[type_name]).saturated(y)) / y.size)
    return 0.0 if type_name in _NON_SATURATING else math.nan


def _channels(y: np.ndarray, channels_last: bool) -> np.ndarray:
    """(rows, channels): every position of every input a row."""
    if y.ndim <= 2:
        return y.reshape(y.shape[0], -1) if y.ndim == 2 else y.reshape(-1, 1)
    if not channels_last:
        y = np.moveaxis(y, 1, -1)
    return y.reshape(-1, y.shape[-1])


def _forward_stats(y: np.ndarray, type_name: str, channels_last: bool) -> dict:
    act_mean, act_var = moments(y)
    per_input = y.reshape(y.shape[0], -1)
    view = _channels(y, channels_last)
    channel_mean = view.mean(axis=0, dtype=np.float64)
    channel_var = view.var(axis=0, dtype=np.float64)
    return {"act_mean": act_mean, "act_var": act_var, "dead_frac": dead_fraction(np.abs(view)),
            "saturated_frac": _saturated_frac(type_name, y), "effective_rank": effective_rank(per_input),
            "input_cosine": mean_input_cosine(per_input),
            "channel_mean_sq": float(np.mean(channel_mean * channel_mean)), "channel_var": float(np.mean(channel_var))}


def probe(model, inputs, *, seed: int = 0, train_mode: bool = False, modules: str | Sequence[str] | None = None,
          max_depth: int | None = None, channels_last: bool | None = None, params: dict | None = None,
          progress: Callable[[int], None] | None = None) -> ProbeResult:
    """Run `inputs` (a tensor or array, or a tuple of them) through `model`, backpropagate a
    unit-Gaussian cotangent drawn from the seed's `cotangent` stream in the output's shape
    and dtype, and measure every probed module (see the module docstring). The model runs in
    eval mode unless `train_mode`; it is left exactly as it was. `channels_last` (default:
    true for integer inputs) says where conv-like outputs keep their channels. `progress(1)`
    hears of each module measured, forward and backward."""
    torch = _torch()
    seed = check_seed(seed)
    chosen = _selected(model, modules, max_depth)
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = first.device if first is not None else torch.device("cpu")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in args)
    # float inputs in the model's dtype (a float64 numpy array into a float32 model)
    args = tuple((a.to(device, first.dtype) if first is not None and a.is_floating_point() else a.to(device))
                 if isinstance(a, torch.Tensor) else a for a in args)
    float_args = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
    if channels_last is None:
        channels_last = not float_args
    float_args_set = {id(a) for a in float_args}
    args = tuple(a.detach().requires_grad_(True) if id(a) in float_args_set else a for a in args)
    float_args = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
    for a in float_args:
        _numpy_dtype(a.dtype)

    records: list[dict] = []
    calls: dict = {}
    running: list[str] = []
    handles = []
    grad_handles = []

    def pre_hook(module, _inputs):
        running.append(names.get(module, type(module).__name__))

    def hook(module, _inputs, output):
        if running:
            running.pop()
        if module not in chosen:
            return
        label, branch = chosen[module]
        calls[module] = calls.get(module, 0) + 1
        if calls[module] > 1:
            label = f"{label}#{calls[module]}"
        tensor = _first_tensor(output, torch)
        type_name = type(module).__name__
        record = {"module": label, "type": type_name, "branch": branch, "grad_var": math.nan,
                  "weight_grad_var": math.nan, "owner": module}
        weight = getattr(module, "weight", None)
        record["weight_std"] = (math.sqrt(moments(weight.detach().cpu().numpy())[1])
                                if isinstance(weight, torch.nn.Parameter) and weight.is_floating_point() else math.nan)
        if tensor is None or not tensor.is_floating_point() or tensor.ndim == 0:
            record |= {"output_shape": "-" if tensor is None else "x".join(map(str, tensor.shape)),
                       **{k: math.nan for k in ("act_mean", "act_var", "dead_frac", "saturated_frac", "effective_rank",
                                                "input_cosine", "channel_mean_sq", "channel_var")}}
        else:
            y = tensor.detach()
            record["output_shape"] = "x".join(map(str, y.shape))
            with np.errstate(all="ignore"):
                record |= _forward_stats(y.cpu().numpy(), type_name, channels_last)
            if tensor.requires_grad:
                def on_grad(grad, record=record):
                    with np.errstate(all="ignore"):
                        record["grad_var"] = moments(grad.detach().cpu().numpy())[1]
                    if progress is not None:
                        progress(1)
                grad_handles.append(tensor.register_hook(on_grad))
        records.append(record)
        if progress is not None:
            progress(1)

    names = {m: (n or "(model)") for n, m in model.named_modules()}
    training = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(hook))
        model.train(bool(train_mode))
        weights = [p for p in model.parameters() if p.requires_grad]
        try:
            output = model(*args)
        except Exception as exc:  # the user's model refuses the input: say which module and why
            where = running[-1] if running else "(model)"
            shape = ", ".join(",".join(map(str, a.shape[1:])) if isinstance(a, torch.Tensor) else type(a).__name__
                              for a in args)
            raise InitcliError("input_shape", f"module '{where}' rejected inputs of shape {shape or '()'}: "
                                              f"{_one_line(exc)}") from None
        out = _first_tensor(output, torch)
        if out is None or not out.is_floating_point():
            raise InitcliError(None, f"the model returned {type(output).__name__}, not a floating-point tensor "
                                         "to backpropagate from")
        out_dtype = _numpy_dtype(out.dtype)
        cotangent = gaussian(seed_streams(seed)["cotangent"], tuple(out.shape), out_dtype)
        wanted = weights + float_args
        weight_grads = {}
        if out.requires_grad and wanted:
            grads = torch.autograd.grad(out, wanted, torch.from_numpy(cotangent).to(out.device), allow_unused=True)
            weight_grads = {id(p): g for p, g in zip(weights, grads)}
        del output, out
    finally:
        for handle in handles + grad_handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    rows = []
    with np.errstate(all="ignore"):
        for record in records:
            owner = record.pop("owner")
            weight = getattr(owner, "weight", None)
            grad = weight_grads.get(id(weight)) if weight is not None else None
            if grad is not None:
                record["weight_grad_var"] = moments(grad.detach().cpu().numpy())[1]
            branch = record.pop("branch")
            rows.append(ModuleStats(**record, branch_var=record["act_var"] if branch else None))
    rows = tuple(rows)
    run_params = {"seed": seed, "train_mode": bool(train_mode), "modules": modules, "max_depth": max_depth,
                  **(params or {})}
    verdict, reason = judge(rows, channels_last)
    return ProbeResult(run_params, rows, verdict, reason)


# -- verdicts ------------------------------------------------------------------------------------


def _weighted(rows: Sequence[ModuleStats]) -> list[ModuleStats]:
    """The rows of modules with weights (what propagate calls layers); all rows if none has."""
    weighted = [r for r in rows if not math.isnan(r.weight_std)]
    return weighted or list(rows)


def _positions(shape: str, channels_last: bool) -> int:
    dims = [int(d) for d in shape.split("x")]
    if len(dims) < 3:
        return 1
    return math.prod(dims[1:-1]) if channels_last else math.prod(dims[2:])


def judge(rows: Sequence[ModuleStats], channels_last: bool = False) -> tuple[str, str]:
    """compare's verdict rules (`initcli.compare.judge`) on a probe: the layers are the modules
    with weights, in execution order; dead and saturated look at every row. The finite-width
    bound takes each weighted module's channels as its width."""
    layers = _weighted(rows)
    first, last = layers[0], rows[-1]
    if 0 < first.effective_rank <= SYMMETRY_RANK:
        return "symmetric", (f"{first.module}'s outputs move together (effective rank {first.effective_rank:.3g}): "
                             "identical units get identical updates and never separate")
    measured = [r for r in rows if r.output_shape != "-"]
    bad = next((r for r in measured if math.isinf(r.act_var) or math.isinf(r.grad_var) or math.isnan(r.act_var)),
               None)
    if bad is not None:
        return "overflow", f"values grew past the dtype's range at {bad.module}"
    if last.act_var == 0:
        return "no-signal", f"{last.module}'s output is the same for every input: it cannot depend on the input"
    if first.grad_var == 0:
        return "no-signal", f"{first.module} gets no gradient at all: nothing learns"
    dead = max(rows, key=lambda r: r.dead_frac if not math.isnan(r.dead_frac) else -1)
    if dead.dead_frac > DEAD_FRAC:
        return "dead", f"{dead.dead_frac:.0%} of {dead.module}'s channels are 0 for every input"
    saturated = max(rows, key=lambda r: r.saturated_frac if not math.isnan(r.saturated_frac) else -1)
    if saturated.saturated_frac > SATURATED_FRAC:
        return "saturated", (f"{saturated.saturated_frac:.0%} of {saturated.module}'s outputs sit in the flat part "
                             "of the activation")
    # The trend is read over the trunk: the longest run of weighted modules with one output
    # shape. Across a change of shape (pooling, a narrow head) the gradient's scale changes by
    # the shapes' ratio, which says nothing about depth.
    layers = _trunk(layers)
    # per channel rather than per entry: average pooling over P positions divides each entry's
    # gradient by P and multiplies the entries by P, which is no vanishing
    grads = [r.grad_var * _positions(r.output_shape, channels_last) for r in layers if math.isfinite(r.grad_var)]
    if len(grads) < 2:
        return "stable", "too few modules with a gradient to see a trend"
    depth = len(grads)
    widths = [int(r.output_shape.split("x")[-1 if channels_last else 1]) if "x" in r.output_shape else 1
              for r in layers]
    bound = drift_bound([0] + [max(w, 1) for w in widths])
    grad_ratio = _ratio(grads[0], grads[-1])  # per channel
    settled = _settled_rate(grads)
    grad_step = math.inf if settled == 0 else 1 / settled
    acts = [r.act_var for r in layers if math.isfinite(r.act_var)]
    act_step = _settled_rate(acts)
    if grad_step ** (depth - 1) > bound:
        return "exploding", (f"gradient grows ×{grad_step:.3g} per module going down: ×{grad_ratio:.2g} over "
                             f"{_span(layers)}")
    if act_step ** (len(acts) - 1) > bound:
        return "exploding", f"activations grow ×{act_step:.3g} per module going up"
    if grad_step ** (depth - 1) < 1 / bound:
        return "vanishing", (f"gradient shrinks ×{grad_step:.3g} per module going down: ×{grad_ratio:.2g} over "
                             f"{_span(layers)}")
    return "stable", (f"gradient variance changes ×{grad_ratio:.2g} over {_span(layers)}, within the "
                      f"finite-width bound ×{bound:.2g}")


def _span(layers: Sequence[ModuleStats]) -> str:
    return f"the {len(layers)} weighted modules from {layers[0].module} to {layers[-1].module}"


def _trunk(layers: Sequence[ModuleStats]) -> list[ModuleStats]:
    """The longest run of consecutive modules sharing an output shape (all of them if no run
    has two)."""
    best: list[ModuleStats] = []
    run: list[ModuleStats] = []
    for row in layers:
        run = run + [row] if run and run[-1].output_shape == row.output_shape else [row]
        if len(run) > len(best):
            best = run
    return best if len(best) >= 2 else list(layers)


def summary_row(result: ProbeResult) -> dict:
    rows = result.modules
    layers = _weighted(rows)

    def extreme(fn, column):
        values = [getattr(r, column) for r in rows if not math.isnan(getattr(r, column))]
        return fn(values) if values else math.nan

    return {"scheme": result.params.get("reinit", "(as built)"), "modules": len(rows),
            "first_act_var": layers[0].act_var, "last_act_var": rows[-1].act_var,
            "first_grad_var": layers[0].grad_var, "last_grad_var": layers[-1].grad_var,
            "grad_ratio": _ratio(layers[0].grad_var, layers[-1].grad_var),
            "max_saturated_frac": extreme(max, "saturated_frac"), "max_dead_frac": extreme(max, "dead_frac"),
            "min_effective_rank": extreme(min, "effective_rank"), "last_input_cosine": rows[-1].input_cosine,
            "verdict": result.verdict, "reason": result.reason}


# -- the command's whole run --------------------------------------------------------------------


def estimate_bytes(model, trial_args: tuple, batch: int, trial_batch: int) -> int:
    """Parameters (and their gradients), plus every module's output for a batch scaled up from
    a forward pass of `trial_batch` inputs: autograd keeps about one tensor per module output
    for the backward pass and the gradient arrives beside it; the statistics add a float64
    copy of the largest output."""
    torch = _torch()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    sizes: list[int] = []

    def count(_m, _i, output):
        tensor = _first_tensor(output, torch)
        if tensor is not None:
            sizes.append(tensor.numel() * tensor.element_size())

    handles = []
    try:
        for module in model.modules():
            if next(module.children(), None) is None:
                handles.append(module.register_forward_hook(count))
        with torch.no_grad():
            model(*trial_args)
    finally:
        for handle in handles:
            handle.remove()
    scale = batch / trial_batch
    kept = 2 * sum(sizes) * scale
    largest = max(sizes, default=0) * scale * 2  # a float64 copy of a float32 output
    return int(2 * params + kept + largest) + (64 << 20)


def run_probe(target: str, *, kwargs: dict | str | None = None, input_shape: Sequence[int] | None = None,
              batch: int = 64, input_std: float = 1.0, tokens: int | None = None, seq_len: int | None = None,
              dtype: str = "float32", device: str = "cpu", seed: int = 0, train_mode: bool = False,
              modules: str | None = None, max_depth: int | None = None, reinit: Sequence[str] | None = None,
              activation: str = "relu", bias_std: float = 0.0, init_options: dict | None = None,
              progress: Callable[[int], None] | None = None, available: int | None = None,
              fix: Callable | None = None):
    """`initcli probe`: build the model from `target`, draw its inputs, check the memory,
    and probe it (once as built, or once per `reinit` scheme on re-initialised copies).
    Returns a ProbeResult, or a ProbeComparison for several schemes; with `fix` (probe
    --fix, `initcli.fixing`), what fix(model, args, params=…, **probe options) returns."""
    torch = _torch("target")
    kwargs = parse_kwargs(kwargs) if isinstance(kwargs, str) or kwargs is None else kwargs
    np_dtype = check_dtype(dtype)
    seed = check_seed(seed)
    input_std = check_weight_scale("input_std", input_std)
    bias_std = check_weight_scale("bias_std", bias_std)
    if device not in ("cpu", "cuda"):
        raise InitcliError("device", f"must be cpu or cuda, got '{device}'")
    if device == "cuda" and not torch.cuda.is_available():
        raise InitcliError("device", "cuda: torch sees no CUDA device here")
    inits = []
    for name in reinit or ():
        init = make_init(name, activation=activation, **(init_options or {}))
        if init.scheme.kind == "lsuv":
            raise InitcliError("reinit", "lsuv rescales from data layer by layer; probe cannot re-run it on a "
                                         "model it does not build")
        inits.append(init)
    model, example = load_model(target, kwargs)
    check_input_options(batch=batch, input_shape=input_shape, tokens=tokens, seq_len=seq_len, example=example)
    model = model.to(device=device, dtype=getattr(torch, np_dtype.name))
    if input_shape is not None or tokens is not None:
        x = draw_inputs(seed=seed, dtype=np_dtype, batch=batch, input_shape=input_shape, input_std=input_std,
                        tokens=tokens, seq_len=seq_len)
        args = (torch.from_numpy(x).to(device),)
        source = ({"tokens": tokens, "seq_len": seq_len} if tokens is not None
                  else {"input_shape": list(input_shape), "input_std": input_std})
        source["batch"] = batch
    else:
        args = example if isinstance(example, tuple) else (example,)
        args = tuple(a.to(device=device, dtype=getattr(torch, np_dtype.name))
                     if isinstance(a, torch.Tensor) and a.is_floating_point()
                     else (a.to(device) if isinstance(a, torch.Tensor) else a) for a in args)
        source = {"example_input": True}
    first = args[0] if isinstance(args[0], torch.Tensor) else None
    full = first.shape[0] if first is not None and first.ndim else 1
    trial = min(2, full)
    trial_args = tuple(a[:trial] if isinstance(a, torch.Tensor) and a.ndim else a for a in args)
    was = {m: m.training for m in model.modules()}
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        model.train(bool(train_mode))
        try:
            needed = estimate_bytes(model, trial_args, full, trial)
        except Exception as exc:
            probe(model, trial_args, seed=seed, train_mode=train_mode)  # names the module that refused
            raise InitcliError("input_shape", f"the model rejected the input: {_one_line(exc)}") from None
    finally:
        for m, flag in was.items():
            m.training = flag
        with torch.no_grad():
            for b, s in saved:
                b.copy_(s)
    check_memory(needed * (2 if inits or fix else 1), available, dtype=np_dtype,
                 options=("--batch", "--input-shape", "--seq-len"))
    params = {"target": target, "kwargs": kwargs, **source, "dtype": np_dtype.name, "device": device}
    options = dict(seed=seed, train_mode=train_mode, modules=modules, max_depth=max_depth,
                   channels_last=tokens is not None if example is None else None, progress=progress)
    if fix is not None:
        return fix(model, args, params=params, **options)
    if not inits:
        return probe(model, args, params=params, **options)
    runs = []
    for init in inits:
        copy_ = reinit_copy(model, init, seed=seed, bias_std=bias_std)
        scheme_params = {**params, "reinit": init.name, **init.params(), "bias_std": bias_std}
        runs.append(probe(copy_, args, params=scheme_params, **options))
        del copy_
    if len(runs) == 1:
        return runs[0]
    shared = {k: v for k, v in runs[0].params.items() if k not in ("reinit", "scheme", "mode", "distribution")}
    return ProbeComparison({**shared, "schemes": [r.params["reinit"] for r in runs]}, tuple(runs))
