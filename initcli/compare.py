"""Run one stack under several schemes and activations and give each pair a verdict.

Every pair sees the same sizes, inputs, cotangent and seed; the weights of every scheme are
drawn from the same stream, so the rows differ only by the init.

The verdicts are `initcli.verdicts`' rules (the ones probe and sweep use too), on the run's
profile (`verdicts.propagate_profile`): an MLP's or conv stack's layers; a transformer's
stream rows, one per block, with each block's attention and MLP outputs as branches
(symmetry is read on block 1's attention output, dead and saturated units on the MLPs,
entropy collapse on the attention, rank collapse on the last block's tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from .checks import check_memory
from .errors import InitcliError
from .parallel import check_jobs, run_all
from .propagation import PropagateResult, check_arch, engine, propagate
from .verdicts import (  # noqa: F401  (re-exported: compare's names for the rules' constants)
    DEAD_FRAC,
    ENTROPY_COLLAPSE_MAX,
    MIN_FACTOR,
    RANK_COLLAPSE_COSINE,
    SATURATED_FRAC,
    SYMMETRY_RANK,
    VERDICTS,
    Verdict,
    drift_bound,
    propagate_profile,
    ratio,
    settled_rate,
)
from .verdicts import judge as judge_profile
from .verdicts import run_widths as widths


@dataclass(frozen=True)
class CompareRow:
    scheme: str
    activation: str
    depth: int
    width: int | None  # None for a stack of unequal widths
    first_act_var: float
    last_act_var: float
    first_grad_var: float
    last_grad_var: float
    grad_ratio: float  # first_grad_var / last_grad_var: < 1 the gradient shrinks going down
    max_saturated_frac: float
    max_dead_frac: float
    min_effective_rank: float
    last_input_cosine: float
    verdict: str
    reason: str
    # the engine's own summary columns (a transformer's last_token_cosine and max_attn_max)
    summary: Mapping[str, float] = field(default_factory=dict)

    def values(self) -> dict:
        """The row's columns: compare's own, then its engine's summary columns."""
        return {**{name: getattr(self, name) for name in COMPARE_COLUMNS}, **self.summary}


COMPARE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CompareRow))[:-1]


@dataclass(frozen=True)
class CompareResult:
    params: dict
    comparisons: tuple[CompareRow, ...]
    runs: tuple[PropagateResult, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        from .engines import of_run

        return COMPARE_COLUMNS + of_run(self.params).summary_columns

    def rows(self) -> list[dict]:
        return [row.values() for row in self.comparisons]


def verdict(result) -> Verdict:
    """The verdict on one propagate run (MLP, conv or transformer), with the numbers it compared."""
    return judge_profile(propagate_profile(result))


def judge(result) -> tuple[str, str]:
    """(verdict, reason) for one propagate run (MLP, conv or transformer)."""
    found = verdict(result)
    return found.verdict, found.reason


def compare_row(result) -> CompareRow:
    """The summary row of one propagate run: its first and last layers (blocks) and its verdict."""
    from .engines import of_run

    layers = result.per_layer()
    sizes = widths(result.params)
    verdict, reason = judge(result)
    return CompareRow(
        scheme=result.params["scheme"], activation=result.params["activation"], depth=len(layers),
        width=sizes[1] if len(set(sizes)) == 1 else None,
        first_act_var=layers[0].act_var, last_act_var=layers[-1].act_var,
        first_grad_var=layers[0].grad_var, last_grad_var=layers[-1].grad_var,
        grad_ratio=ratio(layers[0].grad_var, layers[-1].grad_var),
        max_saturated_frac=max(_present(result.layers, "saturated_frac")),
        max_dead_frac=max(_present(result.layers, "dead_frac")),
        min_effective_rank=min(layer.effective_rank for layer in layers),
        last_input_cosine=layers[-1].input_cosine,
        verdict=verdict, reason=reason, summary=of_run(result.params).summary(result),
    )


def _present(rows, column: str) -> list[float]:
    """A column's values over the rows where it applies (a transformer's attention rows have
    no dead units); [0.0] when none has it (attention-only blocks have no MLP units)."""
    return [value for row in rows if (value := getattr(row, column)) is not None] or [0.0]


@dataclass(frozen=True)
class ComparePlan:
    """A comparison checked before any process starts: one propagate call per (scheme,
    activation) pair, each prepared (options checked, memory estimated), and the processes."""

    calls: tuple[dict, ...]
    runs: tuple  # the prepared runs (propagation.MlpRun), in the order of `calls`
    jobs: int
    schemes: int  # how many schemes each activation runs

    @property
    def at_once(self) -> int:
        """Runs that go at once: what the memory guard multiplies by."""
        return min(self.jobs, len(self.calls))


def plan(schemes: Sequence[str], activations: Sequence[str] = ("relu",), *, jobs: int | None = 1,
         **options) -> ComparePlan:
    """The propagate calls of a comparison, every option checked and the memory of the runs
    that go at once guarded, before any process starts."""
    if not schemes:
        raise InitcliError("schemes", "needs at least one scheme")
    if not activations:
        raise InitcliError("activation", "needs at least one activation")
    options.setdefault("theory", False)
    kind = check_arch(options.get("arch"))
    jobs = check_jobs(jobs)
    calls = tuple({"scheme": scheme, "activation": activation, **options} for activation in activations
                  for scheme in schemes)
    domain = engine(kind)
    result = ComparePlan(calls, tuple(domain.prepare(**{k: v for k, v in call.items() if k != "arch"})
                                      for call in calls), jobs, len(schemes))
    largest = max(run.estimate for run in result.runs)
    check_memory(result.at_once * largest, dtype=result.runs[0].dtype,
                 options=domain.MEMORY_OPTIONS + (("--jobs",) if result.at_once > 1 else ()))
    return result


def compare(schemes: Sequence[str], activations: Sequence[str] = ("relu",), *, jobs: int | None = 1,
            progress: Callable[[int], None] | None = None, **options) -> CompareResult:
    """Run `propagate` for every (scheme, activation) pair with the same options and seed,
    in `jobs` processes (None: one per core). Every run uses one BLAS thread, so the results
    do not depend on `jobs`, to the last bit. `progress` hears of every layer done."""
    return run_plan(plan(schemes, activations, jobs=jobs, **options), progress)


def run_plan(planned: ComparePlan, progress: Callable[[int], None] | None = None) -> CompareResult:
    """`compare` for a plan already checked (the CLI plans first, to report memory)."""
    runs = tuple(run_all(propagate, planned.calls, planned.jobs, on_progress=progress))
    comparisons = tuple(compare_row(run) for run in runs)
    first = runs[0].params
    params = {"schemes": [run.params["scheme"] for run in runs[: planned.schemes]],
              "activations": list(dict.fromkeys(run.params["activation"] for run in runs)),
              **{k: v for k, v in first.items() if k not in ("scheme", "activation", "mode", "distribution")}}
    return CompareResult(params, comparisons, runs)
