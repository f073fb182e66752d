"""Layer-sequential unit-variance init (Mishkin & Matas 2015, All you need is a good init).

Start from orthogonal weights, then, layer by layer from the input, divide W_l by the standard
deviation of its pre-activations on a batch until their variance is within `tol` of 1.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .activations import Activation
from .engine import Scratch, Stack, layer_forward
from .errors import InitcliError
from .stats import moments

DEFAULT_TOL = 0.05
DEFAULT_MAX_ITER = 10


def check_lsuv_options(tol: float, max_iter: int) -> tuple[float, int]:
    if not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
        raise InitcliError("lsuv_tol", f"must be a finite number > 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise InitcliError("lsuv_max_iter", f"must be a positive integer, got {max_iter!r}")
    return float(tol), max_iter


def lsuv(stack: Stack, activation: Activation, x: np.ndarray, *, tol: float = DEFAULT_TOL,
         max_iter: int = DEFAULT_MAX_ITER) -> tuple[Stack, tuple[int, ...]]:
    """The stack with every layer rescaled to unit pre-activation variance on x, and the number
    of rescalings each layer took (0: already within tol). A layer whose pre-activations do
    not vary at all cannot be rescaled: that is refused, naming the layer."""
    tol, max_iter = check_lsuv_options(tol, max_iter)
    weights = [w.copy() for w in stack.weights]
    calibrated = replace(stack, weights=tuple(weights))
    scratch = Scratch()
    iterations = []
    a = block_input = x
    for index in range(1, stack.depth + 1):
        if stack.arch.opens_block(index):
            block_input = a
        w, b = weights[index - 1], stack.biases[index - 1]
        used = 0
        for _ in range(max_iter + 1):
            h = a @ w.T
            if b.any():
                h += b
            var = moments(h)[1]
            if not math.isfinite(var) or var == 0:
                raise InitcliError("scheme", f"lsuv: layer {index}'s pre-activations "
                                             f"{'do not vary' if var == 0 else 'overflowed'} on this batch, so "
                                             "no rescaling can give them unit variance (a dead layer below?)")
            if abs(var - 1) <= tol or used == max_iter:
                break
            w *= w.dtype.type(1 / math.sqrt(var))
            used += 1
        iterations.append(used)
        _, _, state = layer_forward(calibrated, activation, index, a, block_input, scratch)
        a = state.act
    return calibrated, tuple(iterations)
