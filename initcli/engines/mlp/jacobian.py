"""The MLP engine's Jacobian: singular values of ∂a_l/∂x after each layer (dynamical isometry).

Pennington, Schoenholz & Ganguli 2017, Resurrecting the sigmoid in deep learning through
dynamical isometry: a network trains fast when every singular value of ∂a_l/∂x stays near 1,
not only their mean square (which is what the variance map controls). For each of a few
inputs the Jacobian is carried forward layer by layer, in float64:
J_h = W·J, through LayerNorm J_ñ = s·(J_h − mean(J_h) − ñ·(ñᵀJ_h)/n), J_φ = φ'(ñ)⊙J_ñ, and at
the end of a residual block J_out = J_in + α·J_φ.

The work is many small matrix products and one SVD per layer and input, which a multithreaded
BLAS runs far slower on a busy machine than one thread does (the threads wait on each other):
the whole computation runs with numpy's BLAS on one thread, which also makes its numbers the
same whatever the machine's thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...errors import InitcliError
from ...threads import blas_threads_limited
from ..spectra import (
    MAX_JACOBIAN_WIDTH,
    JacobianResult,
    JacobianRun,
    JacobianStats,
    check_inputs,
    singular_values,
    spectrum_stats,
)
from .kernels import Scratch, Stack, close_block_jacobian, layer_forward

# the options that make a Jacobian run smaller, named when it does not fit in memory
JACOBIAN_OPTIONS = ("--inputs", "--width", "--depth", "--sizes")


def jacobian_spectrum(stack: Stack, activation, x: np.ndarray, *, spectrum: bool = False,
                      progress: Callable[[int], None] | None = None
                      ) -> tuple[tuple[JacobianStats, ...], tuple[np.ndarray, ...] | None]:
    """Singular-value statistics of ∂a_l/∂x for l = 1…L at each row of x, and, with
    `spectrum`, every singular value (one (inputs, min(n_l, n_0)) array per layer).
    `progress(1)` is called after each SVD: len(x) × depth calls in all."""
    _check_width(max(stack.sizes), "width")
    with blas_threads_limited(1):
        return _spectrum(stack, activation, x, spectrum, progress)


def _spectrum(stack: Stack, activation, x: np.ndarray, spectrum: bool, progress):
    stack64 = Stack(tuple(w.astype(np.float64) for w in stack.weights),
                    tuple(b.astype(np.float64) for b in stack.biases), stack.arch)
    arch = stack64.arch
    x = x.astype(np.float64)
    inputs, width_in = x.shape
    # Layout (units, inputs, n_0): jac[:, i, :] is input i's Jacobian, and every input's
    # W·J is one matrix product of W with a (units, inputs·n_0) matrix, not `inputs` small ones.
    jac = np.zeros((width_in, inputs, width_in))
    jac[np.arange(width_in), :, np.arange(width_in)] = 1.0
    block_jac = jac
    a = block_input = x
    scratch = Scratch()
    stats, values = [], []
    with np.errstate(all="ignore"):  # overflow is reported as nan statistics, never a warning
        for index in range(1, stack64.depth + 1):
            if arch.opens_block(index):
                block_input, block_jac = a, jac
            _, _, state = layer_forward(stack64, activation, index, a, block_input, scratch)
            w = stack64.weights[index - 1]
            through = (w @ jac.reshape(jac.shape[0], -1)).reshape(w.shape[0], inputs, width_in)
            if arch.norm == "layer":
                normed = state.normed  # (inputs, units)
                through -= through.mean(axis=0, keepdims=True)
                projection = np.einsum("iu,uij->ij", normed, through) / normed.shape[1]
                through -= normed.T[:, :, None] * projection[None, :, :]
                through *= state.inv_std[:, 0][None, :, None]
            through *= state.deriv.T[:, :, None]
            if arch.closes_block(index):
                through = close_block_jacobian(arch, state, block_jac, through)
            jac, a = through, state.act
            layer_values = singular_values(jac, progress)
            stats.append(spectrum_stats(index, layer_values))
            if spectrum:
                values.append(layer_values)
    return tuple(stats), (tuple(values) if spectrum else None)


def estimate_jacobian_bytes(sizes: Sequence[int], inputs: int, batch: int, dtype, *, spectrum: bool = False) -> int:
    """Peak memory of a Jacobian run, before anything is allocated: the stack in its dtype
    and its float64 copy, the batch of inputs and cotangents, four (units, inputs, n_0) float64 Jacobians
    (current, block input, the product and a LayerNorm temporary), one SVD's workspace, and
    with `spectrum` every singular value."""
    itemsize = np.dtype(dtype).itemsize
    weights = sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    widest = max(sizes)
    jacobians = 4 * widest * inputs * sizes[0] * 8
    svd = 4 * widest * sizes[0] * 8 + 8 * widest * 8
    kept = (len(sizes) - 1) * inputs * min(widest, sizes[0]) * 8 if spectrum else 0
    return weights * (itemsize + 8) + batch * (sizes[0] + sizes[-1]) * itemsize + jacobians + svd + kept


def _check_width(widest: int, param: str) -> None:
    if widest > MAX_JACOBIAN_WIDTH:
        raise InitcliError(param, f"the Jacobian spectrum needs one SVD per layer and input; widths up to "
                                  f"{MAX_JACOBIAN_WIDTH} are accepted, got {widest}")


def prepare_jacobian(scheme="he-normal", activation: str = "relu", *, inputs: int | None = None,
                     spectrum: bool = False, **options) -> JacobianRun:
    """Check every argument of `jacobian`, and refuse a run that is too wide or does not fit
    in memory, before allocating anything (a `weights` file is read, but no stack built)."""
    from ...checks import check_dtype, check_memory, positive_int, stack_sizes
    from .runs import prepare

    batch = positive_int("batch", options.get("batch", 512))
    inputs = check_inputs(inputs, batch)
    if options.get("weights") is None:
        sizes = stack_sizes(options.get("sizes"), options.get("depth"), options.get("width"))
        _check_width(max(sizes), "sizes" if options.get("sizes") is not None else "width")
        check_memory(estimate_jacobian_bytes(sizes, inputs, batch, check_dtype(options.get("dtype", "float32")),
                                             spectrum=spectrum), options=JACOBIAN_OPTIONS)
    run = prepare(scheme, activation, theory=False, **options)
    _check_width(max(run.sizes), "weights")
    check_memory(estimate_jacobian_bytes(run.sizes, inputs, run.batch, run.dtype, spectrum=spectrum),
                 options=JACOBIAN_OPTIONS)
    return JacobianRun(run, inputs, bool(spectrum))


def plan_jacobian(scheme="he-normal", activation: str = "relu", *, inputs: int | None = None, **options) -> int:
    """The number of progress steps `jacobian` will report with these options (inputs × depth),
    after checking them all as `jacobian` does: a bar's total, known before the run starts."""
    return prepare_jacobian(scheme, activation, inputs=inputs, **options).steps


def run_jacobian(plan: JacobianRun, progress: Callable[[int], None] | None = None) -> JacobianResult:
    """Build the stack of a checked run and take its spectrum; `progress(n)` reports n more
    steps done, `plan.steps` in all."""
    from ..shared import jacobian_run
    from .runs import run_inputs

    # on one thread, the stack's LSUV calibration too: small products
    return jacobian_run(plan, progress, build=run_inputs, spectrum=jacobian_spectrum)


def jacobian(scheme="he-normal", activation: str = "relu", *, inputs: int | None = None, spectrum: bool = False,
             progress: Callable[[int], None] | None = None, **options) -> JacobianResult:
    """The Jacobian spectrum of the stack `propagate` would build with these options, at its
    first `inputs` inputs (default min(8, batch); an LSUV calibration still uses the whole batch).

    Result rows (`rows()`, keyed by `columns`): layer, sv_mean_sq = m1 = E[σ²], sv_max, sv_min,
    sv_condition = sv_max/sv_min (those three per input, averaged over the inputs). With
    `spectrum`, also the moments of Pennington et al. 2018 over the pooled singular values
    of all inputs: sv_mean_4th = m2 = E[σ⁴] and sv_sq_var = Var(σ²) = m2 − m1²; and every
    singular value, as `singular_values` (one (inputs, min(n_l, n_0)) array per layer) and as
    rows (layer, input, index, singular_value) from `value_rows()`.

    `progress(n)`, if given, is called as work is done, with the number of steps just done:
    inputs × depth steps in all (`plan_jacobian(...)` gives the number before starting).
    Runs with numpy's BLAS on one thread.
    """
    return run_jacobian(prepare_jacobian(scheme, activation, inputs=inputs, spectrum=spectrum, **options), progress)
