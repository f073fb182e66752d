"""The MLP engine: Linear stacks (plain, LayerNorm, residual; µP and its kin), whose kernels
are `initcli.engine`, with runs prepared and measured by `initcli.propagation` and the
Jacobian of `initcli.jacobian`."""

from __future__ import annotations

import numpy as np

from .. import engine as kernels
from .. import jacobian, propagation
from . import register
from .base import Engine, per_layer


def _build(run):
    stack, x, cotangent, _ = propagation.run_inputs(run)
    return stack, x, cotangent


def _network(init, run, seed: int):
    return kernels.build_stack(init, run.sizes, seed=seed, dtype=run.dtype, arch=run.arch)


def _forward(stack, activation, x):
    trace = kernels.forward(stack, activation, x)
    return trace, trace.states[-1].act


def _backward(stack, trace, cotangent) -> dict[str, np.ndarray]:
    grads = kernels.backward(stack, trace, cotangent)
    return per_layer(grads)


def _parameters(stack) -> dict[str, np.ndarray]:
    return per_layer(zip(stack.weights, stack.biases))


def _keywords(values: dict) -> dict:
    """Every shared option (skips, norm, residual-init, parametrization, LSUV's), none of the
    other engines' own."""
    from . import get, names

    others = {option for name in names() if name != "mlp" for option in get(name).own_options}
    return {k: v for k, v in values.items() if k != "architecture" and k not in others} | {
        "residual": bool(values["residual"])}


ENGINE = register(Engine(
    name="mlp", unit="layer", kernels=kernels, memory_options=tuple(propagation.MEMORY_OPTIONS),
    single_thread_work=propagation.SINGLE_THREAD_WORK,
    prepare=propagation.prepare, run_prepared=propagation.run_prepared,
    propagate=lambda scheme="he-normal", activation="relu", **options: propagation.propagate(
        scheme, activation, arch="mlp", **options),
    estimate_bytes=propagation.estimate_bytes, work=propagation.work,
    prepare_jacobian=jacobian.prepare_jacobian, run_jacobian=jacobian.run_jacobian,
    build=_build, network=_network, features=lambda run: run.sizes[-1], forward=_forward, backward=_backward,
    parameters=_parameters,
    refused={}, keywords=_keywords,
))
