"""The transformer engine: blocks of multi-head self-attention and an MLP, pre- or post-LN,
causal or not, whose kernels are `initcli.transformer`."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from .. import transformer as kernels
from . import register
from .base import Engine


def _network(init, run, seed: int):
    return kernels.build_transformer(init, run.shape, run.depth, seed=seed, dtype=run.dtype)


def _forward(stack, activation, x):
    traces = kernels.forward(stack, activation, x)
    return traces, traces[-1].out


def _backward(stack, traces, cotangent) -> dict[str, np.ndarray]:
    grads, _ = kernels.backward(stack, traces, cotangent)
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
    build=kernels.inputs, network=_network, features=lambda run: run.shape.width, forward=_forward,
    backward=_backward, parameters=_parameters,
    refused=kernels.REFUSED_KINDS, final_norm=lambda stack: stack.shape.norm_position == "pre",
))
