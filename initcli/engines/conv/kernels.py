"""The conv engine's kernels: convolution stacks, forward and backward.

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

from ...activations import Activation
from ...checks import positive_int
from ...engine import PLAIN, Architecture
from ...errors import InitcliError
from ...schemes import Init, gaussian
from ...stats import all_finite
from ..shared import seed_streams
from . import MEMORY_OPTIONS, REFUSED_KINDS  # noqa: F401  (importable from here, as before)

PADDINGS = ("circular", "zero")
MAX_SPATIAL_DIMS = 3
DEFAULT_CHANNELS = 16
DEFAULT_SPATIAL = (16, 16)
DEFAULT_KERNEL = 3
# im2col copies at most this much of the batch at a time: small enough to stay in a core's L2
# cache (the copy then costs ~half of a 16 MiB chunk's on a 4 MiB-L2 Xeon), large enough for
# an efficient GEMM (thousands of rows)
CHUNK_BYTES = 1 << 20


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


def chunk_examples(batch_shape: tuple[int, ...], columns: int, itemsize: int) -> int:
    """Examples per im2col copy: as many as fit in CHUNK_BYTES, at least one."""
    per_example = math.prod(batch_shape[1:-1]) * columns * itemsize
    return max(1, CHUNK_BYTES // max(per_example, 1))


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
    step = min(x.shape[0], chunk_examples(out.shape, matrix.shape[0], dtype.itemsize))
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
    step = min(x.shape[0], chunk_examples(delta.shape, columns, dtype.itemsize))
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


