"""The convolution engine: stacks of C→C convolutions (1-, 2- or 3-D, circular or zero
padding, optional skips). `kernels` holds the convolutions, forward and backward; `runs`
propagate's and jacobian's runs over them. `initcli.conv` re-exports both. This module only
declares the engine (no numpy at import), so the command line can read it at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import register
from ..base import Engine, OptionSpec, deferred, per_layer

if TYPE_CHECKING:
    import numpy as np

# declarations the command line reads at start-up, before any numpy: this module imports its
# kernels and runs only when an engine function is called
MEMORY_OPTIONS = ("--batch", "--depth", "--channels", "--spatial")  # what makes a conv run smaller
# schemes that cannot draw a conv kernel (identity and sparse are 2-D only, as torch's eye_ and
# sparse_) or that need the MLP engine
REFUSED_KINDS = {"identity": "draws 2-D matrices only; for conv kernels use delta-orthogonal or dirac",
                 "sparse": "draws 2-D (out, in) matrices only, as torch's sparse_; for conv kernels use a "
                           "variance-scaling scheme, delta-orthogonal or dirac",
                 "lsuv": "rescales every layer from the data, which only the MLP engine does"}
# Products up to this many multiply-adds run on one BLAS thread, as in `propagation`. A conv
# layer's products are made one im2col chunk at a time, so the product that counts is a
# chunk's: at the defaults 7 examples (4.1e6 multiply-adds), where a second thread made a
# 20-layer run 15 times slower on a busy two-core machine (40 s against 2.6 s).
SINGLE_THREAD_WORK = 1 << 25
OPTIONS = (
    OptionSpec("kernel", int, "conv: kernel size k along each spatial axis (default 3); fans count C·k^d as "
                              "`sample --shape` does."),
    OptionSpec("channels", int, "conv: channels of every layer (default 16; 8 for jacobian and train)."),
    OptionSpec("spatial", str, "conv: the input's size, one to three axes, e.g. 32 (1-D) or 16,16 (2-D; the "
                               "default; 8,8 for jacobian, 16 for train).", int_list=True),
    OptionSpec("padding", str, "conv: circular (the default; Xiao et al. 2018, where the mean-field theory "
                               "holds) or zero."),
)
RUNS = "initcli.engines.conv.runs"


def _network(init, run, seed: int):
    from .kernels import build_conv_stack

    return build_conv_stack(init, run.shape, run.depth, seed=seed, dtype=run.dtype, arch=run.arch)


def _forward(stack, activation, x, observe=None):
    from .kernels import forward

    trace = forward(stack, activation, x, observe)
    return trace, trace.acts[-1]


def _backward(stack, trace, cotangent) -> dict[str, np.ndarray]:
    from .kernels import backward

    grads, _ = backward(stack, trace, cotangent)
    return per_layer(grads)


def _parameters(stack) -> dict[str, np.ndarray]:
    return per_layer(zip(stack.weights, stack.biases))


def _keywords(values: dict) -> dict:
    """The geometry and the skips; refuses what the conv engine does not do (LayerNorm,
    residual-init presets, width parametrizations)."""
    from ...errors import InitcliError

    if values["norm"].strip().lower() != "none":
        raise InitcliError("norm", "does not apply with --arch conv (no normalisation layers in the conv "
                                   "engine yet)")
    if values["residual_init"] is not None:
        raise InitcliError("residual_init", "does not apply with --arch conv")
    if values["param"].strip().lower() != "sp":
        raise InitcliError("param", "does not apply with --arch conv: the kernels are the scheme's draws")
    return {"kernel": values["kernel"], "channels": values["channels"], "padding": values["padding"],
            "spatial": values["spatial"], "residual": bool(values["residual"]),
            "residual_scale": values["residual_scale"], "block": values["block"]}


def _describe(params: dict) -> str:
    """'20 conv layers · 32 ch · 16×16 · k3 circular'."""
    return (f"{params['depth']} conv layers · {params['channels']} ch · {'×'.join(map(str, params['spatial']))} · "
            f"k{params['kernel']} {params['padding']}")


ENGINE = register(Engine(
    name="conv", unit="layer", memory_options=MEMORY_OPTIONS, single_thread_work=SINGLE_THREAD_WORK,
    prepare=deferred(RUNS, "prepare"), run_prepared=deferred(RUNS, "run_prepared"),
    propagate=deferred(RUNS, "propagate"), estimate_bytes=deferred(RUNS, "estimate_bytes"),
    work=deferred(RUNS, "work"), prepare_jacobian=deferred(RUNS, "prepare_jacobian"),
    run_jacobian=deferred(RUNS, "run_jacobian"), build=deferred(RUNS, "inputs"), network=_network,
    features=lambda run: run.shape.channels, forward=_forward, backward=_backward, parameters=_parameters,
    refused=REFUSED_KINDS, options=OPTIONS,
    keywords=_keywords, describe=_describe,
    # a conv stack's width is its channels: its positions share one kernel, so they do not
    # average the kernel's randomness away
    widths=lambda params: [params["channels"]] * (params["depth"] + 1),
    # train's smaller network (a few seconds per scheme on one core), trained with SGD as
    # convolutions are in practice
    train_defaults={"depth": 4, "channels": 8, "spatial": (16,)}, train_optimizer="sgd",
))
