"""What every engine shares at run time: the seed streams, the resolution of a scheme, the
run fields, the one result type, the recorder's overflow bookkeeping, the two drivers
(`propagate_run`, `jacobian_run`) and the one LayerNorm; and the per-layer rows (`LayerStats`)
with their recorder, which the MLP and conv engines both give."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..activations import Activation
from ..stats import RANK_INPUTS, all_finite, dead_fraction, effective_rank, mean_input_cosine, moments
from ..threads import blas_threads_limited

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default
STREAMS = ("weights", "biases", "inputs", "cotangent", "order")


def seed_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators from one seed: weights, biases, inputs (or a task's data), the
    cotangent, and the order of mini-batches. Each is the same whatever the others draw."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, children)}


# -- the shared run fields ------------------------------------------------------------------


def resolve_init(scheme: Any, activation: str, init_options: dict) -> tuple[Any, Any]:
    """(Init, Activation) of a run: a ready `schemes.Init` as given, with its own activation,
    or a scheme name drawn through `schemes.make_init` with the options (and the activation's
    leaky slope from them)."""
    from ..activations import DEFAULT_NEGATIVE_SLOPE, get_activation
    from ..schemes import Init, make_init

    if isinstance(scheme, Init):
        return scheme, get_activation(scheme.activation, scheme.negative_slope)
    init = make_init(scheme, activation=activation, **init_options)
    return init, get_activation(activation, init_options.get("negative_slope", DEFAULT_NEGATIVE_SLOPE))


@dataclass(frozen=True)
class Run:
    """What every engine's checked run holds besides its geometry: the scheme (an `Init`), the
    activation, the batch, the biases' and inputs' stds, the dtype, the seed and whether to
    put theory beside the rows. Each engine's run adds its own fields after these."""

    init: Any
    act: Any
    batch: int
    bias_std: float
    input_std: float
    dtype: np.dtype
    seed: int
    theory: bool

    def drawn_params(self, bias_std: float | None = None) -> dict:
        """The params every run records about its draws, in the order the CSV/JSON give them
        (`bias_std`: the one to record when it is not the option's, as from a weights file)."""
        return {"batch": self.batch, "bias_std": self.bias_std if bias_std is None else bias_std,
                "input_std": self.input_std, "dtype": self.dtype.name, "seed": self.seed}


# -- one result type, one recorder -----------------------------------------------------------


def columns_of(record_type) -> tuple[str, ...]:
    """A record dataclass's field names: the CSV columns of its rows, in order."""
    return tuple(f.name for f in fields(record_type))


@dataclass(frozen=True)
class Result:
    """One propagate run of any engine: its parameters (enough to reproduce it) and one record
    per row (a layer, or a block's sublayer), with the theory columns beside them when asked.

    `forward_overflow_layer` is the first layer (or block) whose forward pass held inf/nan;
    `backward_overflow_layer` the first, counting down from the top, whose gradient did; None
    where everything stayed finite. `lsuv_iterations`: the rescalings per layer of the lsuv
    scheme (MLP only). Row records say by `unit_output` whether a row is the output of one
    unit of the stack (every layer; a transformer block's stream row), which is what verdicts
    and profiles read.
    """

    params: dict
    layers: tuple
    forward_overflow_layer: int | None = None
    backward_overflow_layer: int | None = None
    theory: tuple | None = None  # None when asked for no theory
    lsuv_iterations: tuple[int, ...] | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return (columns_of(type(self.layers[0]))
                + (columns_of(type(self.theory[0])) if self.theory is not None else ())
                + (("lsuv_iterations",) if self.lsuv_iterations is not None else ()))

    def rows(self) -> list[dict]:
        rows = [asdict(layer) for layer in self.layers]
        for i, row in enumerate(rows):
            if self.theory is not None:
                row |= asdict(self.theory[i])
            if self.lsuv_iterations is not None:
                row["lsuv_iterations"] = self.lsuv_iterations[i]
        return rows

    @property
    def overflowed(self) -> bool:
        return self.forward_overflow_layer is not None or self.backward_overflow_layer is not None

    def per_layer(self) -> tuple:
        """One row per layer or block: the rows that are a unit's output."""
        return tuple(row for row in self.layers if row.unit_output)

    def stream(self) -> tuple:
        """A transformer's stream rows, one per block (the same rows as `per_layer`)."""
        return self.per_layer()


def propagate_run(run: Run, progress: Callable[[int], None] | None, *, threads: AbstractContextManager,
                  build: Callable[[Any], tuple], measure: Callable[..., tuple],
                  theory: Callable[[Any, tuple], tuple]) -> Result:
    """The propagate driver of every engine: under the engine's BLAS thread setting, the
    network and inputs its `build` draws from the run's seed (net, x, cotangent, …), one
    forward and backward pass its `measure` records (rows, forward overflow, backward
    overflow), then the theory columns beside the rows when the run asks for them."""
    with threads:
        net, x, cotangent, *_ = build(run)
        rows, forward_overflow, backward_overflow = measure(net, run.act, x, cotangent, progress=progress)
    return Result(run.params, rows, forward_overflow, backward_overflow,
                  theory=theory(run, rows) if run.theory else None)


def jacobian_run(plan: Any, progress: Callable[[int], None] | None, *, build: Callable[[Any], tuple],
                 spectrum: Callable[..., tuple]):
    """The Jacobian driver of every engine: the network and inputs its `build` draws from the
    plan's run, then its `spectrum` (one row of singular-value statistics per layer or block,
    and every singular value with `plan.spectrum`) at the first `plan.inputs` inputs, on one
    BLAS thread (many small products and SVDs run fastest that way)."""
    from .spectra import JacobianResult

    with blas_threads_limited(1):
        net, x, *_ = build(plan.run)
        rows, values = spectrum(net, plan.run.act, x[:plan.inputs], spectrum=plan.spectrum, progress=progress)
    return JacobianResult(plan.params, rows, values)


class Recorder:
    """What every engine's recorder keeps besides its statistics: the first layer (or block)
    whose forward pass overflowed, the first from the top whose gradient did, and a progress
    tick per step. `finite` is asked only until the first overflow is found."""

    def __init__(self, progress: Callable[[int], None] | None = None) -> None:
        self.progress = progress
        self.forward_overflow: int | None = None
        self.backward_overflow: int | None = None

    def check_forward(self, index: int, finite: Callable[[], bool]) -> None:
        if self.forward_overflow is None and not finite():
            self.forward_overflow = index

    def check_backward(self, index: int, finite: Callable[[], bool]) -> None:
        if self.backward_overflow is None and not finite():
            self.backward_overflow = index

    def tick(self) -> None:
        if self.progress is not None:
            self.progress(1)


# -- the one LayerNorm ----------------------------------------------------------------------


def row_sums(x: np.ndarray) -> np.ndarray:
    """Sums over the last axis, shape (…, 1), by one matrix–vector product: numpy's reductions
    over a short last axis (64 units, 16 keys) cost ten times more than this read."""
    d = x.shape[-1]
    return (x.reshape(-1, d) @ np.ones(d, dtype=x.dtype)).reshape(x.shape[:-1] + (1,))


def layer_norm(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x − mean)/√(var + ε) over the last axis, and 1/√(var + ε) (…, 1); torch's LayerNorm
    without its affine part (biased variance, ε = 1e-5). The moments are row sums in x's
    dtype, as torch takes them; where a square overflows that dtype, in float64. The mean is
    taken of x − x[…, 0], so a row of equal entries (constant weights) is centred to exact
    zeros: its units stay equal, as they would in exact arithmetic, instead of being split
    by the rounding of a sum (the symmetry a constant init must never break)."""
    inv_d = x.dtype.type(1 / x.shape[-1])
    centered = x - x[..., :1]
    centered -= row_sums(centered) * inv_d
    var = row_sums(np.square(centered)) * inv_d
    if not np.isfinite(var).all():  # squares past float32's range, or inf and nan in x
        return _layer_norm64(x)
    var += x.dtype.type(LAYER_NORM_EPS)
    inv_std = np.sqrt(var, out=var)
    np.divide(x.dtype.type(1), inv_std, out=inv_std)
    centered *= inv_std
    return centered, inv_std


def _layer_norm64(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=-1, keepdims=True, dtype=np.float64)
    centered = x - mean.astype(x.dtype)
    var = np.mean(np.square(centered, dtype=np.float64), axis=-1, keepdims=True)
    inv_std = (1 / np.sqrt(var + LAYER_NORM_EPS)).astype(x.dtype)
    centered *= inv_std
    return centered, inv_std


def layer_norm_backward(grad: np.ndarray, normed: np.ndarray, inv_std: np.ndarray) -> np.ndarray:
    """∂L/∂x from ∂L/∂n: r·(g − mean(g) − n·mean(g⊙n)) over the last axis (broadcasts a
    batch of cotangents against one input's normed/inv_std). g's mean is taken of
    g − g[…, 0], as the forward's, so equal cotangents on equal units give exact zeros."""
    inv_d = grad.dtype.type(1 / grad.shape[-1])
    out = grad * normed
    mean_proj = row_sums(out) * inv_d
    np.multiply(normed, mean_proj, out=out)
    shifted = grad - grad[..., :1]
    np.subtract(shifted, out, out=out)
    out -= row_sums(shifted) * inv_d
    out *= inv_std
    return out


# -- per-layer rows (MLP and conv) ------------------------------------------------------------


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

    unit_output = True  # every layer's row is read by verdicts and profiles


LAYER_COLUMNS: tuple[str, ...] = columns_of(LayerStats)


class LayerRecorder(Recorder):
    """Every layer's statistics as an engine's observers see them, one forward and one
    backward pass: the MLP engine's and the conv engine's. An output (batch, …) is read as one
    vector per input (input_cosine), a conv output's channels as its units, each (example,
    position) an input (effective_rank), and φ' as one unit per entry (dead_frac);
    moments are over every entry. `progress(1)` after each layer, forward and backward."""

    def __init__(self, act: Activation, depth: int, progress: Callable[[int], None] | None = None) -> None:
        super().__init__(progress)
        self.act = act
        self.forward_stats: list[dict | None] = [None] * depth
        self.backward_stats: list[dict | None] = [None] * depth

    def on_forward(self, layer: int, h: np.ndarray, branch: np.ndarray, output: np.ndarray,
                   deriv: np.ndarray) -> None:
        preact_mean, preact_var = moments(h)
        # the first layer whose pre-activations held inf/nan
        self.check_forward(layer, lambda: math.isfinite(preact_var) or all_finite(h))
        act_mean, act_var = moments(output)
        saturated = self.act.saturated
        flat = output.reshape(output.shape[0], -1)
        # the units whose symmetry effective_rank reads: a conv layer's channels (channels-last),
        # each (example, position) one input, spread over the batch
        if output.ndim == 2:
            units = output
        else:
            units = output.reshape(-1, output.shape[-1])
            units = units[::max(1, len(units) // RANK_INPUTS)]
        self.forward_stats[layer - 1] = {
            "preact_mean": preact_mean, "preact_var": preact_var, "act_mean": act_mean, "act_var": act_var,
            "saturated_frac": float(np.count_nonzero(saturated(branch)) / branch.size) if saturated else 0.0,
            "dead_frac": dead_fraction(deriv.reshape(deriv.shape[0], -1)),
            "effective_rank": effective_rank(units), "input_cosine": mean_input_cosine(flat),
        }
        self.tick()

    def on_backward(self, layer: int, delta: np.ndarray, weight_grad: np.ndarray) -> None:
        grad_var = moments(delta)[1]
        self.check_backward(layer, lambda: math.isfinite(grad_var) or all_finite(delta))
        self.backward_stats[layer - 1] = {"grad_var": grad_var, "weight_grad_var": moments(weight_grad)[1]}
        self.tick()

    def layers(self, weights: Sequence[np.ndarray], fans: Sequence[tuple[int, int]]) -> tuple[LayerStats, ...]:
        with np.errstate(all="ignore"):
            return tuple(LayerStats(layer=i + 1, fan_in=fan_in, fan_out=fan_out, weight_std=math.sqrt(moments(w)[1]),
                                    **self.forward_stats[i], **self.backward_stats[i])
                         for i, (w, (fan_in, fan_out)) in enumerate(zip(weights, fans)))
