"""The MLP engine: Linear stacks (plain, LayerNorm, residual; µP and its kin). `kernels`
holds the layers, forward and backward (`initcli.engine` re-exports it); `runs` prepares,
measures and puts theory beside (`initcli.propagation` re-exports it), and its Jacobian is
`initcli.jacobian`'s. This
module only declares the engine (no numpy at import), so the command line can read it at
start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import register
from ..base import Engine, deferred, per_layer

if TYPE_CHECKING:
    import numpy as np

# declarations the command line reads at start-up, before any numpy: this module imports its
# kernels only when an engine function is called
MEMORY_OPTIONS = ("--batch", "--width", "--depth", "--sizes")  # what makes an MLP run smaller
# Products up to this many multiply-adds (the defaults: 512 × 256 × 256) run on one BLAS
# thread: at that size the threads spend more time waiting for each other than working, and
# on a busy machine many times more (issue 11 measured 5–30×). It also makes the default run's
# bytes independent of the thread count.
SINGLE_THREAD_WORK = 1 << 25
RUNS = "initcli.engines.mlp.runs"


def _build(run):
    from .runs import run_inputs

    stack, x, cotangent, _ = run_inputs(run)
    return stack, x, cotangent


def _network(init, run, seed: int):
    from .kernels import build_stack

    return build_stack(init, run.sizes, seed=seed, dtype=run.dtype, arch=run.arch)


def _forward(stack, activation, x, observe=None):
    from .kernels import forward

    trace = forward(stack, activation, x, observe)
    return trace, trace.states[-1].act


def _backward(stack, trace, cotangent) -> dict[str, np.ndarray]:
    from .kernels import backward

    return per_layer(backward(stack, trace, cotangent))


def _parameters(stack) -> dict[str, np.ndarray]:
    return per_layer(zip(stack.weights, stack.biases))


def _keywords(values: dict) -> dict:
    """Every shared option (skips, norm, residual-init, parametrization, LSUV's), none of the
    other engines' own."""
    from .. import get, names

    others = {option for name in names() if name != "mlp" for option in get(name).own_options}
    return {k: v for k, v in values.items() if k != "architecture" and k not in others} | {
        "residual": bool(values["residual"])}


def _describe(params: dict) -> str:
    """'20 layers of 256' or 'sizes 784,256,10'."""
    sizes = params["sizes"]
    if len(set(sizes)) == 1:
        return f"{params['depth']} layers of {sizes[1]}"
    return "sizes " + ",".join(map(str, sizes))


def _propagate(scheme="he-normal", activation="relu", *, progress=None, **options):
    from .runs import prepare, run_prepared

    return run_prepared(prepare(scheme, activation, **options), progress)


ENGINE = register(Engine(
    name="mlp", unit="layer", memory_options=MEMORY_OPTIONS, single_thread_work=SINGLE_THREAD_WORK,
    prepare=deferred(RUNS, "prepare"), run_prepared=deferred(RUNS, "run_prepared"),
    propagate=_propagate, estimate_bytes=deferred(RUNS, "estimate_bytes"),
    work=deferred(RUNS, "work"),
    prepare_jacobian=deferred("initcli.engines.mlp.jacobian", "prepare_jacobian"),
    run_jacobian=deferred("initcli.engines.mlp.jacobian", "run_jacobian"),
    build=_build, network=_network, features=lambda run: run.sizes[-1], forward=_forward, backward=_backward,
    parameters=_parameters,
    refused={}, keywords=_keywords, describe=_describe, widths=lambda params: list(params["sizes"]),
))
