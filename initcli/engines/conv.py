"""The convolution engine: stacks of C→C convolutions (1-, 2- or 3-D, circular or zero
padding, optional skips), whose kernels are `initcli.conv`."""

from __future__ import annotations

import numpy as np

from .. import conv as kernels
from . import register
from .base import Engine


def _output(stack, activation, x) -> np.ndarray:
    return kernels.forward(stack, activation, x).acts[-1]


def _gradients(stack, activation, x, cotangent) -> dict[str, np.ndarray]:
    grads, _ = kernels.backward(stack, kernels.forward(stack, activation, x), cotangent)
    out = {}
    for index, (weight_grad, bias_grad) in enumerate(grads, start=1):
        out[f"w{index}"], out[f"b{index}"] = weight_grad, bias_grad
    return out


def _parameters(stack) -> dict[str, np.ndarray]:
    out = {}
    for index, (w, b) in enumerate(zip(stack.weights, stack.biases), start=1):
        out[f"w{index}"], out[f"b{index}"] = w, b
    return out


ENGINE = register(Engine(
    name="conv", unit="layer", kernels=kernels, memory_options=kernels.MEMORY_OPTIONS,
    single_thread_work=kernels.SINGLE_THREAD_WORK,
    prepare=kernels.prepare, run_prepared=kernels.run_prepared, propagate=kernels.propagate,
    estimate_bytes=kernels.estimate_bytes, work=kernels.work,
    prepare_jacobian=kernels.prepare_jacobian, run_jacobian=kernels.run_jacobian,
    build=kernels.inputs, output=_output, gradients=_gradients, parameters=_parameters,
    refused=kernels.REFUSED_KINDS,
))
