"""`--reinit`: a deep copy of the user's model with its weight matrices and kernels redrawn by
an initcli scheme from the seed's streams."""

from __future__ import annotations

import copy

import numpy as np

from ..engine import seed_streams
from ..schemes import gaussian
from .loading import require_torch
from .modules import is_hf_conv1d, is_norm, numpy_dtype

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
    torch = require_torch()
    plan, untouched, seen, vectors = [], [], set(), 0
    drawn_biases = set()
    for name, module in model.named_modules():
        norm = is_norm(module, torch)
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            weight = (pname == "weight" or (isinstance(module, torch.nn.MultiheadAttention)
                                            and pname in _ATTENTION_WEIGHTS))
            if weight and param.ndim >= 2 and not norm:
                plan.append((name, module, pname, "in_out" if is_hf_conv1d(module) else "out_in"))
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
    torch = require_torch()
    clone = copy.deepcopy(model)
    streams = seed_streams(seed)
    plan, _ = weight_plan(clone)
    with torch.no_grad():
        for _, module, pname, layout in plan:
            weight = getattr(module, pname)
            dtype = numpy_dtype(weight.dtype)
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

