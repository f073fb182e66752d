"""The transformer engine: blocks of multi-head self-attention and an MLP, pre- or post-LN,
causal or not, whose kernels are `initcli.transformer`."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from .. import transformer as kernels
from . import register
from .base import Engine


def _output(stack, activation, x) -> np.ndarray:
    return kernels.forward(stack, activation, x)[-1].out


def _gradients(stack, activation, x, cotangent) -> dict[str, np.ndarray]:
    grads, _ = kernels.backward(stack, kernels.forward(stack, activation, x), cotangent)
    return {f"{index}.{name}": grad for index, block in enumerate(grads, start=1) for name, grad in block.items()}


def _parameters(stack) -> dict[str, np.ndarray]:
    return {f"{index}.{f.name}": getattr(block, f.name) for index, block in enumerate(stack.blocks, start=1)
            for f in fields(block) if isinstance(getattr(block, f.name), np.ndarray)}


ENGINE = register(Engine(
    name="transformer", unit="block", kernels=kernels, memory_options=kernels.MEMORY_OPTIONS,
    single_thread_work=kernels.SINGLE_THREAD_WORK,
    prepare=kernels.prepare, run_prepared=kernels.run_prepared, propagate=kernels.propagate,
    estimate_bytes=kernels.estimate_bytes, work=kernels.work,
    prepare_jacobian=kernels.prepare_jacobian, run_jacobian=kernels.run_jacobian,
    build=kernels.inputs, output=_output, gradients=_gradients, parameters=_parameters,
    refused=kernels.REFUSED_KINDS,
))
