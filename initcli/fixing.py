"""`probe --fix`: having diagnosed the user's torch model, repair its init and probe it again.

Both fixers work on a copy of the model and rescale the weight of each weighted module — a
Linear, a Conv or ConvTranspose, or Hugging Face's `Conv1D` (GPT-2's, weight laid out (in,
out)) — in the order the forward pass first calls them. The weights keep their own shape of
distribution (and any structure the model's init gave them); only their scale changes.
Biases, norms and embeddings are left as they are.

- lsuv: layer-sequential unit variance (Mishkin & Matas 2015, "All you need is a good init",
  Algorithm 1, without its orthonormal start). For each module in forward order, run the
  probe's own batch up to it and divide its weight by the standard deviation of its output,
  until that output's variance is within `tol` of 1 or `max_iter` rescalings were made.
- rescale: data-free. Set each weight's standard deviation to gain/√fan_in (He et al. 2015
  for ReLU) with the real fan_in (Linear: in; Conv: in/groups·kernel; ConvTranspose:
  in/groups·kernel/stride, the taps that reach one output on average; Conv1D: its first
  axis) and the gain of the activation that follows the module in the forward pass: torch's
  `calculate_gain` table, or initcli's forward gain 1/√E[φ(z)²] for the activations torch
  has none for (GELU, SiLU, ELU, Softplus). No activation before the next weighted module:
  gain 1. One forward pass is run, only to learn the call order.

A module the fixers cannot rescale is listed with what was done instead: a weight shared
with another module (a tied head would rescale the embedding too), a zero weight (a
zero-initialised head is a choice), an output that does not vary. Matrices that belong to
no weighted module (embeddings, MultiheadAttention's in_proj_weight) are listed untouched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from .errors import InitcliError, suggest
from .lsuv import DEFAULT_MAX_ITER, DEFAULT_TOL
from .probing import COMPARE_PROBE_COLUMNS, ProbeResult, probe, run_probe, summary_row
from .stats import moments

FIXES = ("lsuv", "rescale")
SAVE_SUFFIXES = (".safetensors",)

# torch activation modules by class name → (calculate_gain name, or initcli's activation name)
_TORCH_GAIN_NAMES = {"ReLU": "relu", "ReLU6": "relu", "LeakyReLU": "leaky_relu", "PReLU": "leaky_relu",
                     "RReLU": "leaky_relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "SELU": "selu"}
_COMPUTED_GAIN_NAMES = {"GELU": "gelu", "SiLU": "silu", "ELU": "elu", "CELU": "elu", "Softplus": "softplus"}
# in torch.nn.modules.activation but not elementwise activations
_NOT_ACTIVATIONS = {"MultiheadAttention", "Softmax", "Softmin", "LogSoftmax", "Softmax2d"}


@dataclass(frozen=True)
class LayerFix:
    """What a fixer did to one weighted module."""

    module: str
    type: str
    fan_in: int | float
    activation: str | None  # rescale: the activation whose gain was used
    gain: float | None  # rescale
    weight_std_before: float
    weight_std_after: float
    act_var_before: float | None  # lsuv: the module's output variance on the batch
    act_var_after: float | None
    iterations: int  # lsuv: rescalings made; rescale: 1 if rescaled
    status: str


LSUV_COLUMNS = ("module", "type", "weight_std_before", "weight_std_after", "act_var_before", "act_var_after",
                "iterations", "status")
RESCALE_COLUMNS = ("module", "type", "fan_in", "activation", "gain", "weight_std_before", "weight_std_after",
                   "status")
FIX_COLUMNS = ("stage",) + tuple(c for c in COMPARE_PROBE_COLUMNS if c != "scheme")


@dataclass(frozen=True)
class FixResult:
    """`probe --fix`: the probe of the model as built, the probe after the fix, and what the
    fix did to each weighted module."""

    params: dict
    fix: str
    before: ProbeResult
    after: ProbeResult
    layers: tuple[LayerFix, ...]
    untouched: tuple[str, ...]  # matrices of no weighted module: 'name (Type)'

    @property
    def columns(self) -> tuple[str, ...]:
        return FIX_COLUMNS

    def rows(self) -> list[dict]:
        """The before and after verdict rows, in compare's summary columns."""
        rows = []
        for stage, result in (("before", self.before), ("after", self.after)):
            summary = summary_row(result)
            rows.append({"stage": stage, **{c: summary[c] for c in FIX_COLUMNS[1:]}})
        return rows

    @property
    def layer_columns(self) -> tuple[str, ...]:
        return LSUV_COLUMNS if self.fix == "lsuv" else RESCALE_COLUMNS

    def layer_rows(self) -> list[dict]:
        keep = self.layer_columns
        return [{k: v for k, v in asdict(layer).items() if k in keep} for layer in self.layers]

    @property
    def rescaled(self) -> int:
        return sum(1 for layer in self.layers if layer.weight_std_after != layer.weight_std_before)


def check_fix(name: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in FIXES:
        shown = name if isinstance(name, str) else type(name).__name__
        raise InitcliError("fix", f"unknown fix '{shown}'{suggest(str(shown), list(FIXES))}; "
                                  f"choose from {', '.join(FIXES)}")
    return name.strip().lower()


def check_lsuv_limits(tol: float, max_iter: int) -> tuple[float, int]:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (0 < tol < 1):
        raise InitcliError("lsuv_tol", f"must be a number in (0, 1), got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or not 1 <= max_iter <= 1000:
        raise InitcliError("lsuv_max_iter", f"must be an integer in [1, 1000], got {max_iter!r}")
    return float(tol), max_iter


# -- the model's weighted modules -----------------------------------------------------------------


def _torch():
    from .optional import require

    return require("torch", "fix", "probe --fix")


def is_hf_conv1d(module) -> bool:
    """Hugging Face's Conv1D (GPT-2, and the projects that copied it): y = x·W + b with W of
    shape (in, out) = (nx, nf), the transpose of a Linear's."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and getattr(module, "nf", None) is not None
            and getattr(weight, "ndim", 0) == 2 and weight.shape[1] == module.nf)


def is_weighted(module) -> bool:
    torch = _torch()
    if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
        return isinstance(module.weight, torch.nn.Parameter) and module.weight.is_floating_point()
    return is_hf_conv1d(module)


def fan_in(module) -> int | float:
    """The number of inputs each output of the module sums over (on average over positions,
    for a transposed convolution)."""
    torch = _torch()
    weight = module.weight
    if is_hf_conv1d(module):
        return int(weight.shape[0])
    if isinstance(module, torch.nn.modules.conv._ConvTransposeNd):
        # weight (in, out/groups, *kernel): an output position is reached by kernel/stride taps
        # of each of the group's in/groups channels
        taps = math.prod(weight.shape[2:]) / math.prod(module.stride)
        fans = weight.shape[0] / module.groups * max(taps, 1.0)
        return int(fans) if fans.is_integer() else fans
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return int(weight.shape[1] * math.prod(weight.shape[2:]))
    return int(weight.shape[1])


def _activation_kind(module) -> str | None:
    """calculate_gain's (or initcli's) name for an activation module, '?' for an activation with
    no gain here, None for a module that is not an activation."""
    name = type(module).__name__
    if name in _TORCH_GAIN_NAMES:
        return _TORCH_GAIN_NAMES[name]
    if name in _COMPUTED_GAIN_NAMES:
        return _COMPUTED_GAIN_NAMES[name]
    if "GELU" in name:  # transformers' GELUActivation, NewGELUActivation, GELUTanh…
        return "gelu"
    if "SiLU" in name or "Swish" in name:
        return "silu"
    if type(module).__module__ == "torch.nn.modules.activation" and name not in _NOT_ACTIVATIONS:
        return "?"
    return None


def _negative_slope(module) -> float:
    name = type(module).__name__
    if name == "PReLU":
        return float(module.weight.detach().double().mean())
    if name == "RReLU":
        return (module.lower + module.upper) / 2  # its mean slope in training
    return float(getattr(module, "negative_slope", 0.01))


def activation_gain(module) -> tuple[str, float]:
    """(name, gain) for the activation module that follows a weighted module (None: linear)."""
    torch = _torch()
    if module is None:
        return "linear", 1.0
    kind = _activation_kind(module)
    if kind == "?":
        return f"{type(module).__name__} (no gain known: 1)", 1.0
    if kind == "leaky_relu":
        slope = _negative_slope(module)
        return f"leaky_relu({slope:g})", torch.nn.init.calculate_gain("leaky_relu", slope)
    if kind in _TORCH_GAIN_NAMES.values():
        return kind, torch.nn.init.calculate_gain(kind)
    from .theory import gain

    return kind, gain(kind).forward_gain


def _call_order(model, args, train_mode: bool) -> tuple[list, dict]:
    """Leaf and weighted modules in the order their forward passes end (first calls only), and
    for each weighted module the activation module called after it before the next weighted
    module (None if none)."""
    torch = _torch()
    order: list = []
    seen: set[int] = set()

    def hook(module, _inputs, _output):
        if id(module) not in seen:
            seen.add(id(module))
            order.append(module)

    watched = [m for m in model.modules() if next(m.children(), None) is None or is_weighted(m)]
    with _running(model, train_mode):
        handles = [m.register_forward_hook(hook) for m in watched]
        try:
            with torch.no_grad():
                model(*args)
        finally:
            for handle in handles:
                handle.remove()
    followers = {}
    for index, module in enumerate(order):
        if not is_weighted(module):
            continue
        follower = None
        for later in order[index + 1:]:
            if is_weighted(later):
                break
            if _activation_kind(later) is not None:
                follower = later
                break
        followers[module] = follower
    return [m for m in order if is_weighted(m)], followers


class _running:
    """The model in train or eval mode for a forward pass, as the probe runs it (train mode:
    normalisation on batch statistics, dropout off, so that every pass sees the same
    function); its training flags and buffers (a BatchNorm's running statistics) put back
    afterwards."""

    def __init__(self, model, train_mode: bool) -> None:
        self.model, self.train_mode = model, bool(train_mode)

    def __enter__(self):
        self.flags = {m: m.training for m in self.model.modules()}
        self.buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        self.model.train(self.train_mode)
        torch = _torch()
        for module in self.model.modules():
            if isinstance(module, torch.nn.modules.dropout._DropoutNd):
                module.eval()
        return self

    def __exit__(self, *_exc):
        torch = _torch()
        for module, flag in self.flags.items():
            module.training = flag
        with torch.no_grad():
            for buffer, saved in self.buffers:
                buffer.copy_(saved)
        return False


def _names(model) -> dict:
    return {module: (name or "(model)") for name, module in model.named_modules()}


def _weight_std(weight) -> float:
    return math.sqrt(max(moments(weight.detach().cpu().numpy())[1], 0.0))


def _tied(model) -> dict[int, list[str]]:
    """{id(parameter): its name in each module holding it} for parameters held by more than one
    module (a module reachable under two names holds its weight alone)."""
    owners: dict[int, dict[int, str]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for param_name, parameter in module.named_parameters(recurse=False):
            name = f"{module_name}.{param_name}" if module_name else param_name
            owners.setdefault(id(parameter), {}).setdefault(id(module), name)
    return {key: list(found.values()) for key, found in owners.items() if len(found) > 1}


def _untouched(model, weighted: set[int]) -> tuple[str, ...]:
    """Matrices and kernels (parameters of 2 or more dimensions) of no weighted module the fixer
    went through (ids in `weighted`)."""
    owners = {}
    for module_name, module in model.named_modules():
        for param_name, parameter in module.named_parameters(recurse=False):
            if parameter.ndim >= 2 and parameter.is_floating_point() and id(parameter) not in weighted:
                owners.setdefault(id(parameter), f"{module_name + '.' if module_name else ''}{param_name} "
                                                 f"({type(module).__name__})")
    return tuple(owners.values())


# -- the fixers ------------------------------------------------------------------------------------


class _Reached(BaseException):
    """Stops a forward pass at the module being measured (BaseException: user code catching
    Exception must not swallow it)."""


def _output_variance(model, module, args) -> float:
    """The variance of every entry of `module`'s first output on `args`; the rest of the
    forward pass is not run."""
    torch = _torch()
    measured = []

    def hook(_module, _inputs, output):
        tensor = output if isinstance(output, torch.Tensor) else None
        measured.append(math.nan if tensor is None else moments(tensor.detach().cpu().numpy())[1])
        raise _Reached

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(*args)
    except _Reached:
        pass
    finally:
        handle.remove()
    return measured[0] if measured else math.nan


def lsuv(model, args: tuple, *, train_mode: bool, names: dict | None = None, tol: float = DEFAULT_TOL,
         max_iter: int = DEFAULT_MAX_ITER) -> tuple[tuple[LayerFix, ...], set[int]]:
    """Rescale `model`'s weighted modules in place, in forward order, each until its output
    variance on `args` is within `tol` of 1 (at most `max_iter` rescalings). Returns what was
    done to each module (in that order) and the ids of their weights."""
    torch = _torch()
    tol, max_iter = check_lsuv_limits(tol, max_iter)
    names = names or _names(model)
    ordered, _ = _call_order(model, args, train_mode)
    tied = _tied(model)
    layers = []
    with _running(model, train_mode):
        for module in ordered:
            weight = module.weight
            std_before = _weight_std(weight)
            base = dict(module=names[module], type=type(module).__name__, fan_in=fan_in(module), activation=None,
                        gain=None, weight_std_before=std_before)
            if id(weight) in tied:
                layers.append(LayerFix(**base, weight_std_after=std_before, act_var_before=None, act_var_after=None,
                                       iterations=0, status=_tied_status(tied[id(weight)], names[module])))
                continue
            var = first = _output_variance(model, module, args)
            used, status = 0, "within tol"
            while True:
                if not math.isfinite(var):
                    status = "overflow: kept"
                    break
                if var == 0:
                    status = "no variance: kept"
                    break
                if abs(var - 1) <= tol:
                    status = "within tol" if used == 0 else "rescaled"
                    break
                if used == max_iter:
                    status = f"not within tol after {max_iter}"
                    break
                with torch.no_grad():
                    weight.mul_(1 / math.sqrt(var))
                used += 1
                var = _output_variance(model, module, args)
            layers.append(LayerFix(**base, weight_std_after=_weight_std(weight), act_var_before=first,
                                   act_var_after=var, iterations=used, status=status))
    return tuple(layers), {id(module.weight) for module in ordered}


def rescale(model, args: tuple, *, train_mode: bool, names: dict | None = None) -> tuple[tuple[LayerFix, ...], set[int]]:
    """Set each weighted module's weight std to gain/√fan_in in place (see the module
    docstring). Returns what was done to each module (in forward order) and the ids of their
    weights."""
    torch = _torch()
    names = names or _names(model)
    ordered, followers = _call_order(model, args, train_mode)
    tied = _tied(model)
    layers = []
    for module in ordered:
        weight = module.weight
        std = _weight_std(weight)
        fans = fan_in(module)
        activation, gain = activation_gain(followers[module])
        target = gain / math.sqrt(fans)
        base = dict(module=names[module], type=type(module).__name__, fan_in=fans, activation=activation, gain=gain,
                    weight_std_before=std, act_var_before=None, act_var_after=None)
        if id(weight) in tied:
            status, used = _tied_status(tied[id(weight)], names[module]), 0
        elif std == 0 or not math.isfinite(std):
            # a zero weight is a choice (a zero-initialised head) or a symmetry no scale can break
            status, used = ("std 0: kept" if std == 0 else "overflow: kept"), 0
        else:
            with torch.no_grad():
                weight.mul_(target / std)
            status, used = "rescaled", 1
        layers.append(LayerFix(**base, weight_std_after=_weight_std(weight), iterations=used, status=status))
    return tuple(layers), {id(module.weight) for module in ordered}


def _tied_status(names: Sequence[str], module: str) -> str:
    # rescaling a tied head's weight would rescale the embedding it shares too
    return f"shared with {', '.join(n for n in names if n != module + '.weight')}: kept"


FIXERS = {"lsuv": lsuv, "rescale": rescale}


# -- the command's whole run ------------------------------------------------------------------------


def fix_and_probe(model, args: tuple, *, fix: str, params: dict, save: str | None = None, force: bool = False,
                  tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER, **probe_options) -> FixResult:
    """Probe `model` as built, fix a copy with `fix`, probe the copy, write its state_dict to
    `save` (a .safetensors file) if given. `probe_options` are `probing.probe`'s."""
    fix = check_fix(fix)
    before = probe(model, args, params=params, **probe_options)
    fixed = copy.deepcopy(model)
    names = _names(fixed)
    limits = {"tol": tol, "max_iter": max_iter} if fix == "lsuv" else {}
    layers, weighted = FIXERS[fix](fixed, args, train_mode=probe_options.get("train_mode", False), names=names,
                                   **limits)
    run_params = {**params, "fix": fix, **({"lsuv_tol": tol, "lsuv_max_iter": max_iter} if fix == "lsuv" else {})}
    after = probe(fixed, args, params=run_params, **probe_options)
    if save is not None:
        save_state_dict(fixed, save, force=force)
    return FixResult({**after.params, "save": save}, fix, before, after, layers, _untouched(fixed, weighted))


def save_state_dict(model, path: str, *, force: bool = False) -> None:
    """Write `model.state_dict()` to a .safetensors file, whole or not at all. Tied tensors are
    written once per name (so `load_state_dict(load_file(path))` finds every key). The only
    metadata is {"format": "pt"}: safetensors writes metadata in hash order, which differs from
    process to process, and the same command must give the same bytes."""
    torch = _torch()
    from .files import atomic_output
    from .optional import require

    safetensors_torch = require("safetensors.torch", "save", "--save")
    tensors = {}
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise InitcliError("save", f"the model's state_dict holds '{name}', a {type(value).__name__}: a "
                                       ".safetensors file holds tensors only")
        tensors[name] = value.detach().to("cpu").contiguous().clone()
    data = safetensors_torch.save(tensors, metadata={"format": "pt"})
    with atomic_output(path, "save", force=force, suffix=SAVE_SUFFIXES) as handle:
        handle.write(data)


def fixer(fix: str, *, save: str | None = None, force: bool = False, tol: float = DEFAULT_TOL,
          max_iter: int = DEFAULT_MAX_ITER) -> Callable:
    """`run_probe`'s `fix` hook for `probe --fix FIX [--save PATH]`. The fix name, its limits
    and the output path are checked here, before any work."""
    from .files import check_output

    fix = check_fix(fix)
    check_lsuv_limits(tol, max_iter)
    if save is not None:
        check_output(save, "save", force=force, suffixes=SAVE_SUFFIXES)

    def repair(model, args, **options) -> FixResult:
        return fix_and_probe(model, args, fix=fix, save=save, force=force, tol=tol, max_iter=max_iter, **options)

    return repair


def run_fix(target: str, *, fix: str, save: str | None = None, force: bool = False, tol: float = DEFAULT_TOL,
            max_iter: int = DEFAULT_MAX_ITER, **run_options) -> FixResult:
    """`initcli probe TARGET --fix FIX [--save PATH]` from Python: `probing.run_probe`'s model
    and inputs (`run_options` are its keywords), probed, fixed and probed again."""
    if run_options.get("reinit"):
        raise InitcliError("reinit", "does not apply with --fix, which repairs the model as built")
    hook = fixer(fix, save=save, force=force, tol=tol, max_iter=max_iter)
    return run_probe(target, fix=hook, **run_options)


__all__ = ["FIXES", "FIX_COLUMNS", "FixResult", "LayerFix", "activation_gain", "check_fix", "fan_in",
           "fix_and_probe", "fixer", "is_weighted", "lsuv", "rescale", "run_fix", "save_state_dict"]
