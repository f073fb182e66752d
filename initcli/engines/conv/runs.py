"""The conv engine's runs: `propagate --arch conv` (checked options, memory estimate,
per-layer statistics, mean-field theory beside them) and `jacobian --arch conv`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...activations import Activation
from ...checks import MAX_DEPTH, MAX_SIZE, check_dtype, check_memory, check_seed, positive_int
from ...engine import Architecture, make_architecture
from ...errors import InitcliError
from ...schemes import Init, check_weight_scale, gaussian
from ...theory import TheoryColumns, beside
from ..base import thread_policy
from ..shared import Run, jacobian_run, propagate_run, resolve_init, seed_streams
from . import SINGLE_THREAD_WORK
from .kernels import (
    CHUNK_BYTES,
    MEMORY_OPTIONS,
    REFUSED_KINDS,
    ConvShape,
    ConvStack,
    backward,
    build_conv_stack,
    chunk_examples,
    conv_shape,
    correlate,
    forward,
    to_channels_last,
)

_WORKSPACE = 4 << 20  # small arrays and blockwise float64 work beside the estimate's arrays


def measure(stack: ConvStack, act: Activation, x: np.ndarray, cotangent: np.ndarray, *,
            progress: Callable[[int], None] | None = None):
    """Forward x, backpropagate the cotangent (both channels-last) and measure every layer:
    moments over batch, positions and channels; dead_frac over the (position, channel) units;
    effective_rank and input_cosine over each example's flattened activations. Returns
    (layers, first layer whose pre-activations overflowed, first from the top whose gradient did)."""
    from ..shared import LayerRecorder

    recorder = LayerRecorder(act, stack.depth, progress)
    with np.errstate(all="ignore"):
        backward(stack, forward(stack, act, x, recorder.on_forward), cotangent, recorder.on_backward,
                 keep_grads=False)
    fan = stack.shape.fan
    layers = recorder.layers(stack.weights, [(fan, fan)] * stack.depth)
    return layers, recorder.forward_overflow, recorder.backward_overflow


# -- propagate --conv ---------------------------------------------------------------------


def estimate_bytes(shape: ConvShape, depth: int, batch: int, dtype) -> int:
    """Peak memory, before anything is allocated: the kernels; the inputs, cotangent and
    every layer's output and φ'(h); a layer's transients (h, φ(h), δ, two gradients, a
    float64 copy for the statistics) and one im2col chunk."""
    itemsize = np.dtype(dtype).itemsize
    volume = batch * shape.positions * shape.channels  # one layer's array, in entries
    weights = depth * shape.channels * shape.fan * itemsize
    kept = weights + (2 + 2 * depth) * volume * itemsize
    im2col = min(CHUNK_BYTES, batch * shape.positions * shape.fan * itemsize) + shape.positions * shape.fan * itemsize
    transient = 5 * volume * itemsize + volume * 8 + im2col + shape.channels * shape.fan * itemsize
    return kept + transient + _WORKSPACE


@dataclass(frozen=True)
class ConvRun(Run):
    """A conv propagate call with every argument checked."""

    shape: ConvShape
    depth: int
    arch: Architecture

    @property
    def params(self) -> dict:
        return {**self.init.params(), **self.shape.params(), "depth": self.depth, **self.drawn_params(),
                **self.arch.params(), "param": "sp"}

    @property
    def estimate(self) -> int:
        return estimate_bytes(self.shape, self.depth, self.batch, self.dtype)


def prepare(scheme: str | Init = "he-normal", activation: str = "relu", **options) -> ConvRun:
    """Check a conv run's arguments (memory guard included), allocating nothing. Options:
    channels, spatial, kernel, padding (see `conv_shape`), depth (default 10), batch (512),
    bias_std, input_std, dtype, seed, theory, residual, residual_scale, block, and
    `schemes.make_init`'s keywords. `sizes` and `width` are refused: a conv layer's width is
    its channels."""
    run = _checked_run(scheme, activation, **options)
    check_memory(run.estimate, dtype=run.dtype, options=MEMORY_OPTIONS)
    return run


def _checked_run(scheme: str | Init = "he-normal", activation: str = "relu", *, channels: int | None = None,
                 spatial: Sequence[int] | int | None = None, kernel: int | None = None, padding: str | None = None,
                 depth: int | None = None, batch: int = 512, bias_std: float = 0.0, input_std: float = 1.0,
                 dtype: str = "float32", seed: int = 0, theory: bool = True, residual: bool = False,
                 residual_scale: float = 1.0, block: int = 1, sizes: Sequence[int] | None = None,
                 width: int | None = None, **init_options) -> ConvRun:
    """`prepare` without its memory guard (a Jacobian run needs other memory)."""
    for name, value in (("sizes", sizes), ("width", width)):
        if value is not None:
            raise InitcliError(name, "does not apply with --arch conv: its layers have --channels channels at "
                                     "each of the --spatial positions")
    init, act = resolve_init(scheme, activation, init_options)
    if init.kind in REFUSED_KINDS:
        raise InitcliError("scheme", f"{init.name} {REFUSED_KINDS[init.kind]}")
    shape = conv_shape(channels, spatial, kernel, padding)
    depth = positive_int("depth", 10 if depth is None else depth, MAX_DEPTH)
    batch = positive_int("batch", batch, MAX_SIZE)
    np_dtype = check_dtype(dtype)
    arch = make_architecture(residual, residual_scale, block, None, None, depth)
    arch.check_sizes([shape.channels] * (depth + 1))
    bias_std = check_weight_scale("bias_std", bias_std)
    input_std = check_weight_scale("input_std", input_std)
    seed = check_seed(seed)
    return ConvRun(init=init, act=act, batch=batch, bias_std=bias_std, input_std=input_std, dtype=np_dtype, seed=seed,
                   theory=bool(theory), shape=shape, depth=depth, arch=arch)


def work(run: ConvRun) -> int:
    """Multiply-adds of the largest single product: one im2col chunk (examples × positions
    rows of C·k^d columns) times the C kernels."""
    shape = run.shape
    examples = min(run.batch, chunk_examples((run.batch,) + shape.spatial + (shape.channels,), shape.fan,
                                     run.dtype.itemsize))
    return examples * shape.positions * shape.fan * shape.channels


def inputs(run: ConvRun) -> tuple[ConvStack, np.ndarray, np.ndarray]:
    """The stack, the inputs N(0, input_std²) and the unit-Gaussian cotangent (channels-last;
    drawn in torch's (batch, C, *spatial) layout from the seed's inputs and cotangent streams)."""
    stack, x = _stack_and_inputs(run)
    torch_layout = (run.batch, run.shape.channels) + run.shape.spatial
    cotangent = gaussian(seed_streams(run.seed)["cotangent"], torch_layout, run.dtype)
    return stack, x, to_channels_last(cotangent)


def _stack_and_inputs(run: ConvRun) -> tuple[ConvStack, np.ndarray]:
    """`inputs` without the cotangent (each has its own stream: the inputs do not change)."""
    stack = build_conv_stack(run.init, run.shape, run.depth, bias_std=run.bias_std, seed=run.seed, dtype=run.dtype,
                             arch=run.arch)
    torch_layout = (run.batch, run.shape.channels) + run.shape.spatial
    x = gaussian(seed_streams(run.seed)["inputs"], torch_layout, run.dtype) * run.dtype.type(run.input_std)
    return stack, to_channels_last(x)


def propagate(scheme: str | Init = "he-normal", activation: str = "relu", *,
              progress: Callable[[int], None] | None = None, **options):
    """`propagation.propagate` for a conv stack (options: see `prepare`): a
    `engines.base.Result` whose params record the architecture. With `theory`, the
    mean-field columns with fan_in = C·k^d for circular padding; blank for zero padding and
    for deterministic kernels (constant, dirac), where mean-field does not apply."""
    return run_prepared(prepare(scheme, activation, **options), progress)


def run_prepared(run: ConvRun, progress: Callable[[int], None] | None = None):
    """`propagate` for a run `prepare` has checked (the CLI prepares it to report memory)."""
    return propagate_run(run, progress, threads=thread_policy(work(run), SINGLE_THREAD_WORK), build=inputs,
                         measure=measure, theory=theory_columns)


def theory_columns(run: ConvRun, layers) -> tuple[TheoryColumns, ...]:
    """Mean-field beside the measurement, as `theory.beside` gives it for an MLP, with
    fan_in = fan_out = C·k^d. The finite-width spread counts C (the independent filters),
    not C·k^d: the positions share one kernel, so they do not average its randomness away.
    Zero padding breaks the stationarity the prediction assumes: blank."""
    weight_vars = None  # deterministic weights (no ensemble), or zero padding
    if run.shape.padding == "circular" and run.init.iid:
        std = run.init.expected_std(run.shape.weight_shape)
        weight_vars = [std * std] * run.depth  # a product: inf past float64's range, where ** raises
    return beside(run.act, weight_vars, [run.shape.fan] * (run.depth + 1), bias_var=run.bias_std * run.bias_std,
                  input_second_moment=run.input_std * run.input_std, arch=run.arch,
                  measured_preact=[layer.preact_var for layer in layers],
                  measured_grad=[layer.grad_var for layer in layers],
                  spread_sizes=[run.shape.channels] * (run.depth + 1))


# -- jacobian --arch conv -------------------------------------------------------------------

# One input's Jacobian ∂a_l/∂x is n×n with n = C·positions, and costs an n×n SVD per layer.
# propagate's default geometry (16 channels over 16×16: n = 4096, jacobian.MAX_JACOBIAN_WIDTH)
# would take many minutes, so where --channels or --spatial is not given a Jacobian run uses
# 8 channels, or 8×8 positions: n = 512, a few seconds at the default depth.
JACOBIAN_CHANNELS = 8
JACOBIAN_SPATIAL = (8, 8)
# the options that make a conv Jacobian run smaller, named when it does not fit in memory
JACOBIAN_OPTIONS = ("--inputs", "--channels", "--spatial", "--depth")


def estimate_jacobian_bytes(shape: ConvShape, depth: int, inputs: int, batch: int, dtype, *,
                            spectrum: bool = False) -> int:
    """Peak memory of a conv Jacobian run, before anything is allocated: the kernels in their
    dtype and in float64, the batch of inputs; three float64 tangent arrays of inputs·n·n
    (the current one, a residual block's input, the next layer's), the padded copy the
    correlation makes and one im2col chunk; one SVD's copy and workspace; with `spectrum`
    every singular value."""
    n = shape.channels * shape.positions
    itemsize = np.dtype(dtype).itemsize
    weights = depth * shape.channels * shape.fan * (itemsize + 8)
    tangents = 3 * inputs * n * n * 8
    padded = inputs * n * shape.channels * math.prod(size + shape.kernel - 1 for size in shape.spatial) * 8
    im2col = min(CHUNK_BYTES, inputs * n * shape.positions * shape.fan * 8) + shape.positions * shape.fan * 8
    svd = 4 * n * n * 8 + 8 * n * 8
    kept = depth * inputs * n * 8 if spectrum else 0
    return weights + batch * n * itemsize + tangents + padded + im2col + svd + kept + _WORKSPACE


def prepare_jacobian(scheme: str | Init = "he-normal", activation: str = "relu", *, inputs: int | None = None,
                     spectrum: bool = False, **options):
    """Check every argument of `jacobian --arch conv` (options: `prepare`'s; channels default
    to 8 and spatial to 8×8 here, see JACOBIAN_CHANNELS) and refuse, before allocating, an
    input wider than jacobian.MAX_JACOBIAN_WIDTH (C·positions values) or a run that does not
    fit in memory. `inputs` defaults to min(8, batch)."""
    from ..spectra import MAX_JACOBIAN_WIDTH, JacobianRun, check_inputs

    options.setdefault("theory", False)
    if options.get("channels") is None:
        options["channels"] = JACOBIAN_CHANNELS
    if options.get("spatial") is None:
        options["spatial"] = JACOBIAN_SPATIAL
    run = _checked_run(scheme, activation, **options)
    inputs = check_inputs(inputs, run.batch)
    shape = run.shape
    n = shape.channels * shape.positions
    if n > MAX_JACOBIAN_WIDTH:
        raise InitcliError("channels", f"the conv Jacobian is taken over all {shape.channels} channels × "
                                       f"{shape.positions} positions = {n} input values, one {n}×{n} SVD per layer "
                                       f"and input; at most {MAX_JACOBIAN_WIDTH} are accepted: lower --channels "
                                       f"or --spatial")
    check_memory(estimate_jacobian_bytes(shape, run.depth, inputs, run.batch, run.dtype, spectrum=bool(spectrum)),
                 options=JACOBIAN_OPTIONS)
    return JacobianRun(run, inputs, bool(spectrum))


def run_jacobian(plan, progress: Callable[[int], None] | None = None):
    """Build the stack of a checked run and take its Jacobian spectrum at the first
    `plan.inputs` inputs: a `jacobian.JacobianResult`, one row per conv layer. `progress(n)`
    reports n more steps done, `plan.steps` in all. Float64, on one BLAS thread."""
    return jacobian_run(plan, progress, build=_stack_and_inputs, spectrum=jacobian_spectrum)


def jacobian(scheme: str | Init = "he-normal", activation: str = "relu", *, inputs: int | None = None,
             spectrum: bool = False, progress: Callable[[int], None] | None = None, **options):
    """`jacobian.jacobian` for a conv stack: singular values of ∂a_l/∂x after every conv
    layer, x the whole input example (C·positions values). See `prepare_jacobian`."""
    return run_jacobian(prepare_jacobian(scheme, activation, inputs=inputs, spectrum=spectrum, **options), progress)


def jacobian_spectrum(stack: ConvStack, act: Activation, x: np.ndarray, *, spectrum: bool = False,
                      progress: Callable[[int], None] | None = None):
    """(JacobianStats per layer, every singular value or None) of ∂a_l/∂x at each example of a
    channels-last x (m, *S, C), as `jacobian.jacobian_spectrum` gives them for an MLP.

    Forward mode: the Jacobian of example i is carried as n = C·positions tangents, the
    images of the input's n basis vectors, each an (*S, C) array like an activation, so all
    m·n of them go through one `correlate` per layer as one batch: the kernel's correlation
    without the bias, times that example's φ'(h), plus the block input's tangents at the end
    of a residual block (scaled as the forward pass scales the branch). Then one SVD per
    layer and example. Call it on one BLAS thread (`run_jacobian` does)."""
    from ..spectra import singular_values, spectrum_stats

    shape, arch = stack.shape, stack.arch
    before, after = shape.pads
    weights = tuple(w.astype(np.float64) for w in stack.weights)
    biases = tuple(b.astype(np.float64) for b in stack.biases)
    x = x.astype(np.float64)
    m, example = x.shape[0], x.shape[1:]
    n = math.prod(example)
    tangents = np.zeros((m, n, n))  # (example, basis vector, output value): J_iᵀ, whose SVD is J_i's
    tangents[:, np.arange(n), np.arange(n)] = 1.0
    tangents = tangents.reshape((m, n) + example)
    a = block_input = x
    block_tangents = tangents
    stats, values = [], []
    with np.errstate(all="ignore"):  # overflow is reported as nan statistics, never a warning
        for index, (w, b) in enumerate(zip(weights, biases), start=1):
            if arch.opens_block(index):
                block_input, block_tangents = a, tangents
            h = correlate(a, w, before, after, shape.padding)
            h += b
            branch, deriv = act.apply(h)
            # past an overflow the derivative means nothing (relu'(nan) = 0 would look clean)
            deriv = np.where(np.isfinite(h), deriv, np.nan)
            through = correlate(tangents.reshape((m * n,) + example), w, before, after, shape.padding)
            through = through.reshape((m, n) + example)
            through *= deriv[:, None]
            if arch.closes_block(index):
                scale = arch.residual_scale
                a = block_input + branch * scale
                through *= scale
                through += block_tangents
                block_tangents = None
            else:
                a = branch
            tangents = through
            del h, through
            layer_values = singular_values(tangents.reshape(m, n, n).transpose(2, 0, 1), progress)
            stats.append(spectrum_stats(index, layer_values))
            if spectrum:
                values.append(layer_values)
    return tuple(stats), (tuple(values) if spectrum else None)
