"""The contract every architecture's engine keeps (`Engine`), the options an engine adds to
the command line (`OptionSpec`) and the BLAS thread policy they share. This module imports
no numpy, so the command line can read every engine's declarations at start-up; what the
engines share at run time (seed streams, run fields, result, recorder, drivers, LayerNorm)
is `initcli.engines.shared`.

An engine is one object (`Engine`) over the modules that hold its kernels. Commands and
drivers reach an architecture only through it: `prepare` checks options and allocates
nothing (its run has `estimate`, `depth`, `dtype` and `params`), `run_prepared` measures,
`prepare_jacobian`/`run_jacobian` give the input-output Jacobian's spectrum, and `build`,
`output`, `gradients` and `parameters` expose the network itself, which is what
`tests/engines/test_contract.py` checks every registered engine by: gradients against
central differences, the same seed giving the same bytes, the memory estimate against the
measured peak, and every scheme kind either run or refused with the reason `refused` gives.

A new architecture is one module (or package) in this folder that builds an `Engine` and
registers it (`initcli.engines.register`); `--arch` then accepts its name and the commands
take its options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..threads import blas_threads_limited

if TYPE_CHECKING:  # annotations only: this module stays free of numpy at run time
    import numpy as np

UNITS = ("layer", "block")  # what one row of a result is


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option an engine adds to every command that takes --arch: `name` is
    its keyword (and, with `_` as `-`, its flag), `type` int, float, str or bool, `help` its
    text. A bool option is the switch `--NAME`, off by default; any other is unset (None,
    the engine's default) unless given. `int_list`: a comma list of integers, e.g. 16,16."""

    name: str
    type: type
    help: str
    int_list: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


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
    why this engine cannot run it (the error's text after the scheme's name). The callables:
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
    # the command-line options only this engine takes, spread into the architecture option
    # group of every command: another engine's run refuses them, naming this engine
    options: tuple[OptionSpec, ...] = ()
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
    def own_options(self) -> tuple[str, ...]:
        """The keywords of this engine's own options."""
        return tuple(option.name for option in self.options)

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
