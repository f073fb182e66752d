"""Convolution stacks (`propagate --arch conv`): forward, backward and per-layer statistics.

A stack of `depth` layers of C → C channels, each a stride-1 "same" convolution with a k×…×k
kernel (torch layout (out, in, *kernel)), a bias per channel and the activation:
h_l = W_l ⋆ a_{l−1} + b_l, a_l = φ(h_l) (with residual blocks, the block's last layer adds
its input: a_l = a_in + α·φ(h_l)). ⋆ is cross-correlation as in torch's conv1d/conv2d, with
the input padded circularly (Xiao et al. 2018: the spatial positions then form a torus, every
position sees a full window and the stack is translation-equivariant) or with zeros; the
padding follows torch's padding="same": (k − 1)//2 before, the rest after.

Every convolution is matrix products: the padded input's windows (a strided view, copied one
batch chunk at a time: im2col) times the kernel as an (out, in·k^d) matrix. Going back,
∂L/∂W = δᵀ·im2col(a), and ∂L/∂a is the correlation of δ with the kernel flipped in space and
transposed in channels, padded the other way round ((k − 1) − (k − 1)//2 before). Arrays live
channels-last, (batch, *spatial, channels), so each product is one large GEMM and the bias
and statistics need no transposes; inputs and cotangents are drawn in torch's
(batch, channels, *spatial) layout.

Theory. With circular padding every pre-activation is a sum over exactly C·k^d inputs, all
with the same second moment (translation invariance), so the mean-field variance map is the
MLP's with fan_in = C·k^d: q_l = σ_w²·E[φ(√q_{l−1} z)²] + σ_b², σ_w² = C·k^d·Var(W), and
backwards Var(δ_l) = Var(δ_{l+1})·C·k^d·Var(W)·E[φ'²] (each input position feeds C·k^d
outputs). Zero padding breaks this at the borders (the windows there hold zeros), so its
theory columns are left blank. A delta-orthogonal kernel (Xiao et al. 2018: an orthogonal
C×C matrix at the centre tap, zeros elsewhere) makes each linear layer an orthogonal map on
every position's channel vector: the linear stack's Jacobian is exactly isometric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .activations import DEFAULT_NEGATIVE_SLOPE, Activation, get_activation
from .checks import MAX_DEPTH, MAX_SIZE, check_dtype, check_memory, check_seed, positive_int
from .engine import PLAIN, Architecture, make_architecture, seed_streams
from .engines.base import Result, thread_policy
from .errors import InitcliError
from .schemes import Init, check_weight_scale, gaussian, make_init
from .stats import all_finite
from .theory import TheoryColumns, beside
from .threads import blas_threads_limited

PADDINGS = ("circular", "zero")
MAX_SPATIAL_DIMS = 3
DEFAULT_CHANNELS = 16
DEFAULT_SPATIAL = (16, 16)
DEFAULT_KERNEL = 3
MEMORY_OPTIONS = ("--batch", "--depth", "--channels", "--spatial")  # what makes a conv run smaller
# im2col copies at most this much of the batch at a time: small enough to stay in a core's L2
# cache (the copy then costs ~half of a 16 MiB chunk's on a 4 MiB-L2 Xeon), large enough for
# an efficient GEMM (thousands of rows)
_CHUNK_BYTES = 1 << 20
_WORKSPACE = 4 << 20
# schemes that cannot draw a conv kernel (identity and sparse are 2-D only, as torch's eye_ and
# sparse_) or that need the MLP engine
REFUSED_KINDS = {"identity": "draws 2-D matrices only; for conv kernels use delta-orthogonal or dirac",
                 "sparse": "draws 2-D (out, in) matrices only, as torch's sparse_; for conv kernels use a "
                           "variance-scaling scheme, delta-orthogonal or dirac",
                 "lsuv": "rescales every layer from the data, which only the MLP engine does"}


@dataclass(frozen=True)
class ConvShape:
    """The layers' geometry: C channels in and out, the spatial size, a k^d kernel, the padding."""

    channels: int
    spatial: tuple[int, ...]
    kernel: int
    padding: str

    @property
    def dims(self) -> int:
        return len(self.spatial)

    @property
    def taps(self) -> int:
        return self.kernel ** self.dims

    @property
    def fan(self) -> int:
        """fan_in = fan_out = C·k^d, as `sample --shape C,C,k,…` counts a kernel."""
        return self.channels * self.taps

    @property
    def positions(self) -> int:
        return math.prod(self.spatial)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.channels, self.channels) + (self.kernel,) * self.dims

    @property
    def pads(self) -> tuple[int, int]:
        """Padding before and after each spatial axis: torch's padding="same"."""
        before = (self.kernel - 1) // 2
        return before, self.kernel - 1 - before

    def params(self) -> dict:
        return {"arch": "conv", "channels": self.channels, "spatial": list(self.spatial), "kernel": self.kernel,
                "padding": self.padding}


def conv_shape(channels: int | None = None, spatial: Sequence[int] | int | None = None,
               kernel: int | None = None, padding: str | None = None) -> ConvShape:
    """Check the conv options (None: the defaults, 16 channels, 16×16, k = 3, circular)."""
    channels = positive_int("channels", DEFAULT_CHANNELS if channels is None else channels)
    spatial = DEFAULT_SPATIAL if spatial is None else spatial
    spatial = (spatial,) if isinstance(spatial, (int, np.integer)) and not isinstance(spatial, bool) else spatial
    if isinstance(spatial, str) or not isinstance(spatial, Sequence) or not 1 <= len(spatial) <= MAX_SPATIAL_DIMS:
        raise InitcliError("spatial", f"must list 1 to {MAX_SPATIAL_DIMS} positive sizes (e.g. 32 or 16,16), "
                                      f"got {spatial!r}")
    spatial = tuple(positive_int("spatial", s) for s in spatial)
    kernel = positive_int("kernel", DEFAULT_KERNEL if kernel is None else kernel)
    if kernel > min(spatial):
        raise InitcliError("kernel", f"must be at most the smallest spatial size {min(spatial)} (a window "
                                     f"wider than the input), got {kernel}")
    name = "circular" if padding is None else str(padding).strip().lower()
    name = {"zeros": "zero", "circ": "circular"}.get(name, name)
    if name not in PADDINGS:
        raise InitcliError("padding", f"unknown padding '{padding}'; choose from {', '.join(PADDINGS)}")
    return ConvShape(channels, spatial, kernel, name)


# -- one convolution ------------------------------------------------------------------------


def _buffer(workspace: dict | None, key: tuple, shape: tuple[int, ...], dtype, fill=np.empty) -> np.ndarray:
    """An array for transient use, made by `fill` the first time and then the same one for the
    same key: a stack's layers reuse memory already mapped instead of faulting in new pages."""
    if workspace is None:
        return fill(shape, dtype=dtype)
    key = (key, shape, np.dtype(dtype).str)
    if key not in workspace:
        workspace[key] = fill(shape, dtype=dtype)
    return workspace[key]


def _pad(x: np.ndarray, before: int, after: int, padding: str, workspace: dict | None = None) -> np.ndarray:
    """Pad the spatial axes of a channels-last array: wrapped around (circular) or zeros.
    Written into one array, axis by axis (np.pad does the same several times slower): a new
    one, or the workspace's for this geometry (zero padding then only writes the interior,
    its border being zeros from the start)."""
    if before == after == 0:
        return x
    dims = x.ndim - 2
    out = _buffer(workspace, ("pad", padding, before), (x.shape[0],) + tuple(n + before + after for n in x.shape[1:-1])
                  + (x.shape[-1],), x.dtype, np.empty if padding == "circular" else np.zeros)
    out[(slice(None),) + tuple(slice(before, before + n) for n in x.shape[1:-1])] = x
    if padding == "circular":
        for axis in range(1, dims + 1):  # axes padded so far already hold their wrap: corners come right
            n = x.shape[axis]

            lead = (slice(None),) * axis
            if before:  # the first `before` padded entries wrap from the input's end
                out[lead + (slice(0, before),)] = out[lead + (slice(n, n + before),)]
            if after:  # the last `after` from its start
                out[lead + (slice(before + n, before + n + after),)] = out[lead + (slice(before, before + after),)]
    return out


def _windows(xp: np.ndarray, kernel: int) -> np.ndarray:
    """Every window of the padded input as a strided view (B, *spatial, *k, C), made once per
    correlation: each batch chunk's im2col is then one copy of a slice of it."""
    dims = xp.ndim - 2
    windows = sliding_window_view(xp, (kernel,) * dims, axis=tuple(range(1, dims + 1)))  # (B, *S, C, *k)
    return np.moveaxis(windows, dims + 1, -1)


def _patches(windows: np.ndarray, start: int, out: np.ndarray) -> np.ndarray:
    """im2col of examples start… : out (b, *spatial, k^d, C) gets, at tap t, the padded input
    shifted by t, copied from the window view in one call (no loop over positions or taps)."""
    np.copyto(out.reshape((out.shape[0],) + windows.shape[1:]), windows[start:start + out.shape[0]])
    return out


def _chunk(batch_shape: tuple[int, ...], columns: int, itemsize: int) -> int:
    """Examples per im2col copy: as many as fit in _CHUNK_BYTES, at least one."""
    per_example = math.prod(batch_shape[1:-1]) * columns * itemsize
    return max(1, _CHUNK_BYTES // max(per_example, 1))


def _as_matrix(w: np.ndarray) -> np.ndarray:
    """A kernel (O, C, k, …) as the (O, k^d·C) matrix whose columns follow `_patches`' order."""
    return np.moveaxis(w, 1, -1).reshape(w.shape[0], -1)


def correlate(x: np.ndarray, w: np.ndarray, before: int, after: int, padding: str,
              workspace: dict | None = None) -> np.ndarray:
    """Stride-1 cross-correlation of a channels-last x (B, *S, C) with w (O, C, k, …),
    padded `before`/`after` on each spatial axis: (B, *S', O). One GEMM per batch chunk.
    `workspace` (a dict kept across calls) lends the padded copy and the im2col chunk."""
    kernel, taps = w.shape[2], math.prod(w.shape[2:])
    matrix = _as_matrix(w).T  # (k^d·C, O)
    xp = _pad(x, before, after, padding, workspace)
    out_spatial = tuple(n - kernel + 1 for n in xp.shape[1:-1])
    dtype = np.result_type(x, w)
    out = np.empty((x.shape[0],) + out_spatial + (w.shape[0],), dtype=dtype)
    step = min(x.shape[0], _chunk(out.shape, matrix.shape[0], dtype.itemsize))
    cols = _buffer(workspace, "cols", (step,) + out_spatial + (taps, x.shape[-1]), x.dtype)
    windows = _windows(xp, kernel)
    for start in range(0, x.shape[0], step):
        part = _patches(windows, start, cols[:x.shape[0] - start])
        np.matmul(part.reshape(-1, matrix.shape[0]), matrix, out=out[start:start + step].reshape(-1, matrix.shape[1]))
    return out


def weight_gradient(x: np.ndarray, delta: np.ndarray, w_shape: tuple[int, ...], before: int, after: int,
                    padding: str, workspace: dict | None = None) -> np.ndarray:
    """∂L/∂W = Σ_{examples, positions} δ ⊗ window(a): δᵀ·im2col(a), a chunk at a time."""
    out_channels, kernel, taps = w_shape[0], w_shape[2], math.prod(w_shape[2:])
    columns = taps * x.shape[-1]
    xp = _pad(x, before, after, padding, workspace)
    dtype = np.result_type(x, delta)
    grad = np.zeros((out_channels, columns), dtype=dtype)
    step = min(x.shape[0], _chunk(delta.shape, columns, dtype.itemsize))
    cols = _buffer(workspace, "cols", (step,) + delta.shape[1:-1] + (taps, x.shape[-1]), x.dtype)
    windows = _windows(xp, kernel)
    for start in range(0, x.shape[0], step):
        part = _patches(windows, start, cols[:x.shape[0] - start])
        grad += delta[start:start + step].reshape(-1, out_channels).T @ part.reshape(-1, columns)
    # back from the (O, k…, C) column order to torch's (O, C, k…)
    return np.moveaxis(grad.reshape((out_channels,) + tuple(w_shape[2:]) + (x.shape[-1],)), -1, 1).copy()


def input_gradient(delta: np.ndarray, w: np.ndarray, before: int, after: int, padding: str,
                   workspace: dict | None = None) -> np.ndarray:
    """∂L/∂a from δ = ∂L/∂h: y_i = Σ_t w_t·a_{i+t−before} gives ∂L/∂a_m = Σ_s w_{k−1−s}ᵀ·δ_{m+s−after},
    a correlation with the flipped, channel-transposed kernel, padded after/before (with
    wrap-around for circular padding, zeros outside for zero padding)."""
    flipped = np.flip(w, axis=tuple(range(2, w.ndim))).swapaxes(0, 1)
    return correlate(delta, flipped, after, before, padding, workspace)


def to_channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def to_channels_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


# -- the stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvStack:
    """Kernels in torch layout (C, C, k, …), biases (C,), the geometry and the skips."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    shape: ConvShape
    arch: Architecture = PLAIN

    @property
    def depth(self) -> int:
        return len(self.weights)


def build_conv_stack(init: Init, shape: ConvShape, depth: int, *, bias_std: float = 0.0, seed: int = 0,
                     dtype="float32", arch: Architecture = PLAIN) -> ConvStack:
    """Draw each layer's kernel with `init` (fans counting the kernel) and biases from
    N(0, bias_std²), from the seed's weights and biases streams as `engine.build_stack` does."""
    dtype = np.dtype(dtype)
    streams = seed_streams(seed)
    weights = tuple(init.sample(shape.weight_shape, streams["weights"], dtype) for _ in range(depth))
    biases = tuple((bias_std * gaussian(streams["biases"], (shape.channels,))).astype(dtype) for _ in range(depth))
    return ConvStack(weights, biases, shape, arch)


@dataclass
class ConvTrace:
    """The input and, per layer, its output a_l and φ'(h_l), channels-last."""

    x: np.ndarray
    acts: list[np.ndarray] = field(default_factory=list)
    derivs: list[np.ndarray] = field(default_factory=list)


ConvObserver = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def forward(stack: ConvStack, act: Activation, x: np.ndarray, observe: ConvObserver | None = None) -> ConvTrace:
    """Run a channels-last x through the stack; observe(layer, h, φ(h), a_l, φ'(h)) sees each layer."""
    before, after = stack.shape.pads
    arch = stack.arch
    trace = ConvTrace(x)
    a = block_input = x
    workspace = {}
    for index, (w, b) in enumerate(zip(stack.weights, stack.biases), start=1):
        if arch.opens_block(index):
            block_input = a
        h = correlate(a, w, before, after, stack.shape.padding, workspace)
        if b.any():
            h += b
        branch, deriv = act.apply(h)
        if branch is h:  # the identity returns its input; h is observed apart from the branch
            branch = h.copy()
        if not all_finite(h):  # past an overflow relu'(nan) = 0 would report a clean zero
            deriv = np.where(np.isnan(h), np.nan, deriv).astype(deriv.dtype)
        output = block_input + branch * branch.dtype.type(arch.residual_scale) if arch.closes_block(index) else branch
        if observe is not None:
            observe(index, h, branch, output, deriv)
        del h
        trace.acts.append(output)
        trace.derivs.append(deriv)
        a = output
    return trace


def backward(stack: ConvStack, trace: ConvTrace, cotangent: np.ndarray,
             observe: Callable[[int, np.ndarray, np.ndarray], None] | None = None, *,
             keep_grads: bool = True, input_grad: bool = False):
    """Backpropagate ∂L/∂a_L = cotangent (channels-last). observe(layer, δ_l, ∂L/∂W_l) top
    down. Returns ([(∂L/∂W_l, ∂L/∂b_l)] bottom up or None, ∂L/∂x or None)."""
    before, after = stack.shape.pads
    padding, arch = stack.shape.padding, stack.arch
    grads = [] if keep_grads else None
    grad, skip_grad = cotangent, None
    workspace = {}
    for index in range(stack.depth, 0, -1):
        w, deriv = stack.weights[index - 1], trace.derivs[index - 1]
        if arch.closes_block(index):
            skip_grad = grad
            delta = grad * deriv
            delta *= delta.dtype.type(arch.residual_scale)
        else:
            delta = grad * deriv
        a_below = trace.x if index == 1 else trace.acts[index - 2]
        weight_grad = weight_gradient(a_below, delta, w.shape, before, after, padding, workspace)
        if observe is not None:
            observe(index, delta, weight_grad)
        if grads is not None:
            grads.append((weight_grad, delta.sum(axis=tuple(range(delta.ndim - 1)))))
        del weight_grad
        if index == 1 and not input_grad:
            grad = None
            break
        grad = input_gradient(delta, w, before, after, padding, workspace)
        if arch.opens_block(index):
            grad += skip_grad
            skip_grad = None
    return (grads[::-1] if grads is not None else None), grad


def measure(stack: ConvStack, act: Activation, x: np.ndarray, cotangent: np.ndarray, *,
            progress: Callable[[int], None] | None = None):
    """Forward x, backpropagate the cotangent (both channels-last) and measure every layer:
    moments over batch, positions and channels; dead_frac over the (position, channel) units;
    effective_rank and input_cosine over each example's flattened activations. Returns
    (layers, first layer whose pre-activations overflowed, first from the top whose gradient did)."""
    from .propagation import LayerRecorder

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
    im2col = min(_CHUNK_BYTES, batch * shape.positions * shape.fan * itemsize) + shape.positions * shape.fan * itemsize
    transient = 5 * volume * itemsize + volume * 8 + im2col + shape.channels * shape.fan * itemsize
    return kept + transient + _WORKSPACE


@dataclass(frozen=True)
class ConvRun:
    """A conv propagate call with every argument checked."""

    init: Init
    act: Activation
    shape: ConvShape
    depth: int
    batch: int
    bias_std: float
    input_std: float
    dtype: np.dtype
    seed: int
    theory: bool
    arch: Architecture

    @property
    def params(self) -> dict:
        return {**self.init.params(), **self.shape.params(), "depth": self.depth, "batch": self.batch,
                "bias_std": self.bias_std, "input_std": self.input_std, "dtype": self.dtype.name, "seed": self.seed,
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
    if isinstance(scheme, Init):
        init = scheme
        act = get_activation(init.activation, init.negative_slope)
    else:
        init = make_init(scheme, activation=activation, **init_options)
        act = get_activation(activation, init_options.get("negative_slope", DEFAULT_NEGATIVE_SLOPE))
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
    return ConvRun(init, act, shape, depth, batch, bias_std, input_std, np_dtype, seed, bool(theory), arch)


# Products up to this many multiply-adds run on one BLAS thread, as in `propagation`. A conv
# layer's products are made one im2col chunk at a time, so the product that counts is a
# chunk's: at the defaults 7 examples (4.1e6 multiply-adds), where a second thread made a
# 20-layer run 15 times slower on a busy two-core machine (40 s against 2.6 s).
SINGLE_THREAD_WORK = 1 << 25


def work(run: ConvRun) -> int:
    """Multiply-adds of the largest single product: one im2col chunk (examples × positions
    rows of C·k^d columns) times the C kernels."""
    shape = run.shape
    examples = min(run.batch, _chunk((run.batch,) + shape.spatial + (shape.channels,), shape.fan,
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
    from dataclasses import replace

    with thread_policy(work(run), SINGLE_THREAD_WORK):
        stack, x, cotangent = inputs(run)
        layers, forward_overflow, backward_overflow = measure(stack, run.act, x, cotangent, progress=progress)
    result = Result(run.params, layers, forward_overflow, backward_overflow)
    if not run.theory:
        return result
    return replace(result, theory=theory_columns(run, layers))


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
    im2col = min(_CHUNK_BYTES, inputs * n * shape.positions * shape.fan * 8) + shape.positions * shape.fan * 8
    svd = 4 * n * n * 8 + 8 * n * 8
    kept = depth * inputs * n * 8 if spectrum else 0
    return weights + batch * n * itemsize + tangents + padded + im2col + svd + kept + _WORKSPACE


def prepare_jacobian(scheme: str | Init = "he-normal", activation: str = "relu", *, inputs: int | None = None,
                     spectrum: bool = False, **options):
    """Check every argument of `jacobian --arch conv` (options: `prepare`'s; channels default
    to 8 and spatial to 8×8 here, see JACOBIAN_CHANNELS) and refuse, before allocating, an
    input wider than jacobian.MAX_JACOBIAN_WIDTH (C·positions values) or a run that does not
    fit in memory. `inputs` defaults to min(8, batch)."""
    from .jacobian import MAX_JACOBIAN_WIDTH, JacobianRun, check_inputs

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
    from .jacobian import JacobianResult

    with blas_threads_limited(1):
        stack, x = _stack_and_inputs(plan.run)
        layers, values = jacobian_spectrum(stack, plan.run.act, x[:plan.inputs], spectrum=plan.spectrum,
                                           progress=progress)
    return JacobianResult(plan.params, layers, values)


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
    from .jacobian import singular_values, spectrum_stats

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
