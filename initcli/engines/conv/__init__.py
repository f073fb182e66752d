"""The convolution engine: stacks of C→C convolutions (1-, 2- or 3-D, circular or zero
padding, optional skips). `kernels` holds the convolutions, forward and backward; `runs`
propagate's and jacobian's runs over them. `initcli.conv` re-exports both."""

from __future__ import annotations

import numpy as np

from .. import register
from ..base import Engine, per_layer
from . import kernels, runs


def _network(init, run, seed: int):
    return kernels.build_conv_stack(init, run.shape, run.depth, seed=seed, dtype=run.dtype, arch=run.arch)


def _forward(stack, activation, x, observe=None):
    trace = kernels.forward(stack, activation, x, observe)
    return trace, trace.acts[-1]


def _backward(stack, trace, cotangent) -> dict[str, np.ndarray]:
    grads, _ = kernels.backward(stack, trace, cotangent)
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
    name="conv", unit="layer", kernels=kernels, memory_options=kernels.MEMORY_OPTIONS,
    single_thread_work=runs.SINGLE_THREAD_WORK,
    prepare=runs.prepare, run_prepared=runs.run_prepared, propagate=runs.propagate,
    estimate_bytes=runs.estimate_bytes, work=runs.work,
    prepare_jacobian=runs.prepare_jacobian, run_jacobian=runs.run_jacobian,
    build=runs.inputs, network=_network, features=lambda run: run.shape.channels, forward=_forward,
    backward=_backward, parameters=_parameters,
    refused=kernels.REFUSED_KINDS, own_options=("kernel", "channels", "spatial", "padding"),
    keywords=_keywords, describe=_describe,
    # a conv stack's width is its channels: its positions share one kernel, so they do not
    # average the kernel's randomness away
    widths=lambda params: [params["channels"]] * (params["depth"] + 1),
    # train's smaller network (a few seconds per scheme on one core), trained with SGD as
    # convolutions are in practice
    train_defaults={"depth": 4, "channels": 8, "spatial": (16,)}, train_optimizer="sgd",
))
