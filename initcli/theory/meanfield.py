"""The mean-field recursion through a stack (plain, LayerNorm, residual, residual-init presets),
the finite-width spread around it, and the theory columns `propagate` puts beside a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..activations import Activation
from ..engine import LAYER_NORM_EPS, PLAIN, Architecture
from .quadrature import dphi_sq, gauss_expect, phi_sq

# -- per-layer predictions ------------------------------------------------------------------


@dataclass(frozen=True)
class LayerTheory:
    layer: int
    preact_var: float
    grad_var: float
    chi: float  # σ'_l²·E[φ'(h_l)²]: the factor by which this layer's weights and φ' scale Var(δ)


def mean_field(act: Activation, weight_vars: Sequence[float], sizes: Sequence[int], *, bias_var: float = 0.0,
               input_second_moment: float = 1.0, cotangent_var: float = 1.0,
               arch: Architecture = PLAIN) -> tuple[LayerTheory, ...]:
    """The mean-field recursion for a stack with per-layer weight variances and sizes.

    LayerNorm: each input's ñ has unit second moment, so the branch sees q̃ = q/(q + ε) and
    the backward pass divides by q + ε (LN's 1/σ; its two projections remove O(1/n)).
    Residual blocks a_out = a_in + α·φ(ñ): at infinite width each unit's branch is independent
    of its skip, so E[a_out²] = Q_in + 2α·M_in·E[φ] + α²·E[φ²], with M the units' mean (not
    zero once ReLU branches have added to the stream). Gradients add on the way back,
    G_in = G_out + (what comes back through the branch): their cross term has a zero-mean
    weight in it, so it vanishes.

    Residual-init presets (Architecture.residual_init) enter through `weight_vars` (their
    factors on branch weights, squared), α (ReZero/SkipInit 0, depth-µP 1/√L) and, for
    DeepNorm, a skip multiplier s and a LayerNorm on the sum: with s the stream follows
    Q_out = s²·Q_in + 2sα·M_in·E[φ] + α²·E[φ²] — for zero-mean branches the recursion
    q_{l+1} = q_l + α²·V(q_l) of a plain residual stream, scaled. After the post-LN each
    input's units have mean 0 and variance v/(v + ε), v = Q − M² being the sum's variance
    across units (the units share the mean M), and the gradient divides by v + ε on its way
    back through it.
    """
    # Python floats throughout: their overflow is a silent inf (numpy scalars would warn), and
    # products, never `**`, which raises OverflowError past 1e308
    weight_vars = [float(v) for v in weight_vars]
    bias_var, input_second_moment, cotangent_var = float(bias_var), float(input_second_moment), float(cotangent_var)
    depth = len(weight_vars)
    layer_norm = arch.norm == "layer"
    alpha = float(arch.residual_scale or 0.0)
    skip_scale = float(arch.skip_scale)
    q, branch_q = [], []
    post_var = [0.0] * depth  # a post-LN block's v = Var_units(sum), where the gradient divides by v + ε
    stream = block_in = input_second_moment
    stream_mean = block_in_mean = 0.0  # the inputs are zero-mean
    for layer in range(depth):
        index = layer + 1
        if arch.opens_block(index):
            block_in, block_in_mean = stream, stream_mean
        q_l = sizes[layer] * weight_vars[layer] * stream + bias_var
        q.append(q_l)
        seen = _layer_norm_seen(q_l) if layer_norm else q_l
        branch_q.append(seen)
        out = phi_sq(act, seen)
        out_mean = gauss_expect(act.fn, seen) if arch.residual else 0.0
        if arch.closes_block(index):
            if skip_scale == 1.0:
                stream = block_in + 2 * alpha * block_in_mean * out_mean + alpha * alpha * out
                stream_mean = block_in_mean + alpha * out_mean
            else:
                stream = (skip_scale * skip_scale * block_in + 2 * skip_scale * alpha * block_in_mean * out_mean
                          + alpha * alpha * out)
                stream_mean = skip_scale * block_in_mean + alpha * out_mean
            if arch.post_norm:
                # Q − M² cancels catastrophically only when the units barely vary, where the
                # LN output itself is ill-defined: clamp at 0
                post_var[layer] = max(stream - stream_mean * stream_mean, 0.0) if math.isfinite(stream) else stream
                stream, stream_mean = _layer_norm_seen(post_var[layer]), 0.0
        else:
            stream, stream_mean = out, out_mean
    derivative_sq = [dphi_sq(act, seen) for seen in branch_q]
    chi = [sizes[layer + 1] * weight_vars[layer] * derivative_sq[layer] for layer in range(depth)]
    grad = [0.0] * depth
    incoming = cotangent_var  # Var(∂L/∂a_l)
    skip = 0.0
    for layer in range(depth - 1, -1, -1):
        index = layer + 1
        if arch.closes_block(index) and arch.post_norm:
            incoming = incoming / (post_var[layer] + LAYER_NORM_EPS)  # a float's x/∞ is 0, quietly
        through = incoming * derivative_sq[layer]
        if arch.closes_block(index):
            skip = incoming if skip_scale == 1.0 else skip_scale * skip_scale * incoming
            through *= alpha * alpha
        if layer_norm:
            through /= q[layer] + LAYER_NORM_EPS
        grad[layer] = through
        incoming = sizes[layer + 1] * weight_vars[layer] * through
        if arch.opens_block(index):
            incoming += skip
    return tuple(LayerTheory(i + 1, q[i], grad[i], chi[i]) for i in range(depth))


def _layer_norm_seen(q: float) -> float:
    """The variance a branch sees after LayerNorm, q/(q + ε): 1 once q overflowed (∞/∞)."""
    return 1.0 if q == math.inf else q / (q + LAYER_NORM_EPS)


def finite_width_spread(sizes: Sequence[int]) -> tuple[list[float], list[float]]:
    """Expected sd of log(measured/theory) per layer, forward and backward.

    Hanin & Rolnick 2018: at finite width the log of a ReLU layer's squared activation norm
    has variance ≈ 5·Σ 1/n_k over the layers passed through; used here for every activation
    as the scale of honest finite-width drift (smooth activations in the ordered phase drift
    less, so this errs on the side of not crying wolf).
    """
    widths = list(sizes[1:])
    forward = [math.sqrt(5 * sum(1 / n for n in widths[: i + 1])) for i in range(len(widths))]
    backward = [math.sqrt(5 * sum(1 / n for n in widths[i:])) for i in range(len(widths))]
    return forward, backward


def parts_ways(measured: float, predicted: float, spread: float, *, sds: float = 3.0) -> bool:
    """Whether a measurement is further from theory than `sds` finite-width spreads (in log)."""
    measured, predicted = float(measured), float(predicted)
    if not (math.isfinite(measured) and math.isfinite(predicted)):
        return False  # overflow is reported on its own
    if measured == 0 or predicted == 0:
        return (measured == 0) != (predicted == 0)
    # a difference of logs: the ratio itself can overflow or underflow (1e-300/1e300)
    return abs(math.log(abs(measured)) - math.log(abs(predicted))) > sds * spread


# -- theory beside a measurement ------------------------------------------------------------


@dataclass(frozen=True)
class TheoryColumns:
    """The columns `propagate` adds per layer: prediction, χ, and where measurement parts ways."""

    theory_preact_var: float | None
    theory_grad_var: float | None
    chi: float | None
    off_theory: str  # "", "preact", "grad" or "preact,grad": beyond 3 finite-width spreads


THEORY_COLUMNS: tuple[str, ...] = ("theory_preact_var", "theory_grad_var", "chi", "off_theory")


def beside(act: Activation, weight_vars: Sequence[float] | None, sizes: Sequence[int], *, bias_var: float,
           input_second_moment: float, measured_preact: Sequence[float],
           measured_grad: Sequence[float], arch: Architecture = PLAIN,
           spread_sizes: Sequence[int] | None = None) -> tuple[TheoryColumns, ...]:
    """Theory columns for a measured run. `weight_vars` None means mean-field does not apply
    (weights that are not zero-mean and i.i.d., e.g. constant init): the columns stay blank.
    `spread_sizes`: the independent units whose average the finite-width spread counts, when
    they are not the fans (a conv's C filters, shared over its positions); default `sizes`."""
    if weight_vars is None:
        return tuple(TheoryColumns(None, None, None, "") for _ in measured_preact)
    predicted = mean_field(act, weight_vars, sizes, bias_var=bias_var, input_second_moment=input_second_moment,
                           arch=arch)
    forward_spread, backward_spread = finite_width_spread(sizes if spread_sizes is None else spread_sizes)
    columns = []
    for i, layer in enumerate(predicted):
        off = [name for name, measured, theory, spread in (
            ("preact", measured_preact[i], layer.preact_var, forward_spread[i]),
            ("grad", measured_grad[i], layer.grad_var, backward_spread[i]),
        ) if parts_ways(measured, theory, spread)]
        columns.append(TheoryColumns(layer.preact_var, layer.grad_var, layer.chi, ",".join(off)))
    return tuple(columns)
