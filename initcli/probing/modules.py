"""What probe reads off a torch module: which modules get a row (leaves, modules with their own
parameters, repeated blocks, residual branches), its weight and kind, where its output keeps
its channels, which output of the model to backpropagate from, and the model's mode and
buffers, set for a run and put back after."""

from __future__ import annotations

import contextlib
import fnmatch
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InitcliError, suggest
from ..stats import moments
from .loading import require_torch

BRANCH_NAMES = ("branch", "residual")
BRANCH_ATTRIBUTE = "initcli_branch"


def is_norm(module, torch) -> bool:
    """A normalisation layer: its weight is a scale vector, not a matrix to draw."""
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.LocalResponseNorm)
    rms = getattr(torch.nn, "RMSNorm", None)
    return isinstance(module, norms + ((rms,) if rms is not None else ())) or "Norm" in type(module).__name__


def is_hf_conv1d(module) -> bool:
    """Hugging Face's `Conv1D` (GPT-2's projections): a Linear whose weight is laid out (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def numpy_dtype(torch_dtype) -> np.dtype:
    name = str(torch_dtype).removeprefix("torch.")
    if name not in ("float32", "float64"):
        raise InitcliError("dtype", f"probe measures float32 or float64 models, this one holds {name}; "
                                    "convert it or pass --dtype")
    return np.dtype(name)


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


def selected_modules(model, modules: str | Sequence[str] | None, max_depth: int | None) -> dict:
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


def layout_of(module, torch) -> str | None:
    """Where the module's output keeps its channels, from its type: "first" (dim 1, torch's
    N, C, … layout), "last" (features last: Linear, LayerNorm, attention), None: it does not say."""
    name = type(module).__name__
    if is_hf_conv1d(module):
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


def weight_of(module, torch):
    """The module's weight matrix or kernel (or scale vector), or None."""
    weight = getattr(module, "weight", None)
    if weight is None and isinstance(module, torch.nn.MultiheadAttention):
        weight = module.in_proj_weight if module.in_proj_weight is not None else module.q_proj_weight
    return weight if isinstance(weight, torch.nn.Parameter) and weight.is_floating_point() else None


def weight_column(module, torch) -> tuple[float, str]:
    """(weight_std column, kind): a matrix or kernel's standard deviation ("weighted"); a
    norm's scale vector's mean, which is what it multiplies by ("norm")."""
    weight = weight_of(module, torch)
    norm = is_norm(module, torch)
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
    torch = require_torch()
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
    torch = require_torch()
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
    torch = require_torch()
    tensors = list(model.parameters()) + list(model.buffers())
    if any(t.is_meta for t in tensors):
        raise InitcliError(None, "the model is on the meta device (shapes only, no values): probe needs real "
                                 "weights; build it outside `with torch.device('meta')` or load its state_dict "
                                 "with assign=True first")
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_meta:
            raise InitcliError(None, "the input is on the meta device (a shape, no values): give real inputs")

