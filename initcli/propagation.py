"""The deep-stack engine: forward through Linear→activation layers, backward, statistics.

Notation of THEORY.md: h_l = a_{l-1} W_lᵀ + b_l (W_l stored in PyTorch's (out, in) layout),
a_l = φ(h_l), a_0 = x. The loss is L = Σ g ⊙ a_L with a unit-Gaussian cotangent g, so
δ_L = g ⊙ φ'(h_L), δ_l = (δ_{l+1} W_{l+1}) ⊙ φ'(h_l) and ∂L/∂W_l = δ_lᵀ a_{l-1}: per-example
gradients summed over the batch, whose variance follows Var(δ_l) = Var(δ_{l+1})·σ'_w²·E[φ'²].
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .activations import Activation, get_activation
from .errors import InitcliError
from .schemes import Init, gaussian, make_init
from .stats import _BLOCK as _STAT_BLOCK
from .stats import RANK_INPUTS, all_finite, dead_fraction, effective_rank, mean_input_cosine, moments
from .theory import THEORY_COLUMNS, TheoryColumns, beside

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class LayerStats:
    """What one layer measured. Column names of `initcli propagate`, in its order."""

    layer: int
    fan_in: int
    fan_out: int
    weight_std: float
    preact_mean: float
    preact_var: float
    act_mean: float
    act_var: float
    grad_var: float
    weight_grad_var: float
    saturated_frac: float
    dead_frac: float
    effective_rank: float
    input_cosine: float


LAYER_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LayerStats))


@dataclass(frozen=True)
class PropagateResult:
    """A propagate run: its parameters (enough to reproduce it) and one record per layer.

    `forward_overflow_layer` is the first layer whose pre-activations held inf/nan;
    `backward_overflow_layer` the first layer, counting down from the top, whose gradient
    did. None where everything stayed finite.
    """

    params: dict
    layers: tuple[LayerStats, ...]
    forward_overflow_layer: int | None = None
    backward_overflow_layer: int | None = None
    theory: tuple[TheoryColumns, ...] | None = None  # None when asked for no theory

    @property
    def columns(self) -> tuple[str, ...]:
        return LAYER_COLUMNS + (THEORY_COLUMNS if self.theory is not None else ())

    def rows(self) -> list[dict]:
        if self.theory is None:
            return [asdict(layer) for layer in self.layers]
        return [asdict(layer) | asdict(extra) for layer, extra in zip(self.layers, self.theory)]

    @property
    def overflowed(self) -> bool:
        return self.forward_overflow_layer is not None or self.backward_overflow_layer is not None


# -- input checks shared by every command that builds a stack ------------------------------


def _positive_int(param: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InitcliError(param, f"must be a positive integer, got {value!r}")
    return int(value)


def stack_sizes(sizes: Sequence[int] | None = None, depth: int | None = None, width: int | None = None,
                *, default_depth: int = 10, default_width: int = 256) -> tuple[int, ...]:
    """Layer sizes [n_0, n_1, …, n_L]: `sizes` as given, or depth+1 copies of width."""
    if sizes is not None:
        if depth is not None or width is not None:
            raise InitcliError("sizes", "give either --sizes or --depth/--width, not both")
        sizes = tuple(_positive_int("sizes", s) for s in sizes)
        if len(sizes) < 2:
            raise InitcliError("sizes", f"needs at least two sizes (input and one layer), got {list(sizes)}")
        return sizes
    depth = _positive_int("depth", default_depth if depth is None else depth)
    width = _positive_int("width", default_width if width is None else width)
    return (width,) * (depth + 1)


def check_dtype(dtype: str) -> np.dtype:
    name = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype.strip().lower()
    if name not in DTYPES:
        raise InitcliError("dtype", f"unknown dtype '{dtype}'; choose from {', '.join(DTYPES)}")
    return np.dtype(name)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InitcliError("seed", f"must be an integer ≥ 0, got {seed!r}")
    return int(seed)


def check_std(param: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InitcliError(param, f"must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise InitcliError(param, f"must be a finite number ≥ 0, got {value!r}")
    return number


# -- memory guard ---------------------------------------------------------------------------


_WORKSPACE = 4 << 20  # blockwise float64 work (GELU, statistics) and small arrays


def estimate_bytes(sizes: Sequence[int], batch: int, dtype: np.dtype, *, checkpoint: bool = False) -> int:
    """Peak memory of a propagate run, computed before anything is allocated.

    Kept through the run: every layer's weights, the inputs, each layer's activations and
    φ'(h), and the cotangent; with `checkpoint`, activations only every ⌈√L⌉ layers plus one
    segment's activations and φ'(h). On top of that, the larger of one layer's transients:
    forward, its pre-activations, a float64 copy of its activations (the exact fallback of
    the statistics), their Gram matrix and a boolean mask; backward, two δ arrays and ∂L/∂W.
    Before the run, sampling holds the weights drawn so far and the draws of one matrix.
    """
    itemsize = np.dtype(dtype).itemsize
    pairs = list(zip(sizes[:-1], sizes[1:]))
    weights = sum(n_in * n_out for n_in, n_out in pairs) * itemsize
    build_peak = weights + max(n_in * n_out for n_in, n_out in pairs) * 8
    if checkpoint:
        depth = len(pairs)
        segment = math.isqrt(depth - 1) + 1 if depth > 1 else 1
        widest = max(sizes[1:])
        kept_acts = (len(range(0, depth, segment)) + 2 * segment) * widest
    else:
        kept_acts = 2 * sum(sizes[1:])
    kept = weights + batch * (sizes[0] + kept_acts + sizes[-1]) * itemsize
    transient = max(
        max(batch * n_out * (itemsize + 8 + 2) + min(batch, n_out, RANK_INPUTS) ** 2 * 8,
            2 * batch * max(n_in, n_out) * itemsize + n_in * n_out * itemsize + _STAT_BLOCK * 8)
        for n_in, n_out in pairs
    )
    return max(build_peak, kept + transient) + _WORKSPACE


def available_bytes() -> int | None:
    """Memory the run may use: MemAvailable from /proc/meminfo, where there is one."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, available: int | None = None, *, dtype: np.dtype | None = None) -> None:
    """Refuse, before allocating, a run that would not fit in 90% of available memory."""
    available = available_bytes() if available is None else available
    if available is not None and needed > 0.9 * available:
        raise InitcliError(
            None,
            f"this run needs about {needed / 2**30:.1f} GiB of memory but {available / 2**30:.1f} GiB "
            "are available; lower --batch, --width, --depth or --sizes"
            + (" (or use --dtype float32)" if dtype is not None and np.dtype(dtype).itemsize > 4 else ""),
        )


# -- the engine -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """Weights in torch layout (out, in) and biases, one per layer."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)


def build_stack(init: Init, sizes: Sequence[int], *, bias_std: float = 0.0, seed: int = 0,
                dtype="float32") -> Stack:
    """Sample every layer's weights with `init` and biases from N(0, bias_std²).

    Weights and biases come from their own streams of the seed (see `seed_streams`), so a
    deeper stack with the same seed starts with the same layers.
    """
    dtype = check_dtype(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    streams = seed_streams(seed)
    weights = tuple(init.sample((n_out, n_in), streams["weights"], dtype)
                    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=False))
    biases = tuple((bias_std * gaussian(streams["biases"], (n_out,))).astype(dtype) for n_out in sizes[1:])
    return Stack(weights, biases)


def seed_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators for weights, biases, inputs and the cotangent, from one seed."""
    children = np.random.SeedSequence(check_seed(seed)).spawn(4)
    return {name: np.random.default_rng(child)
            for name, child in zip(("weights", "biases", "inputs", "cotangent"), children, strict=False)}


ForwardObserver = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]
BackwardObserver = Callable[[int, np.ndarray, np.ndarray], None]


@dataclass
class Trace:
    """What the forward pass keeps for the backward one: a_0…a_L and φ'(h_1)…φ'(h_L)."""

    acts: list[np.ndarray]
    derivs: list[np.ndarray]


class _Scratch:
    """Reusable work arrays, one per (shape, dtype, role): a deep stack then allocates its
    transient pre-activations, δ and ∂L/∂W once instead of once per layer."""

    def __init__(self) -> None:
        self._arrays: dict[tuple, np.ndarray] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        key = (role, shape, np.dtype(dtype))
        if key not in self._arrays:
            self._arrays[key] = np.empty(shape, dtype=dtype)
        return self._arrays[key]


def layer_forward(activation: Activation, a: np.ndarray, w: np.ndarray, b: np.ndarray,
                  scratch: _Scratch | None = None):
    """One Linear→activation layer: (h, φ(h), φ'(h)). With `scratch`, h lives in a reused
    work array: valid until the next call."""
    out = None if scratch is None else scratch.get("preact", (a.shape[0], w.shape[0]), np.result_type(a, w))
    h = np.matmul(a, w.T, out=out)
    if b.any():
        h += b
    act = activation.fn(h)
    deriv = activation.derivative(h, act)
    if not all_finite(h):
        # past an overflow the gradient means nothing: keep nan in it rather than let
        # relu'(nan) = 0 report a clean zero
        deriv = np.where(np.isnan(h), np.nan, deriv).astype(deriv.dtype)
    return h, act, deriv


def forward(stack: Stack, activation: Activation, x: np.ndarray,
            observe: ForwardObserver | None = None) -> Trace:
    """Run x through the stack. `observe(layer, preact, act, deriv)` sees each layer (1-based)."""
    trace = Trace([x], [])
    a = x
    scratch = _Scratch()
    for index, (w, b) in enumerate(zip(stack.weights, stack.biases), start=1):
        h, a, deriv = layer_forward(activation, a, w, b, scratch)
        if observe is not None:
            observe(index, h, a, deriv)
        del h
        trace.acts.append(a)
        trace.derivs.append(deriv)
    return trace


def backward(stack: Stack, trace: Trace, cotangent: np.ndarray, observe: BackwardObserver | None = None,
             *, keep_grads: bool = True) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Backpropagate ∂L/∂a_L = cotangent. Returns [(∂L/∂W_l, ∂L/∂b_l)] for l = 1…L, or None
    when `keep_grads` is false (then each ∂L/∂W_l lives only while `observe` looks at it).

    `observe(layer, delta, weight_grad)` sees each layer from the top down.
    """
    grads: list[tuple[np.ndarray, np.ndarray]] = []
    scratch = None if keep_grads else _Scratch()
    delta = cotangent * trace.derivs[-1]
    for index in range(len(stack.weights), 0, -1):
        delta = _backward_layer(stack, trace.acts[index - 1], trace.derivs[index - 2] if index > 1 else None,
                                delta, index, observe, grads if keep_grads else None, scratch)
    return grads[::-1] if keep_grads else None


def _backward_layer(stack: Stack, a_below: np.ndarray, deriv_below: np.ndarray | None, delta: np.ndarray,
                    index: int, observe: BackwardObserver | None, grads: list | None,
                    scratch: _Scratch | None = None) -> np.ndarray | None:
    """Layer `index`'s gradients from its δ; returns δ of the layer below (None at layer 1):
    δ·W times φ' of the layer below, or ∂L/∂a_{index−1} = δ·W alone where `deriv_below` is None.
    With `scratch` (gradients not kept), ∂L/∂W and δ live in reused work arrays."""
    w = stack.weights[index - 1]
    out = None if scratch is None else scratch.get("weight_grad", w.shape, np.result_type(delta, a_below))
    weight_grad = np.matmul(delta.T, a_below, out=out)
    if observe is not None:
        observe(index, delta, weight_grad)
    if grads is not None:
        grads.append((weight_grad, delta.sum(axis=0)))
    del weight_grad
    if index == 1:
        return None
    # δ ping-pongs between two work arrays: the one not holding the current δ
    role = "delta_a" if scratch is None or delta is not scratch.get("delta_a", delta.shape, delta.dtype) else "delta_b"
    out = None if scratch is None else scratch.get(role, (delta.shape[0], w.shape[1]), np.result_type(delta, w))
    below = np.matmul(delta, w, out=out)
    if deriv_below is not None:
        below *= deriv_below
    return below


def checkpointed(stack: Stack, activation: Activation, x: np.ndarray, cotangent: np.ndarray,
                 forward_observe: ForwardObserver | None = None,
                 backward_observe: BackwardObserver | None = None) -> None:
    """Forward and backward keeping activations only every ⌈√L⌉ layers (Chen et al. 2016,
    Training Deep Nets with Sublinear Memory Cost): each segment's layers are recomputed from
    its first activation when the backward pass reaches it. Memory O(√L) activations instead
    of O(L), one extra forward pass of time, and the same numbers: the recomputation runs the
    same products on the same inputs."""
    depth = len(stack.weights)
    segment = max(1, math.isqrt(depth - 1) + 1 if depth > 1 else 1)
    starts = list(range(0, depth, segment))
    checkpoints = {0: x}
    a = x
    scratch = _Scratch()
    for index, (w, b) in enumerate(zip(stack.weights, stack.biases), start=1):
        h, a, deriv = layer_forward(activation, a, w, b, scratch)
        if forward_observe is not None:
            forward_observe(index, h, a, deriv)
        del h, deriv
        if index in starts:
            checkpoints[index] = a
    delta: np.ndarray | None = None
    for start in reversed(starts):
        end = min(start + segment, depth)
        acts, derivs = [checkpoints[start]], []
        for layer in range(start, end):
            _, a, deriv = layer_forward(activation, acts[-1], stack.weights[layer], stack.biases[layer], scratch)
            acts.append(a)
            derivs.append(deriv)
        if start + len(derivs) == depth:
            delta = cotangent * derivs[-1]
        else:
            delta *= derivs[-1]  # δ from above arrives as ∂L/∂a_end, times φ'(h_end)
        for index in range(end, start, -1):
            local = index - start
            delta = _backward_layer(stack, acts[local - 1], derivs[local - 2] if local > 1 else None, delta,
                                    index, backward_observe, None, scratch)
        del acts, derivs
        checkpoints.pop(start)


# -- propagate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """A propagate call with every argument checked and resolved."""

    init: Init
    act: Activation
    sizes: tuple[int, ...]
    batch: int
    bias_std: float
    input_std: float
    dtype: np.dtype
    seed: int
    theory: bool
    checkpoint: bool

    @property
    def params(self) -> dict:
        return {**self.init.params(), "sizes": list(self.sizes), "depth": len(self.sizes) - 1, "batch": self.batch,
                "bias_std": self.bias_std, "input_std": self.input_std, "dtype": self.dtype.name, "seed": self.seed}


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
    gain: float = 1.0,
    mode: str | None = None,
    distribution: str | None = None,
    negative_slope: float = 0.01,
    value: float = 0.5,
    std: float = 1.0,
    limit: float = 1.0,
    theory: bool = True,
    checkpoint: bool = False,
) -> _Run:
    """Check and resolve `propagate`'s arguments, memory guard included, allocating nothing."""
    if isinstance(scheme, Init):
        init = scheme
        act = get_activation(init.activation, init.negative_slope)
    else:
        init = make_init(scheme, gain=gain, mode=mode, distribution=distribution, activation=activation,
                         negative_slope=negative_slope, value=value, std=std, limit=limit)
        act = get_activation(activation, negative_slope)
    sizes = stack_sizes(sizes, depth, width)
    batch = _positive_int("batch", batch)
    np_dtype = check_dtype(dtype)
    check_memory(estimate_bytes(sizes, batch, np_dtype, checkpoint=checkpoint), dtype=np_dtype)
    return _Run(init, act, sizes, batch, check_std("bias_std", bias_std), check_std("input_std", input_std),
                np_dtype, check_seed(seed), bool(theory), bool(checkpoint))


def propagate(scheme: str | Init = "he-normal", activation: str = "relu", **options) -> PropagateResult:
    """Sample a stack with the scheme, run `batch` N(0, input_std²) inputs through it,
    backpropagate a unit-Gaussian cotangent, and measure every layer.

    Options (see `prepare`): sizes or depth/width (default 10 × 256), batch (512), bias_std,
    input_std, dtype (float32), seed, the init options (gain, mode, distribution,
    negative_slope, value, std, limit), theory, checkpoint.

    Overflow never raises: the affected cells hold inf/nan and the result names the first
    layer where it happened. With `theory`, each layer also carries the mean-field prediction
    for the run's scheme, activation, sizes, bias and input std (see `initcli.theory`).
    `checkpoint` keeps activations only every ⌈√depth⌉ layers and recomputes the rest in the
    backward pass: O(√depth) activation memory, the same numbers.
    """
    run = prepare(scheme, activation, **options)
    result = _run(run)
    if not run.theory:
        return result
    weight_vars = None if run.init.scheme.kind == "constant" else [
        run.init.expected_std((n_out, n_in)) ** 2 for n_in, n_out in zip(run.sizes[:-1], run.sizes[1:])]
    columns = beside(run.act, weight_vars, run.sizes, bias_var=run.bias_std**2,
                     input_second_moment=run.input_std**2,
                     measured_preact=[layer.preact_var for layer in result.layers],
                     measured_grad=[layer.grad_var for layer in result.layers])
    return replace(result, theory=columns)


def _run(run: _Run) -> PropagateResult:
    stack = build_stack(run.init, run.sizes, bias_std=run.bias_std, seed=run.seed, dtype=run.dtype)
    streams = seed_streams(run.seed)
    x = gaussian(streams["inputs"], (run.batch, run.sizes[0]), run.dtype) * run.dtype.type(run.input_std)
    cotangent = gaussian(streams["cotangent"], (run.batch, run.sizes[-1]), run.dtype)
    layers, forward_overflow, backward_overflow = measure(stack, run.act, x, cotangent, checkpoint=run.checkpoint)
    return PropagateResult(run.params, layers, forward_overflow, backward_overflow)


def measure(stack: Stack, act: Activation, x: np.ndarray, cotangent: np.ndarray, *,
            checkpoint: bool = False) -> tuple[tuple[LayerStats, ...], int | None, int | None]:
    """Forward x, backpropagate the cotangent, and measure every layer: the engine of
    `propagate` for a given stack and inputs. Returns (layers, first layer whose
    pre-activations overflowed, first layer from the top whose gradient did)."""
    depth = len(stack.weights)
    forward_stats: list[dict] = [None] * depth  # type: ignore[list-item]
    backward_stats: list[dict] = [None] * depth  # type: ignore[list-item]
    overflow = {"forward": None, "backward": None}

    def on_forward(layer: int, h: np.ndarray, a: np.ndarray, deriv: np.ndarray) -> None:
        preact_mean, preact_var = moments(h)
        if overflow["forward"] is None and not math.isfinite(preact_var) and not all_finite(h):
            overflow["forward"] = layer
        act_mean, act_var = moments(a)
        saturated = float(np.count_nonzero(act.saturated(a)) / a.size) if act.saturated is not None else 0.0
        forward_stats[layer - 1] = {
            "preact_mean": preact_mean, "preact_var": preact_var, "act_mean": act_mean, "act_var": act_var,
            "saturated_frac": saturated, "dead_frac": dead_fraction(deriv),
            "effective_rank": effective_rank(a), "input_cosine": mean_input_cosine(a),
        }

    def on_backward(layer: int, delta: np.ndarray, weight_grad: np.ndarray) -> None:
        grad_var = moments(delta)[1]
        if overflow["backward"] is None and not math.isfinite(grad_var) and not all_finite(delta):
            overflow["backward"] = layer
        backward_stats[layer - 1] = {"grad_var": grad_var, "weight_grad_var": moments(weight_grad)[1]}

    with np.errstate(all="ignore"):
        if checkpoint:
            checkpointed(stack, act, x, cotangent, on_forward, on_backward)
        else:
            backward(stack, forward(stack, act, x, on_forward), cotangent, on_backward, keep_grads=False)
        layers = tuple(
            LayerStats(layer=i + 1, fan_in=w.shape[1], fan_out=w.shape[0], weight_std=math.sqrt(moments(w)[1]),
                       **forward_stats[i], **backward_stats[i])
            for i, w in enumerate(stack.weights)
        )
    return layers, overflow["forward"], overflow["backward"]
