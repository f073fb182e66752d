"""Singular values of the input–output Jacobian after each layer (dynamical isometry).

Pennington, Schoenholz & Ganguli 2017, Resurrecting the sigmoid in deep learning through
dynamical isometry: a network trains fast when every singular value of ∂a_l/∂x stays near 1,
not only their mean square (which is what the variance map controls). For each of a few
inputs the Jacobian is carried forward layer by layer, in float64:
J_h = W·J, through LayerNorm J_ñ = s·(J_h − mean(J_h) − ñ·(ñᵀJ_h)/n), J_φ = φ'(ñ)⊙J_ñ, and at
the end of a residual block J_out = J_in + α·J_φ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from .engine import Scratch, Stack, layer_forward
from .errors import InitcliError


@dataclass(frozen=True)
class JacobianStats:
    layer: int
    sv_mean_sq: float  # mean of σ_i², averaged over inputs: the variance map's view
    sv_max: float
    sv_min: float
    sv_condition: float  # sv_max / sv_min: 1 is perfect isometry


JACOBIAN_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JacobianStats))
MAX_JACOBIAN_WIDTH = 4096


@dataclass(frozen=True)
class JacobianResult:
    params: dict
    layers: tuple[JacobianStats, ...]

    def rows(self) -> list[dict]:
        return [asdict(layer) for layer in self.layers]


def jacobian_spectrum(stack: Stack, activation, x: np.ndarray) -> tuple[JacobianStats, ...]:
    """Singular-value statistics of ∂a_l/∂x for l = 1…L, averaged over the rows of x."""
    if max(stack.sizes) > MAX_JACOBIAN_WIDTH:
        raise InitcliError("width", f"the Jacobian spectrum needs one SVD per layer and input; widths up to "
                                    f"{MAX_JACOBIAN_WIDTH} are accepted, got {max(stack.sizes)}")
    stack64 = Stack(tuple(w.astype(np.float64) for w in stack.weights),
                    tuple(b.astype(np.float64) for b in stack.biases), stack.arch)
    arch = stack64.arch
    x = x.astype(np.float64)
    inputs, width_in = x.shape
    jac = np.broadcast_to(np.eye(width_in), (inputs, width_in, width_in)).copy()
    block_jac = jac
    a = block_input = x
    scratch = Scratch()
    stats = []
    with np.errstate(all="ignore"):
        for index in range(1, stack64.depth + 1):
            if arch.opens_block(index):
                block_input, block_jac = a, jac
            _, _, state = layer_forward(stack64, activation, index, a, block_input, scratch)
            through = np.matmul(stack64.weights[index - 1], jac)  # (inputs, out, in₀)
            if arch.norm == "layer":
                normed, inv_std = state.normed, state.inv_std
                through = through - through.mean(axis=1, keepdims=True)
                through -= normed[:, :, None] * (np.einsum("bo,boi->bi", normed, through)[:, None, :]
                                                 / normed.shape[1])
                through *= inv_std[:, :, None]
            through *= state.deriv[:, :, None]
            if arch.closes_block(index):
                through = block_jac + arch.residual_scale * through
            jac, a = through, state.act
            stats.append(_spectrum_stats(index, jac))
    return tuple(stats)


def _spectrum_stats(index: int, jac: np.ndarray) -> JacobianStats:
    if not np.isfinite(jac).all():
        nan = float("nan")
        return JacobianStats(index, nan, nan, nan, nan)
    values = np.linalg.svd(jac, compute_uv=False)  # (inputs, min(out, in₀)), descending
    largest, smallest = values[:, 0], values[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        condition = np.where(smallest > 0, largest / smallest, np.inf)
    return JacobianStats(index, float(np.mean(values**2)), float(largest.mean()), float(smallest.mean()),
                         float(condition.mean()))


def jacobian(scheme="he-normal", activation: str = "relu", *, inputs: int = 8, **options) -> JacobianResult:
    """The Jacobian spectrum of the stack `propagate` would build with these options, at its
    first `inputs` inputs (an LSUV calibration still uses the whole batch)."""
    from .propagation import _inputs, _positive_int, check_memory, prepare

    inputs = _positive_int("inputs", inputs)
    run = prepare(scheme, activation, theory=False, **options)
    if inputs > run.batch:
        raise InitcliError("inputs", f"must be at most --batch ({run.batch}), got {inputs}")
    check_memory(4 * inputs * max(run.sizes) * run.sizes[0] * 8)  # the Jacobians of two layers and their SVD
    stack, x, _, _ = _inputs(run)
    return JacobianResult({**run.params, "inputs": inputs}, jacobian_spectrum(stack, run.act, x[:inputs]))
