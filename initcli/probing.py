"""`probe`: propagate's per-layer diagnosis on any `torch.nn.Module`, through hooks.

A forward hook on every probed module measures its output as it is produced; a tensor hook
on that output measures ∂L/∂output as the backward pass reaches it. The loss is propagate's,
L = Σ g ⊙ y for a unit-Gaussian cotangent g on the model's output y, and the inputs and g
come from the seed's `inputs` and `cotangent` streams exactly as propagate draws them, so an
`nn.Sequential` of Linear and ReLU holding a stack's weights gives propagate's numbers: a
Linear row's act_* and grad_var are propagate's preact_* and grad_var (δ = ∂L/∂h), the
following ReLU row's act_*, dead_frac, effective_rank and input_cosine are propagate's.

The output y is the model's tensor, or the one named by `output` in a dict/ModelOutput (a key)
or tuple (an index); by default a ModelOutput's `logits`, else its first floating tensor that
is not a `loss`. When the last weighted module (the head) starts with all-zero weights — a
design (ViT's and Mixer's zero-initialised heads): it outputs 0 and passes no gradient until
it moves — a second unit-Gaussian cotangent is backpropagated from the head's input, so the
trunk's gradients are those it will get once the head moves, and the verdict is read up to
the head.

Statistics are initcli's own (`initcli.stats`) on numpy views of the tensors:
- act_mean, act_var, grad_var, weight_grad_var: over every entry (batch, units, and for conv
  outputs channels and positions).
- weight_std: the standard deviation of a weight matrix or kernel; for a scale vector (the
  weight of a LayerNorm, BatchNorm or RMSNorm) its mean instead, the scale it multiplies by.
- effective_rank, input_cosine: between the inputs of the batch, each input's whole output
  flattened to one vector.
- channel_mean_sq, channel_var (Brock et al. 2021, signal-propagation plots): the mean over
  channels of the squared channel mean and of the channel variance, each taken over batch
  and positions. The channel axis comes from the module's type: dim 1 for convolutions,
  BatchNorm, GroupNorm, pooling and `…2d`-style modules; the last dim for Linear, LayerNorm,
  Embedding and attention; other modules (activations, blocks) take the layout of the last
  typed module whose output had as many dimensions (at first: last for token inputs, else 1).
- dead_frac: share of channels (units) whose output is exactly 0 for every input and position.
- saturated_frac: share of outputs in the flat part of a Tanh or Sigmoid (initcli's
  thresholds); 0 for the other activations initcli knows, nan (null) for other modules.

Rows are the modules in execution order (a module called twice gives two rows, the second
named `name#2`): leaves, modules holding parameters of their own, repeated blocks and
residual branches. Repeated blocks are the containers whose names differ only by an index
(`blocks.3`, `layer1.0`/`layer2.1`, `h.11`, `encoder_layer_5`; the outermost such family,
and not a family of stages holding another): their outputs are the residual stream, which the
verdict judges; a model without them is judged over its weighted modules (those holding a
weight matrix or kernel). A module is a residual branch when its attribute name is `branch`
or `residual` (say `self.branch = nn.Sequential(…)`), or when it carries
`initcli_branch = True`; its row has `branch_var`, the variance of what the branch adds to
the stream before the sum.

Modes: by default normalisation layers run on batch statistics (BatchNorm in train mode, as
at the first training step) and everything else in eval mode (dropout and stochastic depth
off); `train_mode=False` runs the whole model in eval mode (running statistics).

The user's model is never modified: hooks are removed in `finally`, the training flags and
every buffer (BatchNorm's running statistics, a counter the forward replaces or bumps in
place) are put back, torch's random state is restored, weight gradients come from
`torch.autograd.grad`, which leaves `.grad` alone, and `--reinit` works on a
`copy.deepcopy`.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import importlib
import importlib.util
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .checks import check_dtype, check_memory, check_seed
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
    """What one module call measured. Column names of `initcli probe`, in its order; `kind`,
    `width` and `size` are what the verdict reads, not columns."""

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
    # "weighted" (a weight matrix or kernel), "norm", "block" (a repeated block), or "other"
    kind: str = field(default="other", compare=False)
    width: int = field(default=1, compare=False)  # channels of the output
    size: int = field(default=1, compare=False)  # values per input of the output


PROBE_COLUMNS: tuple[str, ...] = ("module", "type", "output_shape", "act_mean", "act_var", "grad_var", "weight_std",
                                  "weight_grad_var", "dead_frac", "saturated_frac", "effective_rank", "input_cosine",
                                  "channel_mean_sq", "channel_var")
COMPARE_PROBE_COLUMNS = ("scheme", "modules", "first_act_var", "last_act_var", "first_grad_var", "last_grad_var",
                         "grad_ratio", "max_saturated_frac", "max_dead_frac", "min_effective_rank",
                         "last_input_cosine", "verdict", "reason")


@dataclass(frozen=True)
class ProbeResult:
    """A probe run: its parameters, one record per module call, a compare-style verdict, and
    the modules the verdict judged (the repeated blocks, else the weighted modules)."""

    params: dict
    modules: tuple[ModuleStats, ...]
    verdict: str
    reason: str
    judged: tuple[str, ...] = ()

    @property
    def has_branches(self) -> bool:
        return any(m.branch_var is not None for m in self.modules)

    @property
    def columns(self) -> tuple[str, ...]:
        return PROBE_COLUMNS + (("branch_var",) if self.has_branches else ())

    def rows(self) -> list[dict]:
        return [{k: getattr(m, k) for k in self.columns} for m in self.modules]


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
    _torch("target")
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

    torch = _torch()
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
    torch = _torch(type_param)
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


def _is_norm(module, torch) -> bool:
    """A normalisation layer: its weight is a scale vector, not a matrix to draw."""
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.LocalResponseNorm)
    rms = getattr(torch.nn, "RMSNorm", None)
    return isinstance(module, norms + ((rms,) if rms is not None else ())) or "Norm" in type(module).__name__


def _is_hf_conv1d(module) -> bool:
    """Hugging Face's `Conv1D` (GPT-2's projections): a Linear whose weight is laid out (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def weight_plan(model) -> tuple[list[tuple[str, object, str, str]], list[str]]:
    """What `reinit_copy` redraws and what it leaves: ([(module name, module, parameter name,
    layout)], [names of the parameters it does not touch]). Redrawn: every weight matrix or
    kernel (a parameter of 2 or more dimensions named `weight`, or MultiheadAttention's packed
    projections) of a module that is not a normalisation layer, in `named_modules` order, a
    parameter shared by several modules (tied embeddings) once; layout `out_in` is torch's
    (out, in, *kernel), `in_out` Hugging Face Conv1D's (in, out). Left: everything else with 2
    or more dimensions by name (position embeddings, class tokens), then a count of the vectors
    (norm scales, biases of modules not redrawn, layer scales)."""
    torch = _torch()
    plan, untouched, seen, vectors = [], [], set(), 0
    drawn_biases = set()
    for name, module in model.named_modules():
        norm = _is_norm(module, torch)
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            weight = (pname == "weight" or (isinstance(module, torch.nn.MultiheadAttention)
                                            and pname in _ATTENTION_WEIGHTS))
            if weight and param.ndim >= 2 and not norm:
                plan.append((name, module, pname, "in_out" if _is_hf_conv1d(module) else "out_in"))
                drawn_biases.add(id(getattr(module, "in_proj_bias" if pname == "in_proj_weight" else "bias", None)))
            elif param.ndim >= 2:
                untouched.append(f"{name}.{pname}" if name else pname)
    for param in model.parameters():
        if param.ndim < 2 and id(param) not in drawn_biases:
            vectors += 1
    if vectors:
        untouched.append(f"{vectors} vector{'s' if vectors != 1 else ''} (norm scales, other biases)")
    return plan, untouched


def reinit_copy(model, init, *, seed: int, bias_std: float = 0.0):
    """A deep copy of `model` whose weight matrices and kernels (`weight_plan`: Linear, Conv,
    Embedding, Hugging Face Conv1D, MultiheadAttention's projections, any other non-norm
    module's `weight` of 2+ dimensions) are drawn with `init` (fans from torch's (out, in,
    *kernel) layout; Conv1D's (in, out) drawn as (out, in) and transposed) from the seed's
    `weights` stream, in `named_modules` order, and their biases from N(0, bias_std²) on the
    `biases` stream, as `engine.build_stack` draws a stack's; so a Sequential of Linear layers
    gets the weights propagate would sample. Everything else is left as it is (`weight_plan`
    lists it)."""
    torch = _torch()
    clone = copy.deepcopy(model)
    streams = seed_streams(seed)
    plan, _ = weight_plan(clone)
    with torch.no_grad():
        for _, module, pname, layout in plan:
            weight = getattr(module, pname)
            dtype = _numpy_dtype(weight.dtype)
            shape = tuple(weight.shape)
            drawn = init.sample(shape[::-1] if layout == "in_out" else shape, streams["weights"], dtype)
            drawn = drawn.T if layout == "in_out" else drawn
            weight.copy_(torch.from_numpy(np.ascontiguousarray(drawn)))
            if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
                weight[module.padding_idx].zero_()  # the padding row stays 0, as torch initialises it
            bias = getattr(module, "in_proj_bias" if pname == "in_proj_weight" else "bias", None)
            if isinstance(bias, torch.Tensor) and pname in ("weight", "in_proj_weight"):
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


_INDEXED = re.compile(r"\d+$")


def repeated_blocks(model) -> dict:
    """{block module: name} in `named_modules` order: containers whose names differ only by
    indices (`h.0`, `h.1`; `layer1.0`, `layer2.1`), two or more of a family. A family of stages
    (its members hold another family's members as children: ResNet's `layer1`…`layer4`) gives
    way to the family inside it; a family inside another family's members (the Conv-BN-act
    units inside MobileNet's blocks) gives way to the outer one."""
    containers = {name: module for name, module in model.named_modules()
                  if name and next(module.children(), None) is not None}
    families: dict[str, list[str]] = {}
    for name in containers:
        if _INDEXED.search(name.rpartition(".")[2]):
            pattern = ".".join(_INDEXED.sub("#", part) for part in name.split("."))
            families.setdefault(pattern, []).append(name)
    families = {pattern: names for pattern, names in families.items() if len(names) >= 2}
    family_of = {name: pattern for pattern, names in families.items() for name in names}

    def holds_blocks(pattern: str) -> bool:
        return any(f"{name}.{child}" in family_of for name in families[pattern]
                   for child, _ in containers[name].named_children())

    kept = [pattern for pattern in families if not holds_blocks(pattern)]

    def inside(pattern: str, other: str) -> bool:
        return all(any(name.startswith(outer + ".") for outer in families[other]) for name in families[pattern])

    outermost = {p for p in kept if not any(q != p and inside(p, q) for q in kept)}
    return {module: name for name, module in containers.items() if family_of.get(name) in outermost}


def _selected(model, modules: str | Sequence[str] | None, max_depth: int | None) -> dict:
    """{module: (name, is_branch, is_block)} of the modules that get a row."""
    if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0):
        raise InitcliError("max_depth", f"must be an integer ≥ 0, got {max_depth!r}")
    globs = None
    if modules is not None:
        globs = [g.strip() for g in (modules.split(",") if isinstance(modules, str) else modules)]
        if not all(globs):
            raise InitcliError("modules", f"must be a comma list of name patterns such as 'layer1.*', got {modules!r}")
    blocks = repeated_blocks(model)
    chosen = {}
    for name, module in model.named_modules():
        depth = 0 if name == "" else name.count(".") + 1
        if max_depth is not None and depth > max_depth:
            continue
        leaf = next(module.children(), None) is None or (max_depth is not None and depth == max_depth)
        own = next(module.parameters(recurse=False), None) is not None
        branch = bool(getattr(module, BRANCH_ATTRIBUTE, False)) or name.rpartition(".")[2] in BRANCH_NAMES
        if not (leaf or own or branch or module in blocks):
            continue
        label = name or "(model)"
        if globs is not None and not any(fnmatch.fnmatchcase(label, g) for g in globs):
            continue
        chosen[module] = (label, branch, module in blocks)
    if not chosen:
        raise InitcliError("modules", f"no module matches {modules!r}" if modules is not None
                           else "the model has no module to probe")
    return chosen


def first_tensor(value, torch):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    if isinstance(value, dict):
        return next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
    return None


def pick_output(value, name: str | None, torch):
    """(tensor, label): the model's output to backpropagate from. `name` is a key of a dict or
    Hugging Face ModelOutput, or an index of a tuple; by default the tensor itself, a
    ModelOutput's `logits`, else the first floating tensor that is not a `loss`."""
    def usable(v) -> bool:
        return isinstance(v, torch.Tensor) and v.is_floating_point() and v.ndim > 0

    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        items = None
    if name is not None:
        if items is None:
            raise InitcliError("output", f"the model returns a {type(value).__name__}, not a dict or tuple of "
                                         "outputs to choose from; leave --output out")
        found = dict(items)
        if name not in found or not usable(found[name]):
            known = [k for k, v in items if usable(v)]
            raise InitcliError("output", f"the model's output has no floating tensor '{name}'{suggest(name, known)}; "
                                         f"it has: {', '.join(known) or 'none'}")
        return found[name], name
    if items is None:
        if usable(value):
            return value, "output"
        raise InitcliError(None, f"the model returned {type(value).__name__}, not a floating-point tensor "
                                 "to backpropagate from")
    keyed = isinstance(value, Mapping)
    if keyed and usable(dict(items).get("logits")):
        return dict(items)["logits"], "logits"
    for key, v in items:
        if usable(v) and not (keyed and key == "loss"):
            return v, key if keyed else f"output[{key}]"
    raise InitcliError(None, f"the model returned a {type(value).__name__} holding no floating-point tensor to "
                             "backpropagate from")


_SATURATING = {"Tanh": "tanh", "Sigmoid": "sigmoid"}
_NON_SATURATING = {"ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "ELU", "SELU", "Softplus", "Mish", "PReLU", "CELU"}


def _saturated_frac(type_name: str, y: np.ndarray) -> float:
    if type_name in _SATURATING:
        from .activations import get_activation

        return float(np.count_nonzero(get_activation(_SATURATING[type_name]).saturated(y)) / y.size)
    return 0.0 if type_name in _NON_SATURATING else math.nan


def _layout(module, torch) -> str | None:
    """Where the module's output keeps its channels, from its type: "first" (dim 1, torch's
    N, C, … layout), "last" (features last: Linear, LayerNorm, attention), None: it does not say."""
    name = type(module).__name__
    if _is_hf_conv1d(module):
        return "last"
    dims = getattr(module, "dims", None)
    if name == "Permute" and isinstance(dims, (list, tuple)) and len(dims) >= 3:
        # torchvision's Permute around ConvNeXt's channels-last LayerNorm and Linears
        return "last" if dims[-1] == 1 else "first" if dims[1] == len(dims) - 1 else None
    pooling = torch.nn.modules.pooling
    first = (torch.nn.modules.conv._ConvNd, torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm,
             pooling._MaxPoolNd, pooling._AvgPoolNd, pooling._AdaptiveAvgPoolNd, pooling._AdaptiveMaxPoolNd)
    if isinstance(module, first) or re.search(r"[123]d$", name):  # LayerNorm2d: a norm over dim 1
        return "first"
    if (isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Embedding, torch.nn.MultiheadAttention))
            or any(word in name for word in ("Attention", "Norm", "Embedding", "Linear"))):
        return "last"
    return None


def _channels(y: np.ndarray, axis: int) -> np.ndarray:
    """(rows, channels): every position of every input a row."""
    if y.ndim <= 1:
        return y.reshape(-1, 1)
    return np.moveaxis(y, axis, -1).reshape(-1, y.shape[axis])


def _forward_stats(y: np.ndarray, type_name: str, axis: int) -> dict:
    act_mean, act_var = moments(y)
    per_input = y.reshape(y.shape[0], -1)
    view = _channels(y, axis)
    channel_mean = view.mean(axis=0, dtype=np.float64)
    channel_var = view.var(axis=0, dtype=np.float64)
    return {"act_mean": act_mean, "act_var": act_var, "dead_frac": dead_fraction(np.abs(view)),
            "saturated_frac": _saturated_frac(type_name, y), "effective_rank": effective_rank(per_input),
            "input_cosine": mean_input_cosine(per_input),
            "channel_mean_sq": float(np.mean(channel_mean * channel_mean)), "channel_var": float(np.mean(channel_var))}


def _weight(module, torch):
    """The module's weight matrix or kernel (or scale vector), or None."""
    weight = getattr(module, "weight", None)
    if weight is None and isinstance(module, torch.nn.MultiheadAttention):
        weight = module.in_proj_weight if module.in_proj_weight is not None else module.q_proj_weight
    return weight if isinstance(weight, torch.nn.Parameter) and weight.is_floating_point() else None


def _weight_column(module, torch) -> tuple[float, str]:
    """(weight_std column, kind): a matrix or kernel's standard deviation ("weighted"); a
    norm's scale vector's mean, which is what it multiplies by ("norm")."""
    weight = _weight(module, torch)
    norm = _is_norm(module, torch)
    if weight is None:
        return math.nan, "norm" if norm else "other"
    values = weight.detach().cpu().numpy()
    if weight.ndim >= 2 and not norm:
        return math.sqrt(moments(values)[1]), "weighted"
    return moments(values)[0], "norm" if norm else "other"


def set_mode(model, train_mode: bool) -> None:
    """eval everywhere; with `train_mode`, normalisation layers with running statistics
    (BatchNorm, tracking InstanceNorm) back in train mode: batch statistics, as at the first
    training step, with dropout and stochastic depth still off."""
    torch = _torch()
    model.eval()
    if train_mode:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._NormBase):
                module.train()


@contextlib.contextmanager
def preserved(model):
    """The model's training flags and every buffer put back on the way out: a buffer the
    forward bumped in place gets its values back, one it replaced (`self.calls = self.calls + 1`)
    its own tensor, one it added is removed."""
    torch = _torch()
    training = {module: module.training for module in model.modules()}
    buffers = {module: dict(module._buffers) for module in model.modules()}
    values = {id(b): b.detach().clone() for saved in buffers.values() for b in saved.values() if b is not None}
    try:
        yield
    finally:
        for module, flag in training.items():
            module.training = flag
        with torch.no_grad():
            for module, saved in buffers.items():
                for name in [n for n in module._buffers if n not in saved]:
                    del module._buffers[name]
                    module._non_persistent_buffers_set.discard(name)
                for name, buffer in saved.items():
                    if buffer is not None:
                        buffer.copy_(values[id(buffer)])
                    module._buffers[name] = buffer


def check_real(model, args=()) -> None:
    """Refuse a model or input on torch's meta device (shapes without values) and an input of
    0 samples, before any work."""
    torch = _torch()
    tensors = list(model.parameters()) + list(model.buffers())
    if any(t.is_meta for t in tensors):
        raise InitcliError(None, "the model is on the meta device (shapes only, no values): probe needs real "
                                 "weights; build it outside `with torch.device('meta')` or load its state_dict "
                                 "with assign=True first")
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_meta:
            raise InitcliError(None, "the input is on the meta device (a shape, no values): give real inputs")


def _args(model, inputs, torch) -> tuple:
    """The inputs as a tuple of tensors on the model's device, float ones in its dtype."""
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = first.device if first is not None else torch.device("cpu")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in args)
    # float inputs in the model's dtype (a float64 numpy array into a float32 model)
    return tuple((a.to(device, first.dtype) if first is not None and a.is_floating_point() else a.to(device))
                 if isinstance(a, torch.Tensor) and not a.is_meta else a for a in args)


def probe(model, inputs, *, seed: int = 0, train_mode: bool = True, modules: str | Sequence[str] | None = None,
          max_depth: int | None = None, channels_last: bool | None = None, output: str | None = None,
          params: dict | None = None, input_param: str | None = "inputs",
          progress: Callable[[int], None] | None = None) -> ProbeResult:
    """Run `inputs` (a tensor or array, or a tuple of them) through `model`, backpropagate a
    unit-Gaussian cotangent drawn from the seed's `cotangent` stream in the output's shape
    and dtype, and measure every probed module (see the module docstring). Normalisation
    layers run on batch statistics and the rest in eval mode unless `train_mode` is False
    (everything in eval mode); torch's generators are seeded with `seed` for the run; the
    model is left exactly as it was. `output` names the output to backpropagate from (see
    `pick_output`). `channels_last` (default: true for integer inputs) is the layout of
    outputs no module type decides. `input_param` is the option an input the model rejects is
    blamed on (None: the callable's example). `progress(1)` hears of each module measured,
    forward and backward."""
    torch = _torch()
    seed = check_seed(seed)
    check_real(model, inputs if isinstance(inputs, tuple) else (inputs,))
    chosen = _selected(model, modules, max_depth)
    args = _args(model, inputs, torch)
    first_arg = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if first_arg is not None and first_arg.ndim and first_arg.shape[0] == 0:
        raise InitcliError(input_param, ("the callable's example input" if input_param is None else "the input")
                           + " holds 0 samples: its statistics need at least one (2 for variances between inputs)")
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
    layouts: dict[int, str] = {}  # output ndim -> layout of the last typed module
    head: dict = {}  # the last weighted module called: module, its input, its row's label

    def pre_hook(module, _inputs):
        running.append(names.get(module, type(module).__name__))

    def hook(module, inputs_, output):
        if running:
            running.pop()
        tensor = first_tensor(output, torch)
        layout = _layout(module, torch)
        if layout is not None and tensor is not None:
            layouts[tensor.ndim] = layout
        weight = _weight(module, torch)
        weighted = weight is not None and weight.ndim >= 2 and not _is_norm(module, torch)
        if weighted:
            head.clear()
            head.update(module=module, input=first_tensor(inputs_, torch))
        if module not in chosen:
            return
        label, branch, block = chosen[module]
        calls[module] = calls.get(module, 0) + 1
        if calls[module] > 1:
            label = f"{label}#{calls[module]}"
        if weighted:
            head["label"] = label
        type_name = type(module).__name__
        weight_std, kind = _weight_column(module, torch)
        record = {"module": label, "type": type_name, "branch": branch, "grad_var": math.nan,
                  "weight_grad_var": math.nan, "owner": module, "weight_std": weight_std,
                  "kind": "block" if block else kind}
        if tensor is None or not tensor.is_floating_point() or tensor.ndim == 0:
            record |= {"output_shape": "-" if tensor is None else "x".join(map(str, tensor.shape)),
                       **{k: math.nan for k in ("act_mean", "act_var", "dead_frac", "saturated_frac", "effective_rank",
                                                "input_cosine", "channel_mean_sq", "channel_var")}}
        else:
            y = tensor.detach()
            where = layout or layouts.get(y.ndim) or ("last" if channels_last else "first")
            axis = 1 if where == "first" and y.ndim >= 3 else y.ndim - 1
            record["output_shape"] = "x".join(map(str, y.shape))
            record["width"] = int(y.shape[axis]) if y.ndim >= 2 else 1
            record["size"] = int(y[0].numel()) if y.ndim >= 1 and y.shape[0] else 1
            with np.errstate(all="ignore"):
                record |= _forward_stats(y.cpu().numpy(), type_name, axis)
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
    zero_head = None
    with preserved(model), seeded(seed):
        try:
            for module in model.modules():
                handles.append(module.register_forward_pre_hook(pre_hook))
                handles.append(module.register_forward_hook(hook))
            set_mode(model, train_mode)
            weights = [p for p in model.parameters() if p.requires_grad]
            try:
                returned = model(*args)
            except Exception as exc:  # the user's model refuses the input: say which module and why
                where = running[-1] if running else "(model)"
                shape = ", ".join(",".join(map(str, a.shape[1:])) if isinstance(a, torch.Tensor)
                                  else type(a).__name__ for a in args)
                blamed = "" if input_param is not None else "the callable's example input: "
                raise InitcliError(input_param, f"{blamed}module '{where}' rejected inputs of shape {shape or '()'}: "
                                                f"{one_line(exc)}") from None
            out, output_label = pick_output(returned, output, torch)
            out_dtype = _numpy_dtype(out.dtype)
            cotangent_stream = seed_streams(seed)["cotangent"]
            targets, cotangents = [out], [gaussian(cotangent_stream, tuple(out.shape), out_dtype)]
            head_weight = _weight(head["module"], torch) if head else None
            head_input = head.get("input")
            if (head_weight is not None and not bool(torch.any(head_weight)) and isinstance(head_input, torch.Tensor)
                    and head_input.requires_grad and head_input.is_floating_point()):
                # a zero-initialised head: the trunk's gradient as it flows once the head moves
                zero_head = head.get("label", names[head["module"]])
                targets.append(head_input)
                cotangents.append(gaussian(cotangent_stream, tuple(head_input.shape), _numpy_dtype(head_input.dtype)))
            wanted = weights + float_args
            weight_grads = {}
            if out.requires_grad and wanted:
                grads = torch.autograd.grad(targets, wanted, [torch.from_numpy(c).to(out.device) for c in cotangents],
                                            allow_unused=True)
                weight_grads = {id(p): g for p, g in zip(weights, grads)}
            del returned, out, targets
            head.clear()
        finally:
            for handle in handles + grad_handles:
                handle.remove()
    rows = []
    with np.errstate(all="ignore"):
        for record in records:
            owner = record.pop("owner")
            weight = _weight(owner, torch)
            grad = weight_grads.get(id(weight)) if weight is not None else None
            if grad is not None:
                record["weight_grad_var"] = moments(grad.detach().cpu().numpy())[1]
            branch = record.pop("branch")
            rows.append(ModuleStats(**record, branch_var=record["act_var"] if branch else None))
    rows = tuple(rows)
    run_params = {"seed": seed, "train_mode": bool(train_mode), "output": output_label,
                  "modules": modules, "max_depth": max_depth, **(params or {})}
    if zero_head is not None:
        run_params["zero_head"] = zero_head
    dtype_name = next((str(a.dtype).removeprefix("torch.") for a in float_args), None) or next(
        (str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.is_floating_point()), "float32")
    verdict, reason, judged = judge(rows, zero_head=zero_head, dtype=dtype_name)
    return ProbeResult(run_params, rows, verdict, reason, judged)


# -- verdicts ------------------------------------------------------------------------------------


def judge(rows: Sequence[ModuleStats], zero_head: str | None = None,
          dtype: str = "float32") -> tuple[str, str, tuple[str, ...]]:
    """(verdict, reason, names of the modules judged): the one rule set of compare and sweep
    (`initcli.verdicts`) on the probed rows. Every row carries its kind (a repeated block's
    output, a weighted module, a norm), channels and values per input, so the repeated
    blocks' outputs are the judged residual stream, else the weighted modules up to the head;
    `zero_head` names a head that starts at zero output, judged up to its input."""
    from .verdicts import judge_modules

    verdict = judge_modules(rows, dtype=dtype, zero_head=zero_head)
    units = tuple(verdict.units)
    if not units:
        named = ""
    elif len(units) <= 2:
        named = f"; judged {len(units)} module{'s' if len(units) == 2 else ''}: {', '.join(units)}"
    else:
        named = f"; judged {len(units)} modules: {units[0]} … {units[-1]}"
    return verdict.verdict, verdict.reason + named, units


def summary_row(result: ProbeResult) -> dict:
    """compare's summary columns over the modules the verdict judged (first and last values from
    the first and last judged rows)."""
    from .verdicts import ratio

    rows = result.modules
    judged = set(result.judged)
    units = [r for r in rows if r.module in judged] or list(rows)

    def extreme(fn, column):
        values = [getattr(r, column) for r in rows if not math.isnan(getattr(r, column))]
        return fn(values) if values else math.nan

    return {"scheme": result.params.get("reinit", "(as built)"), "modules": len(rows),
            "first_act_var": units[0].act_var, "last_act_var": units[-1].act_var,
            "first_grad_var": units[0].grad_var, "last_grad_var": units[-1].grad_var,
            "grad_ratio": ratio(units[0].grad_var, units[-1].grad_var),
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
        tensor = first_tensor(output, torch)
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
              dtype: str = "float32", device: str = "cpu", seed: int = 0, train_mode: bool = True,
              modules: str | None = None, max_depth: int | None = None, reinit: Sequence[str] | None = None,
              activation: str = "relu", bias_std: float = 0.0, init_options: dict | None = None,
              output: str | None = None, progress: Callable[[int], None] | None = None,
              available: int | None = None, fix: Callable | None = None):
    """`initcli probe`: build the model from `target` (torch seeded with `seed` for the call),
    draw its inputs, check the memory, and probe it (once as built, or once per `reinit`
    scheme on re-initialised copies). Returns a ProbeResult, or a ProbeComparison for several
    schemes; with `fix` (probe --fix, `initcli.fixing`), what fix(model, args, params=…, **probe
    options) returns."""
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
    if output is not None and (not isinstance(output, str) or not output.strip()):
        raise InitcliError("output", f"must name one of the model's outputs, such as logits; got {output!r}")
    inits = []
    for name in reinit or ():
        init = make_init(name, activation=activation, **(init_options or {}))
        if init.scheme.kind == "lsuv":
            raise InitcliError("reinit", "lsuv rescales from data layer by layer; probe cannot re-run it on a "
                                         "model it does not build")
        inits.append(init)
    model, example = load_model(target, kwargs, seed=seed)
    check_input_options(batch=batch, input_shape=input_shape, tokens=tokens, seq_len=seq_len, example=example)
    check_real(model, example if isinstance(example, tuple) else (example,))
    model = model.to(device=device, dtype=getattr(torch, np_dtype.name))
    if input_shape is not None or tokens is not None:
        x = draw_inputs(seed=seed, dtype=np_dtype, batch=batch, input_shape=input_shape, input_std=input_std,
                        tokens=tokens, seq_len=seq_len)
        args = (torch.from_numpy(x).to(device),)
        source = ({"tokens": tokens, "seq_len": seq_len} if tokens is not None
                  else {"input_shape": list(input_shape), "input_std": input_std})
        source["batch"] = batch
        input_param = "tokens" if tokens is not None else "input_shape"
    else:
        args = example if isinstance(example, tuple) else (example,)
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if first is not None and first.ndim and first.shape[0] == 0:
            raise InitcliError(None, f"the example input {target.rpartition(':')[2]} returned holds 0 samples "
                                     f"(shape {tuple(first.shape)}): initcli's statistics need at least one, 2 for "
                                     "the variances between inputs; return a batch, or give --input-shape")
        args = tuple(a.to(device=device, dtype=getattr(torch, np_dtype.name))
                     if isinstance(a, torch.Tensor) and a.is_floating_point()
                     else (a.to(device) if isinstance(a, torch.Tensor) else a) for a in args)
        source = {"example_input": True}
        input_param = None
    first = args[0] if isinstance(args[0], torch.Tensor) else None
    full = first.shape[0] if first is not None and first.ndim else 1
    trial = min(2, full)
    trial_args = tuple(a[:trial] if isinstance(a, torch.Tensor) and a.ndim else a for a in args)
    with preserved(model), seeded(seed):
        set_mode(model, train_mode)
        try:
            needed = estimate_bytes(model, trial_args, full, trial)
        except Exception as exc:
            failed = exc
        else:
            failed = None
    if failed is not None:
        probe(model, trial_args, seed=seed, train_mode=train_mode, input_param=input_param)  # names the module
        blamed = input_param if input_param is not None else None
        raise InitcliError(blamed, ("" if input_param is not None else "the callable's example input: ")
                           + f"the model rejected the input: {one_line(failed)}") from None
    check_memory(needed * (2 if inits or fix else 1), available, dtype=np_dtype,
                 options=("--batch", "--input-shape", "--seq-len"))
    params = {"target": target, "kwargs": kwargs, **source, "dtype": np_dtype.name, "device": device}
    options = dict(seed=seed, train_mode=train_mode, modules=modules, max_depth=max_depth, output=output,
                   channels_last=tokens is not None if example is None else None, input_param=input_param,
                   progress=progress)
    if fix is not None:
        return fix(model, args, params=params, **options)
    if not inits:
        return probe(model, args, params=params, **options)
    _, untouched = weight_plan(model)
    runs = []
    for init in inits:
        copy_ = reinit_copy(model, init, seed=seed, bias_std=bias_std)
        scheme_params = {**params, "reinit": init.name, **init.params(), "bias_std": bias_std,
                         "reinit_untouched": untouched}
        runs.append(probe(copy_, args, params=scheme_params, **options))
        del copy_
    if len(runs) == 1:
        return runs[0]
    shared = {k: v for k, v in runs[0].params.items() if k not in ("reinit", "scheme", "mode", "distribution")}
    return ProbeComparison({**shared, "schemes": [r.params["reinit"] for r in runs]}, tuple(runs))
