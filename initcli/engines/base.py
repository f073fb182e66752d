"""The contract every architecture's engine keeps, and the BLAS thread policy they share.

Also here, what every engine shares: the seed streams, the resolution of a scheme, the run
fields, the one result type, the recorder's overflow bookkeeping, the two drivers
(`propagate_run`, `jacobian_run`) and the one LayerNorm.

An engine is one object (`Engine`) over the module that holds its kernels. Commands and
drivers reach an architecture only through it: `prepare` checks options and allocates
nothing (its run has `estimate`, `depth`, `dtype` and `params`), `run_prepared` measures,
`prepare_jacobian`/`run_jacobian` give the input-output Jacobian's spectrum, and `build`,
`output`, `gradients` and `parameters` expose the network itself, which is what
`tests/engines/test_contract.py` checks every registered engine by: gradients against
central differences, the same seed giving the same bytes, the memory estimate against the
measured peak, and every scheme kind either run or refused with the reason `refused` gives.

A new architecture is one module in this package that builds an `Engine` and registers it
(`initcli.engines.register`); `--arch` then accepts its name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..threads import blas_threads_limited

UNITS = ("layer", "block")  # what one row of a result is
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
    from ..jacobian import JacobianResult

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


def thread_policy(work: int, single_thread_work: int) -> AbstractContextManager:
    """One BLAS thread while a run's largest single product (multiply-adds) is at most
    `single_thread_work`: there more threads only wait on each other, and one thread gives
    the same bytes on any machine. Larger runs use the threads they are given."""
    return blas_threads_limited(1) if work <= single_thread_work else nullcontext()


def deferred(module: str, name: str) -> Callable[..., Any]:
    """A function calling `module.name`, imported at the first call: for an engine whose runs
    live in modules that import its kernels (the MLP's `propagation` and `jacobian`)."""
    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def per_layer(pairs) -> dict[str, np.ndarray]:
    """{"w1": …, "b1": …, "w2": …} from (weight, bias) pairs, layer 1 first: the parameter
    names of a stack of layers, for `parameters` and `backward` alike."""
    named = {}
    for index, (weight, bias) in enumerate(pairs, start=1):
        named[f"w{index}"], named[f"b{index}"] = weight, bias
    return named


@dataclass(frozen=True)
class Engine:
    """An architecture, as every command and driver sees it.

    name: the `--arch` value; unit: "layer" or "block" (one result row each); memory_options:
    the options that make a run smaller, named by the memory guard; refused: scheme kind →
    why this engine cannot run it (the error's text after the scheme's name); kernels: the
    module holding the numerics. The callables:
    - prepare(scheme, activation, **options) -> run (checked, nothing allocated);
    - run_prepared(run, progress=None) -> result with rows();
    - propagate(scheme, activation, *, progress=None, **options) -> result;
    - estimate_bytes(...) -> int, the engine's own memory model (its signature is the engine's);
    - work(run) -> the multiply-adds of the largest single product (`thread_policy` reads it);
    - prepare_jacobian(scheme, activation, *, inputs=None, spectrum=False, **options) -> plan
      with `steps`; run_jacobian(plan, progress=None) -> result;
    - build(run) -> (net, x, cotangent): the network and the inputs a run draws from its seed;
    - network(init, run, seed) -> net: the network alone, biases 0 (what `train` starts from);
    - features(run) -> the width of the last output's feature axis (channels, width);
    - forward(net, activation, x, observe=None) -> (trace, output): the trace `backward` needs,
      and the last layer's (or block's) output, features on the last axis; `observe`, the
      engine's own per-layer (per-block) callback, sees each step as it goes (its recorder's);
    - backward(net, trace, cotangent) -> {parameter name: ∂L/∂θ} for L = Σ cotangent ⊙ output;
    - parameters(net) -> {parameter name: array}, the arrays `backward` differentiates (views
      into the network: writing to one changes the network).
    `output` and `gradients` are forward and backward in one call; `final_norm(net)` says
    whether a read-out must first normalise the output.
    """

    name: str
    unit: str
    kernels: Any
    memory_options: tuple[str, ...]
    single_thread_work: int
    prepare: Callable[..., Any]
    run_prepared: Callable[..., Any]
    propagate: Callable[..., Any]
    estimate_bytes: Callable[..., int]
    work: Callable[[Any], int]
    prepare_jacobian: Callable[..., Any]
    run_jacobian: Callable[..., Any]
    build: Callable[[Any], tuple[Any, np.ndarray, np.ndarray]]
    network: Callable[[Any, Any, int], Any]
    features: Callable[[Any], int]
    forward: Callable[..., tuple[Any, np.ndarray]]
    backward: Callable[[Any, Any, np.ndarray], dict[str, np.ndarray]]
    parameters: Callable[[Any], dict[str, np.ndarray]]
    refused: Mapping[str, str] = field(default_factory=dict)
    # the architecture options only this engine takes (`--arch` option group's names): another
    # engine's run refuses them, naming this engine
    own_options: tuple[str, ...] = ()
    # the architecture option group's values (a dict, lists already parsed) -> this engine's
    # prepare keywords; refuses the shared options the engine cannot honour (InitcliError)
    keywords: Callable[[dict], dict] = lambda values: {}
    # whether a read-out on top must first normalise the output (pre-LN transformers end on
    # an un-normalised stream, which GPT-2's ln_f normalises)
    final_norm: Callable[[Any], bool] = lambda net: False
    # a run's params -> its shape in words, for titles ("20 conv layers · 16 ch · 16×16 · k3 circular")
    describe: Callable[[dict], str] = lambda params: f"{params['depth']} layers"
    # a run's params -> the widths its signal passes through, input first (the finite-width
    # spread of the verdicts reads them)
    widths: Callable[[dict], list[int]] = lambda params: list(params["sizes"])
    skips_by_default: bool = False  # whether its units have skip connections unless --no-residual
    sample: str = "input"  # what one sample of a row's statistics is ("token" for a transformer)
    # compare's extra summary columns for this engine, and a result -> their values
    summary_columns: tuple[str, ...] = ()
    summary: Callable[[Any], dict] = lambda result: {}
    # per-unit columns on a 0–1 scale that compare's figure adds a panel for
    chart_columns: tuple[str, ...] = ()
    # train's smaller defaults for this engine's prepare options, and its usual optimizer
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    train_optimizer: str = "sgd"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"engine {self.name}: unit must be one of {UNITS}, got {self.unit!r}")

    @property
    def MEMORY_OPTIONS(self) -> tuple[str, ...]:  # noqa: N802  (the name the engine modules export)
        return self.memory_options

    def output(self, net: Any, activation: Any, x: np.ndarray) -> np.ndarray:
        return self.forward(net, activation, x)[1]

    def gradients(self, net: Any, activation: Any, x: np.ndarray, cotangent: np.ndarray) -> dict[str, np.ndarray]:
        return self.backward(net, self.forward(net, activation, x)[0], cotangent)

    def threads(self, run: Any) -> AbstractContextManager:
        """The BLAS thread setting this engine runs `run` under."""
        return thread_policy(self.work(run), self.single_thread_work)
