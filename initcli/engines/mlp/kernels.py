"""The MLP engine's kernels: Linear → [LayerNorm] → activation layers, optionally in
residual blocks, with the statistics observed on the way.

Notation of THEORY.md: h_l = a_{l−1} W_lᵀ + b_l (W_l in PyTorch's (out, in) layout),
ñ_l = LN(h_l) with `norm="layer"` (ñ_l = h_l otherwise), and the branch φ(ñ_l). A plain
layer outputs a_l = φ(ñ_l); with residual scale α, the last layer of each block of `block`
layers outputs a_l = a_in + α·φ(ñ_l), a_in being the block's input; a residual-init preset
may also scale the skip and normalise the sum (DeepNorm: a_l = LN(s·a_in + α·φ(ñ_l))) and
scale the weights of each branch layer as they are drawn. The loss is
L = Σ g ⊙ a_L for a cotangent g, so gradients are per-example gradients summed over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ...activations import Activation
from ...errors import InitcliError
from ...residual_init import ResidualInit, resolve_residual_init
from ...schemes import Init, gaussian
from ...stats import all_finite
from ..shared import LAYER_NORM_EPS, STREAMS, layer_norm, layer_norm_backward, seed_streams  # noqa: F401  (importable from here, as before)
from . import MEMORY_OPTIONS, SINGLE_THREAD_WORK  # noqa: F401  (importable from here, as before)

NORMS = ("none", "layer")


@dataclass(frozen=True)
class Architecture:
    """How layers connect: residual blocks of `block` layers scaled by `residual_scale`
    (None: no skip connections), and an optional LayerNorm before each activation.
    `residual_init`, a resolved preset, adds a skip multiplier, a LayerNorm on the stream
    after each block's sum, and factors on the branch weights (see `residual_init.ResidualInit`)."""

    residual_scale: float | None = None
    block: int = 1
    norm: str | None = None
    residual_init: ResidualInit | None = None

    def __post_init__(self) -> None:
        if self.residual_scale is not None and not math.isfinite(self.residual_scale):
            raise InitcliError("residual_scale", f"must be a finite number, got {self.residual_scale!r}")
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise InitcliError("block", f"must be a positive integer, got {self.block!r}")
        if self.norm not in (None, "layer"):
            raise InitcliError("norm", f"unknown norm '{self.norm}'; choose from {', '.join(NORMS)}")

    @property
    def residual(self) -> bool:
        return self.residual_scale is not None

    @property
    def skip_scale(self) -> float:
        return 1.0 if self.residual_init is None else self.residual_init.skip_scale

    @property
    def post_norm(self) -> bool:
        return self.residual_init is not None and self.residual_init.post_norm

    def weight_scale(self, index: int) -> float:
        """The preset's factor on layer `index`'s (1-based) sampled weights: 1 without one."""
        if self.residual_init is None or not self.residual:
            return 1.0
        return self.residual_init.weight_scales[(index - 1) % self.block]

    def opens_block(self, index: int) -> bool:
        return self.residual and (index - 1) % self.block == 0

    def closes_block(self, index: int) -> bool:
        return self.residual and index % self.block == 0

    def check_sizes(self, sizes: Sequence[int]) -> None:
        if not self.residual:
            return
        if len(set(sizes)) != 1:
            raise InitcliError("residual", f"needs layers of one width for its skip connections, got sizes "
                                           f"{','.join(map(str, sizes))}")
        depth = len(sizes) - 1
        if depth % self.block:
            raise InitcliError("block", f"{depth} layers do not split into blocks of {self.block}")
        if self.residual_init is not None and depth // self.block != self.residual_init.blocks:
            raise InitcliError("residual_init", f"was resolved for {self.residual_init.blocks} blocks, but the "
                                                f"stack has {depth // self.block}")

    def params(self) -> dict:
        params = {"residual_scale": self.residual_scale, "block": self.block, "norm": self.norm or "none"}
        if self.residual_init is not None:
            params |= self.residual_init.params()
        return params


PLAIN = Architecture()


def make_architecture(residual: bool = False, residual_scale: float = 1.0, block: int = 1,
                      norm: str | None = None, residual_init: str | None = None,
                      depth: int | None = None) -> Architecture:
    """The architecture of the options. A `residual_init` preset needs `depth` (the layers of
    the residual stack) to count its blocks, and sets the branch multiplier itself."""
    norm = None if norm is None or str(norm).strip().lower() == "none" else str(norm).strip().lower()
    if not residual and block != 1:
        raise InitcliError("block", "only applies with --residual")
    if residual_init is None or str(residual_init).strip().lower() == "none":
        return Architecture(float(residual_scale) if residual else None, block, norm)
    from ...residual_init import get_residual_preset

    preset = get_residual_preset(residual_init)
    if not residual:
        raise InitcliError("residual_init", "only applies with --residual")
    if residual_scale != 1.0:
        raise InitcliError("residual_scale", f"does not apply with --residual-init {preset.name}, which sets the "
                                             f"branch multiplier itself")
    if preset.refuses_layer_norm and norm == "layer":
        raise InitcliError("norm", f"layer puts a LayerNorm after every Linear, which would undo the weight "
                                   f"factors of --residual-init {preset.name}; use --norm none")
    arch = Architecture(1.0, block, norm)  # checks block
    if depth is None:
        raise InitcliError("depth", "a residual-init preset needs the stack's depth to count its blocks")
    if depth % block:
        raise InitcliError("block", f"{depth} layers do not split into blocks of {block}")
    constants = resolve_residual_init(preset.name, depth // block, block)
    return replace(arch, residual_scale=constants.residual_scale, residual_init=constants)


@dataclass(frozen=True)
class Stack:
    """Weights in torch layout (out, in), biases, and how the layers connect."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    arch: Architecture = PLAIN
    # per-layer output multipliers m_l of a parametrization (h_l = m_l·a W_lᵀ + b_l, Yang & Hu
    # 2021's n^−a); None: all 1, and no extra arithmetic, so such runs keep their bytes
    multipliers: tuple[float, ...] | None = None

    def multiplier(self, index: int) -> float:
        """Layer `index`'s (1-based) output multiplier."""
        return 1.0 if self.multipliers is None else self.multipliers[index - 1]

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    @property
    def depth(self) -> int:
        return len(self.weights)


def build_stack(init: Init, sizes: Sequence[int], *, bias_std: float = 0.0, seed: int = 0, dtype="float32",
                arch: Architecture = PLAIN) -> Stack:
    """Sample every layer's weights with `init` and biases from N(0, bias_std²).

    Weights and biases come from their own streams of the seed (see `seed_streams`), so a
    deeper stack with the same seed starts with the same layers.
    """
    arch.check_sizes(sizes)
    dtype = np.dtype(dtype)
    streams = seed_streams(seed)
    weights = tuple(init.sample((n_out, n_in), streams["weights"], dtype) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    biases = tuple((bias_std * gaussian(streams["biases"], (n_out,))).astype(dtype) for n_out in sizes[1:])
    return Stack(*scale_branches(weights, biases, arch), arch)


def scale_branches(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
                   arch: Architecture) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The weights with a residual-init preset's factors applied (and Fixup's biases at 0);
    as given without a preset. The draws are the scheme's, so a preset changes no stream."""
    if arch.residual_init is None or not arch.residual:
        return tuple(weights), tuple(biases)
    scaled = tuple(w if arch.weight_scale(i) == 1.0 else w * w.dtype.type(arch.weight_scale(i))
                   for i, w in enumerate(weights, start=1))
    if arch.residual_init.zero_biases:
        biases = tuple(np.zeros_like(b) for b in biases)
    return scaled, tuple(biases)


def apply_parametrization(stack: Stack, std_factors: Sequence[float] | None,
                          multipliers: Sequence[float] | None) -> Stack:
    """The stack with each layer's stored weights scaled by its std factor and its output
    multiplier set: a parametrization (`initcli.parametrization`) over the scheme's draws,
    which stay the scheme's, so no stream changes. Factors of 1 leave the arrays as they are."""
    weights = stack.weights
    if std_factors is not None:
        weights = tuple(w if f == 1.0 else w * w.dtype.type(f) for w, f in zip(weights, std_factors))
    multipliers = None if multipliers is None or all(m == 1.0 for m in multipliers) else tuple(multipliers)
    return replace(stack, weights=weights, multipliers=multipliers)


def fold_multipliers(stack: Stack) -> Stack:
    """The same function with each multiplier folded into its weights (W = m·w): what a
    diagnosis of the network at init (propagate, the Jacobian) looks at."""
    if stack.multipliers is None:
        return stack
    weights = tuple(w if m == 1.0 else w * w.dtype.type(m) for w, m in zip(stack.weights, stack.multipliers))
    return replace(stack, weights=weights, multipliers=None)


# -- one layer ------------------------------------------------------------------------------


@dataclass
class LayerState:
    """What the backward pass needs of one layer."""

    act: np.ndarray  # the layer's output a_l: the next layer's input
    deriv: np.ndarray  # φ'(ñ_l)
    normed: np.ndarray | None = None  # ñ_l, with layer norm
    inv_std: np.ndarray | None = None  # 1/√(Var_units(h_l) + ε) per input, with layer norm
    post_inv_std: np.ndarray | None = None  # 1/√(Var_units(sum) + ε) of a post-LN block's sum (act = LN(sum))


class Scratch:
    """Reusable work arrays, one per (role, shape, dtype): a deep stack then allocates its
    transient pre-activations, δ and ∂L/∂W once instead of once per layer."""

    def __init__(self) -> None:
        self._arrays: dict[tuple, np.ndarray] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        key = (role, shape, np.dtype(dtype))
        if key not in self._arrays:
            self._arrays[key] = np.empty(shape, dtype=dtype)
        return self._arrays[key]


def layer_forward(stack: Stack, activation: Activation, index: int, a_prev: np.ndarray,
                  block_input: np.ndarray | None, scratch: Scratch | None = None):
    """Layer `index` (1-based): (h, φ(ñ), LayerState). With `scratch`, h lives in a reused
    work array, valid until the next call."""
    w, b, arch = stack.weights[index - 1], stack.biases[index - 1], stack.arch
    out = None if scratch is None else scratch.get("preact", (a_prev.shape[0], w.shape[0]), np.result_type(a_prev, w))
    h = np.matmul(a_prev, w.T, out=out)
    if stack.multiplier(index) != 1.0:
        h *= h.dtype.type(stack.multiplier(index))
    if b.any():
        h += b
    normed, inv_std = layer_norm(h) if arch.norm == "layer" else (h, None)
    branch, deriv = activation.apply(normed)
    if branch is h:  # the identity activation returns its input, which lives in the reused work array
        branch = h.copy()
    if not all_finite(h):
        # past an overflow the gradient means nothing: keep nan in it rather than let
        # relu'(nan) = 0 report a clean zero
        deriv = np.where(np.isnan(normed), np.nan, deriv).astype(deriv.dtype)
    post_inv_std = None
    if arch.closes_block(index):
        skip = block_input if arch.skip_scale == 1.0 else block_input * block_input.dtype.type(arch.skip_scale)
        output = skip + branch * branch.dtype.type(arch.residual_scale)
        if arch.post_norm:  # DeepNorm: x_{l+1} = LN(α·x_l + f(x_l))
            output, post_inv_std = layer_norm(output)
    else:
        output = branch
    state = LayerState(output, deriv, normed if arch.norm == "layer" else None, inv_std, post_inv_std)
    return h, branch, state


def close_block_jacobian(arch: Architecture, state: LayerState, block_jac: np.ndarray,
                         branch_jac: np.ndarray) -> np.ndarray:
    """The Jacobian of a block's output, s·J_in + α·J_φ, taken through the post-LN of a
    DeepNorm block: s'·(J − mean_units(J) − ỹ·(ỹᵀJ)/n) with ỹ the normalised sum. Layout
    (units, inputs, n_0), as `initcli.jacobian` carries it; `state` is the closing layer's."""
    if arch.skip_scale == 1.0:
        jac = block_jac + arch.residual_scale * branch_jac
    else:
        jac = arch.skip_scale * block_jac + arch.residual_scale * branch_jac
    if arch.post_norm:
        normed = state.act.astype(np.float64)  # (inputs, units)
        jac = jac - jac.mean(axis=0, keepdims=True)
        projection = np.einsum("iu,uij->ij", normed, jac) / normed.shape[1]
        jac -= normed.T[:, :, None] * projection[None, :, :]
        jac *= state.post_inv_std[:, 0].astype(np.float64)[None, :, None]
    return jac


# -- forward and backward -------------------------------------------------------------------

ForwardObserver = Callable[[int, np.ndarray, np.ndarray, LayerState], None]
BackwardObserver = Callable[[int, np.ndarray, np.ndarray], None]


@dataclass
class Trace:
    """The forward pass's input and every layer's state."""

    x: np.ndarray
    states: list[LayerState] = field(default_factory=list)


def forward(stack: Stack, activation: Activation, x: np.ndarray, observe: ForwardObserver | None = None,
            *, first: int = 1, last: int | None = None, scratch: Scratch | None = None, keep: bool = True) -> Trace:
    """Run x through layers first…last (all by default). `observe(layer, h, φ(ñ), state)`
    sees each layer; h is only valid during the call. With `keep` false the trace holds only
    the last layer's state: what a forward pass costs in memory when nothing goes back."""
    last = stack.depth if last is None else last
    scratch = scratch or Scratch()
    trace = Trace(x)
    a = block_input = x
    for index in range(first, last + 1):
        if stack.arch.opens_block(index):
            block_input = a
        h, branch, state = layer_forward(stack, activation, index, a, block_input, scratch)
        if observe is not None:
            observe(index, h, branch, state)
        del h, branch
        if keep or index == last:
            trace.states.append(state)
        a = state.act
    return trace


def _backward_range(stack: Stack, trace: Trace, first: int, grad: np.ndarray, observe: BackwardObserver | None,
                    grads: list | None, scratch: Scratch | None, *, input_grad: bool = False) -> np.ndarray | None:
    """Backpropagate ∂L/∂a_last = grad through the trace's layers (first…first+len−1), top
    down. Returns ∂L/∂a_{first−1}; at first = 1 that is ∂L/∂x, computed only with `input_grad`."""
    arch = stack.arch
    last = first + len(trace.states) - 1
    skip_grad = None
    for index in range(last, first - 1, -1):
        state = trace.states[index - first]
        w = stack.weights[index - 1]
        if arch.closes_block(index):
            if arch.post_norm:  # back through LN(s·a_in + α·φ(ñ)): act is the normalised sum
                grad = layer_norm_backward(grad, state.act, state.post_inv_std)
            skip_grad = grad if scratch is None else grad.copy()
            if arch.skip_scale != 1.0:
                skip_grad = skip_grad * skip_grad.dtype.type(arch.skip_scale)
            delta = grad * state.deriv
            delta *= delta.dtype.type(arch.residual_scale)
        elif scratch is None:
            delta = grad * state.deriv
        else:
            delta = np.multiply(grad, state.deriv, out=scratch.get("delta", grad.shape, grad.dtype))
        if arch.norm == "layer":
            delta = layer_norm_backward(delta, state.normed, state.inv_std)
        a_below = trace.x if index == first else trace.states[index - first - 1].act
        out = None if scratch is None else scratch.get("weight_grad", w.shape, np.result_type(delta, a_below))
        weight_grad = np.matmul(delta.T, a_below, out=out)
        multiplier = stack.multiplier(index)
        if multiplier != 1.0:  # h = m·a Wᵀ: ∂L/∂W = m·δᵀa, ∂L/∂a = m·δW
            weight_grad *= weight_grad.dtype.type(multiplier)
        if observe is not None:
            observe(index, delta, weight_grad)
        if grads is not None:
            grads.append((weight_grad, delta.sum(axis=0)))
        del weight_grad
        if index == 1 and not input_grad:
            return None
        # ∂L/∂a_{index−1} ping-pongs between two work arrays
        role = "grad_a" if scratch is None or grad is not scratch.get("grad_a", grad.shape, grad.dtype) else "grad_b"
        out = None if scratch is None else scratch.get(role, (delta.shape[0], w.shape[1]), np.result_type(delta, w))
        grad = np.matmul(delta, w, out=out)
        if multiplier != 1.0:
            grad *= grad.dtype.type(multiplier)
        if arch.opens_block(index):
            grad += skip_grad
            skip_grad = None
    return grad


def backward(stack: Stack, trace: Trace, cotangent: np.ndarray, observe: BackwardObserver | None = None,
             *, keep_grads: bool = True) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Backpropagate ∂L/∂a_L = cotangent through a whole-stack trace. Returns
    [(∂L/∂W_l, ∂L/∂b_l)] for l = 1…L, or None when `keep_grads` is false (then each ∂L/∂W_l
    lives only while `observe(layer, δ_l = ∂L/∂h_l, ∂L/∂W_l)` looks at it, top down)."""
    grads: list | None = [] if keep_grads else None
    _backward_range(stack, trace, 1, cotangent, observe, grads, None if keep_grads else Scratch())
    return grads[::-1] if grads is not None else None


def vjp(stack: Stack, trace: Trace, cotangent: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """`backward` that also returns ∂L/∂x, for a stack that feeds on another's output."""
    grads: list = []
    input_grad = _backward_range(stack, trace, 1, cotangent, None, grads, None, input_grad=True)
    return grads[::-1], input_grad


def checkpointed(stack: Stack, activation: Activation, x: np.ndarray, cotangent: np.ndarray,
                 forward_observe: ForwardObserver | None = None,
                 backward_observe: BackwardObserver | None = None) -> None:
    """Forward and backward keeping activations only at segment starts, about every √L
    layers (Chen et al. 2016, Training Deep Nets with Sublinear Memory Cost): each segment is
    recomputed from its first activation when the backward pass reaches it. O(√L)
    activations in memory instead of O(L), one more forward pass of time, and the same
    numbers: the recomputation runs the same products on the same inputs. Segments are whole
    residual blocks, so a block's skip input is always at hand."""
    depth, block = stack.depth, stack.arch.block if stack.arch.residual else 1
    blocks = depth // block
    segment = block * (math.isqrt(max(blocks - 1, 0)) + 1)
    starts = list(range(0, depth, segment))
    scratch = Scratch()
    checkpoints = {0: x}

    def keep_checkpoints(index, h, branch, state):
        if forward_observe is not None:
            forward_observe(index, h, branch, state)
        if index in starts:
            checkpoints[index] = state.act

    forward(stack, activation, x, keep_checkpoints, scratch=scratch, keep=False)
    grad = cotangent
    for start in reversed(starts):
        end = min(start + segment, depth)
        trace = forward(stack, activation, checkpoints.pop(start), first=start + 1, last=end, scratch=scratch)
        grad = _backward_range(stack, trace, start + 1, grad, backward_observe, None, scratch)
        del trace
