"""The MLP engine's runs: `propagate`'s checked options (`prepare`), its memory estimate, the
stack and inputs drawn from the seed (LSUV's calibration and `--weights` files included), one
measured forward and backward pass, and mean-field theory beside the rows.

The loss is L = Σ g ⊙ a_L with a unit-Gaussian cotangent g, so δ_L = g ⊙ φ'(h_L),
δ_l = (δ_{l+1} W_{l+1}) ⊙ φ'(h_l) and ∂L/∂W_l = δ_lᵀ a_{l−1} for a plain stack: per-example
gradients summed over the batch, whose variance follows Var(δ_l) = Var(δ_{l+1})·σ'_w²·E[φ'²].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ...activations import Activation
from ...checks import check_dtype, check_memory, check_seed, positive_int, stack_sizes
from ...errors import InitcliError
from ...lsuv import DEFAULT_MAX_ITER, DEFAULT_TOL, check_lsuv_options, lsuv
from ...parametrization import Parametrization, parametrize
from ...schemes import Init, check_weight_scale, gaussian
from ...stats import RANK_INPUTS, STAT_BLOCK
from ...theory import TheoryColumns, beside
from ..base import thread_policy
from ..shared import LayerRecorder, LayerStats, Result, Run, propagate_run, resolve_init
from . import SINGLE_THREAD_WORK
from .kernels import (
    PLAIN,
    Architecture,
    LayerState,
    Stack,
    apply_parametrization,
    backward,
    build_stack,
    checkpointed,
    fold_multipliers,
    forward,
    make_architecture,
    seed_streams,
)

PropagateResult = Result  # the name the Python API has always had


# -- memory guard ---------------------------------------------------------------------------


_WORKSPACE = 4 << 20  # blockwise float64 work (GELU, statistics) and small arrays


def estimate_bytes(sizes: Sequence[int], batch: int, dtype: np.dtype, *, checkpoint: bool = False,
                   arch: Architecture = PLAIN) -> int:
    """Peak memory of a propagate run, computed before anything is allocated.

    Kept through the run: every layer's weights, the inputs, each layer's activations and
    φ'(h), and the cotangent; with `checkpoint`, activations only every ⌈√L⌉ layers plus one
    segment's activations and φ'(h). On top of that, the larger of one layer's transients:
    forward, its pre-activations, a float64 copy of its activations (the exact fallback of
    the statistics), their Gram matrix and a boolean mask; backward, two δ arrays and ∂L/∂W.
    Before the run, sampling holds the weights drawn so far and the draws of one matrix.
    LayerNorm keeps each layer's normalised pre-activations too; residual blocks hold the
    skip's gradient and the branch while they are added.
    """
    itemsize = np.dtype(dtype).itemsize
    per_layer = 3 if arch.norm == "layer" else 2  # activations, φ'(ñ) and, with layer norm, ñ
    pairs = list(zip(sizes[:-1], sizes[1:]))
    weights = sum(n_in * n_out for n_in, n_out in pairs) * itemsize
    build_peak = weights + max(n_in * n_out for n_in, n_out in pairs) * 8
    if checkpoint:
        depth = len(pairs)
        widest = max(sizes[1:])
        block = arch.block if arch.residual else 1
        segment = block * (math.isqrt(max(depth // block - 1, 0)) + 1)
        kept_acts = (len(range(0, depth, segment)) + per_layer * segment) * widest
    else:
        kept_acts = per_layer * sum(sizes[1:])
    kept = weights + batch * (sizes[0] + kept_acts + sizes[-1]) * itemsize
    transient = max(
        max(batch * n_out * (itemsize + 8 + 2) + min(batch, n_out, RANK_INPUTS) ** 2 * 8,
            (2 + 2 * arch.residual + (arch.norm == "layer")) * batch * max(n_in, n_out) * itemsize
            + n_in * n_out * itemsize + STAT_BLOCK * 8)
        for n_in, n_out in pairs
    )
    return max(build_peak, kept + transient) + _WORKSPACE


@dataclass(frozen=True)
class MlpRun(Run):
    """A propagate call with every argument checked and resolved."""

    sizes: tuple[int, ...] = ()
    checkpoint: bool = False
    arch: Architecture = PLAIN
    lsuv_tol: float = DEFAULT_TOL
    lsuv_max_iter: int = DEFAULT_MAX_ITER
    loaded: tuple | None = None  # (weights, biases, metadata, path) from --weights
    parametrization: Parametrization | None = None  # None: sp

    @property
    def bias_var(self) -> float:
        """σ_b²: --bias-std's, or with a weights file the mean square of the biases it holds."""
        if self.loaded is None:
            return self.bias_std * self.bias_std  # inf past float64's range; ** would raise
        biases = self.loaded[1]
        with np.errstate(over="ignore"):  # past float64's range the variance is inf, a result
            return sum(float(np.sum(np.square(b, dtype=np.float64))) for b in biases) / sum(b.size for b in biases)

    @property
    def depth(self) -> int:
        return len(self.sizes) - 1

    @property
    def estimate(self) -> int:
        """Peak memory of the run, before anything is allocated."""
        return estimate_bytes(self.sizes, self.batch, self.dtype, checkpoint=self.checkpoint, arch=self.arch)

    @property
    def params(self) -> dict:
        if self.loaded is not None:
            metadata, path = self.loaded[2], self.loaded[3]
            source = {"weights": path, "saved_scheme": metadata.get("scheme"), "saved_seed": metadata.get("seed"),
                      "activation": self.act.name}
        else:
            source = self.init.params()
        params = {**source, "sizes": list(self.sizes), "depth": len(self.sizes) - 1,
                  **self.drawn_params(None if self.loaded is None else math.sqrt(self.bias_var)),
                  **self.arch.params(),
                  **(self.parametrization.params() if self.parametrization is not None else {"param": "sp"})}
        if self.init.scheme.kind == "lsuv" and self.loaded is None:
            params |= {"lsuv_tol": self.lsuv_tol, "lsuv_max_iter": self.lsuv_max_iter}
        return params


def prepare(
    scheme: str | Init = "he-normal",
    activation: str = "relu",
    *,
    sizes: Sequence[int] | None = None,
    depth: int | None = None,
    width: int | None = None,
    batch: int = 512,
    bias_std: float = 0.0,
    input_std: float = 1.0,
    dtype: str = "float32",
    seed: int = 0,
    theory: bool = True,
    checkpoint: bool = False,
    residual: bool = False,
    residual_scale: float = 1.0,
    block: int = 1,
    norm: str | None = None,
    residual_init: str | None = None,
    lsuv_tol: float = DEFAULT_TOL,
    lsuv_max_iter: int = DEFAULT_MAX_ITER,
    weights: str | None = None,
    param: str | None = "sp",
    **init_options,
) -> MlpRun:
    """Check and resolve `propagate`'s arguments, memory guard included, allocating nothing
    but the arrays of a `weights` file (saved by `initcli sample --save`), which, when given,
    replaces the scheme and fixes the sizes. `param` (sp, ntk or mup: see
    `initcli.parametrization`) scales the weights and multiplies the layers' outputs; the
    stack measured is the function at init, each multiplier folded into its weights, so the
    columns describe the effective weights m·w. `init_options` are `schemes.make_init`'s (gain,
    mode, distribution, negative_slope, value, std, mean, limit, low, high, …)."""
    init, act = resolve_init(scheme, activation, init_options)
    declared = None
    if weights is not None:
        if sizes is not None or depth is not None or width is not None:
            raise InitcliError("weights", "the file fixes the sizes: give no --sizes, --depth or --width with it")
        from ...weightfile import inspect_npz

        declared = inspect_npz(weights)  # headers only: nothing is decompressed yet
        sizes = declared.sizes
    sizes = stack_sizes(sizes, depth, width)
    batch = positive_int("batch", batch)
    np_dtype = check_dtype(dtype)
    arch = make_architecture(residual, residual_scale, block, norm, residual_init, len(sizes) - 1)
    arch.check_sizes(sizes)
    lsuv_tol, lsuv_max_iter = check_lsuv_options(lsuv_tol, lsuv_max_iter)
    bias_std = check_weight_scale("bias_std", bias_std)
    check_residual_init(arch, init, bias_std, weights)
    parametrization = parametrize(param, sizes)
    if not parametrization.plain:
        if weights is not None:
            raise InitcliError("param", "does not apply with --weights: the file holds the weights")
        if init.scheme.kind == "lsuv":
            raise InitcliError("param", "does not apply to the lsuv scheme, which rescales every layer from the data")
    input_std = check_weight_scale("input_std", input_std)
    seed = check_seed(seed)
    needed = estimate_bytes(sizes, batch, np_dtype, checkpoint=checkpoint, arch=arch)
    if declared is None:
        check_memory(needed, dtype=np_dtype)
    else:  # the file fixes the sizes: only --batch is the user's to lower, or the file is too large
        try:
            check_memory(needed, options=("--batch",))
        except InitcliError as exc:
            raise InitcliError("weights", f"'{weights}' declares {declared.nbytes / 2**30:.1f} GiB of arrays; "
                                          f"{exc.message}") from None
    loaded = None
    if declared is not None:
        from ...weightfile import load_npz

        loaded = (*load_npz(weights, reserve=needed), weights)
        largest = max(float(np.max(np.abs(a), initial=0.0)) for a in (*loaded[0], *loaded[1]))
        limit = float(np.finfo(np_dtype).max)
        if largest > limit:  # cast, they would be inf before the first layer
            raise InitcliError("weights", f"'{weights}' holds values up to {largest:.3g}, past {np_dtype.name}'s "
                                          f"largest {limit:.3g}: run it with --dtype float64")
    return MlpRun(init=init, act=act, batch=batch, bias_std=bias_std, input_std=input_std, dtype=np_dtype, seed=seed,
                  theory=bool(theory), sizes=sizes, checkpoint=bool(checkpoint), arch=arch, lsuv_tol=lsuv_tol,
                  lsuv_max_iter=lsuv_max_iter, loaded=loaded,
                  parametrization=None if parametrization.plain else parametrization)


def check_residual_init(arch: Architecture, init: Init, bias_std: float, weights: str | None = None) -> None:
    """Refuse what a residual-init preset cannot honour: a weights file (which holds the
    weights), LSUV (which rescales every layer from data, over the preset's factors), and
    biases with Fixup (whose biases are scalars that start at 0)."""
    preset = arch.residual_init
    if preset is None:
        return
    if weights is not None:
        raise InitcliError("residual_init", "does not apply with --weights: the file holds the weights")
    if init.scheme.kind == "lsuv":
        raise InitcliError("residual_init", f"does not apply to the lsuv scheme, which rescales every layer from the "
                                            f"data over {preset.name}'s factors")
    if preset.zero_biases and bias_std > 0:
        raise InitcliError("bias_std", "does not apply with --residual-init fixup: Fixup's biases are scalars "
                                       "initialised at 0 (Zhang et al. 2019)")


def run_prepared(run: MlpRun, progress: Callable[[int], None] | None = None) -> PropagateResult:
    """`propagate` for a run `prepare` has checked: so a caller that prepared it (to report
    the memory it needs, say) does not check it, or read a weights file, twice."""
    built = {}

    def build(run: MlpRun):  # the stack, inputs and cotangent, with LSUV's rescalings kept aside
        built["stack"], x, cotangent, built["iterations"] = run_inputs(run)
        return built["stack"], x, cotangent

    result = propagate_run(run, progress, threads=thread_policy(work(run), SINGLE_THREAD_WORK), build=build,
                           measure=functools.partial(measure, checkpoint=run.checkpoint),
                           theory=lambda run, layers: theory_columns(run, built["stack"], layers))
    return replace(result, lsuv_iterations=built["iterations"])


def theory_columns(run: MlpRun, stack: Stack, layers: Sequence[LayerStats]) -> tuple[TheoryColumns, ...]:
    """Mean-field beside the measured layers (`theory.beside`), for the weights the run drew:
    their formula's variance, or for weights scaled by data or read from a file, the variance
    they have; blank for deterministic weights."""
    kind = "loaded" if run.loaded is not None else run.init.scheme.kind
    if kind != "loaded" and not run.init.iid:  # deterministic weights: mean-field theory does not apply
        weight_vars = None
    elif kind in ("lsuv", "loaded"):  # scaled by data, or read from a file: the variance the weights have
        with np.errstate(over="ignore"):  # past float64's range the variance is inf, a result
            weight_vars = [float(np.mean(np.square(w, dtype=np.float64))) for w in stack.weights]
    else:
        # a residual-init preset's factor on layer i's weights multiplies its variance by its square
        weight_vars = [_square(run.init.expected_std((n_out, n_in)) * run.arch.weight_scale(i))
                       for i, (n_in, n_out) in enumerate(zip(run.sizes[:-1], run.sizes[1:]), start=1)]
        if run.parametrization is not None:  # the effective weights m·w: (m·std factor)² on the variance
            weight_vars = [v * layer.effective_variance_factor
                           for v, layer in zip(weight_vars, run.parametrization.layers)]
    return beside(run.act, weight_vars, run.sizes, bias_var=run.bias_var,
                  input_second_moment=_square(run.input_std), arch=run.arch,
                  measured_preact=[layer.preact_var for layer in layers],
                  measured_grad=[layer.grad_var for layer in layers])


def work(run: MlpRun) -> int:
    """Multiply-adds of the largest layer product: batch × fan_in × fan_out."""
    return run.batch * max(a * b for a, b in zip(run.sizes[:-1], run.sizes[1:]))


def _square(value: float) -> float:
    return value * value  # inf past float64's range, where ** 2 raises OverflowError


def run_inputs(run: MlpRun) -> tuple[Stack, np.ndarray, np.ndarray, tuple[int, ...] | None]:
    """The stack (LSUV-calibrated where asked), the inputs and the cotangent of a run."""
    if run.loaded is not None:
        stack = Stack(tuple(w.astype(run.dtype) for w in run.loaded[0]), tuple(b.astype(run.dtype) for b in run.loaded[1]),
                      run.arch)
    else:
        stack = build_stack(run.init, run.sizes, bias_std=run.bias_std, seed=run.seed, dtype=run.dtype, arch=run.arch)
        if run.parametrization is not None:
            p = run.parametrization
            stack = fold_multipliers(apply_parametrization(stack, [layer.std_factor for layer in p.layers],
                                                           p.multipliers))
    streams = seed_streams(run.seed)
    x = gaussian(streams["inputs"], (run.batch, run.sizes[0]), run.dtype) * run.dtype.type(run.input_std)
    cotangent = gaussian(streams["cotangent"], (run.batch, run.sizes[-1]), run.dtype)
    iterations = None
    if run.init.scheme.kind == "lsuv" and run.loaded is None:
        with np.errstate(all="ignore"):
            stack, iterations = lsuv(stack, run.act, x, tol=run.lsuv_tol, max_iter=run.lsuv_max_iter)
    return stack, x, cotangent, iterations


def measure(stack: Stack, act: Activation, x: np.ndarray, cotangent: np.ndarray, *,
            checkpoint: bool = False, progress: Callable[[int], None] | None = None,
            ) -> tuple[tuple[LayerStats, ...], int | None, int | None]:
    """Forward x, backpropagate the cotangent, and measure every layer: the engine of
    `propagate` for a given stack and inputs. Returns (layers, first layer whose
    pre-activations overflowed, first layer from the top whose gradient did)."""
    recorder = LayerRecorder(act, len(stack.weights), progress)

    def on_forward(layer: int, h: np.ndarray, branch: np.ndarray, state: LayerState) -> None:
        recorder.on_forward(layer, h, branch, state.act, state.deriv)

    with np.errstate(all="ignore"):
        if checkpoint:
            checkpointed(stack, act, x, cotangent, on_forward, recorder.on_backward)
        else:
            backward(stack, forward(stack, act, x, on_forward), cotangent, recorder.on_backward, keep_grads=False)
    layers = recorder.layers(stack.weights, [(w.shape[1], w.shape[0]) for w in stack.weights])
    return layers, recorder.forward_overflow, recorder.backward_overflow
