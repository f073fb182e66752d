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
from .schemes import Init, make_init
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


_STAT_BLOCK = 1 << 16  # elements cast to float64 at a time by _mean_var
_WORKSPACE = 4 << 20  # blockwise float64 work (GELU, statistics) and small arrays


def estimate_bytes(sizes: Sequence[int], batch: int, dtype: np.dtype) -> int:
    """Peak memory of a propagate run, computed before anything is allocated.

    Kept through the run: every layer's weights, the inputs, each layer's activations and
    φ'(h), and the cotangent. On top of that, the larger of one layer's transients: forward,
    its pre-activations, a float64 copy of its activations for the statistics, their Gram
    matrix and a boolean mask; backward, two δ arrays and ∂L/∂W. Before the run, sampling
    holds the weights drawn so far and the float64 draw of one matrix.
    """
    itemsize = np.dtype(dtype).itemsize
    pairs = list(zip(sizes[:-1], sizes[1:]))
    weights = sum(n_in * n_out for n_in, n_out in pairs) * itemsize
    build_peak = weights + max(n_in * n_out for n_in, n_out in pairs) * 8
    kept = weights + batch * (sizes[0] + 2 * sum(sizes[1:]) + sizes[-1]) * itemsize
    transient = max(
        max(batch * n_out * (itemsize + 8 + 2) + min(batch, n_out) ** 2 * 8,
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
    biases = tuple((bias_std * streams["biases"].standard_normal(n_out)).astype(dtype)
                   for n_out in sizes[1:])
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


def forward(stack: Stack, activation: Activation, x: np.ndarray,
            observe: ForwardObserver | None = None) -> Trace:
    """Run x through the stack. `observe(layer, preact, act, deriv)` sees each layer (1-based)."""
    trace = Trace([x], [])
    a = x
    for index, (w, b) in enumerate(zip(stack.weights, stack.biases, strict=False), start=1):
        h = a @ w.T
        if b.any():
            h += b
        a = activation.fn(h)
        deriv = activation.derivative(h, a)
        if not np.isfinite(h).all():
            # past an overflow the gradient means nothing: keep nan in it rather than
            # let relu'(nan) = 0 report a clean zero
            deriv = np.where(np.isnan(h), np.nan, deriv).astype(deriv.dtype)
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
    delta = cotangent * trace.derivs[-1]
    for index in range(len(stack.weights), 0, -1):
        weight_grad = delta.T @ trace.acts[index - 1]
        if observe is not None:
            observe(index, delta, weight_grad)
        if keep_grads:
            grads.append((weight_grad, delta.sum(axis=0)))
        del weight_grad
        if index > 1:
            delta = (delta @ stack.weights[index - 1]) * trace.derivs[index - 2]
    return grads[::-1] if keep_grads else None


# -- statistics -----------------------------------------------------------------------------




def _mean_var(x: np.ndarray) -> tuple[float, float]:
    """Mean and variance in float64, two-pass (no cancellation when the mean dominates),
    casting a block at a time so a large float32 array never gets a full float64 copy."""
    flat = x.reshape(-1)
    if flat.size == 0:
        return math.nan, math.nan
    mean = flat.mean(dtype=np.float64)
    total = 0.0
    for start in range(0, flat.size, _STAT_BLOCK):
        block = flat[start:start + _STAT_BLOCK].astype(np.float64)
        block -= mean
        total += float(np.dot(block, block))
    return float(mean), total / flat.size


def effective_rank(acts: np.ndarray) -> float:
    """Participation ratio (tr C)²/tr(C²) of the centered covariance of acts (batch × units).

    tr(C²) = ‖AᵀA‖²_F = ‖AAᵀ‖²_F for centered A, so the smaller Gram matrix serves. The
    ratio is scale-free: A is divided by its largest entry first, so huge values cannot
    overflow. 0 when C = 0 (every input gives the same activations).
    """
    centered = acts.astype(np.float64)
    centered -= centered.mean(axis=0)
    largest = max(centered.max(), -centered.min()) if centered.size else 0.0
    if not np.isfinite(largest):
        return math.nan
    if largest == 0:
        return 0.0
    centered /= largest
    gram = centered @ centered.T if centered.shape[0] <= centered.shape[1] else centered.T @ centered
    trace = np.trace(gram)
    return float(trace * trace / np.vdot(gram, gram))


def mean_input_cosine(acts: np.ndarray) -> float:
    """Mean cosine similarity between the activation vectors of distinct inputs.

    With unit rows u_i: Σ_{i≠j} u_i·u_j = ‖Σ u_i‖² − m, so no batch×batch matrix is formed.
    Inputs whose activations are all zero have no direction and are left out; nan when fewer
    than two remain.
    """
    a = acts.astype(np.float64)
    largest = max(a.max(), -a.min()) if a.size else 0.0
    if not np.isfinite(largest) or largest == 0:
        return math.nan
    a /= largest
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))
    m = int(np.count_nonzero(norms))
    if m < 2:
        return math.nan
    a /= np.where(norms > 0, norms, 1.0)[:, None]  # zero rows stay zero and add nothing
    total = a.sum(axis=0)
    return float((total @ total - m) / (m * (m - 1)))


# -- propagate ------------------------------------------------------------------------------


def propagate(
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
) -> PropagateResult:
    """Sample a stack with the scheme, run `batch` N(0, input_std²) inputs through it,
    backpropagate a unit-Gaussian cotangent, and measure every layer.

    Defaults: depth 10 × width 256 unless `sizes` is given. Overflow never raises: the
    affected cells hold inf/nan and the result names the first layer where it happened.
    With `theory`, each layer also carries the mean-field prediction for the run's scheme,
    activation, sizes, bias and input std (see `initcli.theory`).
    """
    if isinstance(scheme, Init):
        init = scheme
        act = get_activation(init.activation, init.negative_slope)
    else:
        init = make_init(scheme, gain=gain, mode=mode, distribution=distribution, activation=activation,
                         negative_slope=negative_slope, value=value, std=std, limit=limit)
        act = get_activation(activation, negative_slope)
    sizes = stack_sizes(sizes, depth, width)
    batch = _positive_int("batch", batch)
    bias_std = check_std("bias_std", bias_std)
    input_std = check_std("input_std", input_std)
    np_dtype = check_dtype(dtype)
    seed = check_seed(seed)
    check_memory(estimate_bytes(sizes, batch, np_dtype), dtype=np_dtype)

    params = {**init.params(), "sizes": list(sizes), "depth": len(sizes) - 1, "batch": batch,
              "bias_std": bias_std, "input_std": input_std, "dtype": np_dtype.name, "seed": seed}
    with np.errstate(all="ignore"):
        result = _run(init, act, sizes, batch, bias_std, input_std, np_dtype, seed, params)
    if not theory:
        return result
    weight_vars = None if init.scheme.kind == "constant" else [
        init.expected_std((n_out, n_in)) ** 2 for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    columns = beside(act, weight_vars, sizes, bias_var=bias_std**2, input_second_moment=input_std**2,
                     measured_preact=[layer.preact_var for layer in result.layers],
                     measured_grad=[layer.grad_var for layer in result.layers])
    return replace(result, theory=columns)


def _run(init: Init, act: Activation, sizes, batch, bias_std, input_std, dtype, seed, params) -> PropagateResult:
    stack = build_stack(init, sizes, bias_std=bias_std, seed=seed, dtype=dtype)
    streams = seed_streams(seed)
    x = (input_std * streams["inputs"].standard_normal((batch, sizes[0]))).astype(dtype)
    cotangent = streams["cotangent"].standard_normal((batch, sizes[-1])).astype(dtype)

    depth = len(stack.weights)
    forward_stats: list[dict] = [None] * depth  # type: ignore[list-item]
    backward_stats: list[dict] = [None] * depth  # type: ignore[list-item]
    overflow = {"forward": None, "backward": None}

    def on_forward(layer: int, h: np.ndarray, a: np.ndarray, deriv: np.ndarray) -> None:
        if overflow["forward"] is None and not np.isfinite(h).all():
            overflow["forward"] = layer
        preact_mean, preact_var = _mean_var(h)
        act_mean, act_var = _mean_var(a)
        saturated = float(act.saturated(a).mean()) if act.saturated is not None else 0.0
        forward_stats[layer - 1] = {
            "preact_mean": preact_mean, "preact_var": preact_var, "act_mean": act_mean, "act_var": act_var,
            "saturated_frac": saturated, "dead_frac": float((deriv == 0).all(axis=0).mean()),
            "effective_rank": effective_rank(a), "input_cosine": mean_input_cosine(a),
        }

    def on_backward(layer: int, delta: np.ndarray, weight_grad: np.ndarray) -> None:
        if overflow["backward"] is None and not np.isfinite(delta).all():
            overflow["backward"] = layer
        backward_stats[layer - 1] = {"grad_var": _mean_var(delta)[1], "weight_grad_var": _mean_var(weight_grad)[1]}

    trace = forward(stack, act, x, on_forward)
    backward(stack, trace, cotangent, on_backward, keep_grads=False)
    layers = tuple(
        LayerStats(layer=i + 1, fan_in=w.shape[1], fan_out=w.shape[0],
                   weight_std=math.sqrt(_mean_var(w)[1]), **{
                       k: (forward_stats[i] | backward_stats[i])[k]
                       for k in LAYER_COLUMNS[4:]
                   })
        for i, w in enumerate(stack.weights)
    )
    return PropagateResult(params, layers, overflow["forward"], overflow["backward"])
