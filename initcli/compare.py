"""Run one stack under several schemes and activations and give each pair a verdict.

Every pair sees the same sizes, inputs, cotangent and seed; the weights of every scheme are
drawn from the same stream, so the rows differ only by the init.

Verdicts, checked in this order (the first that holds wins):
- symmetric: layer 1's units move together (effective rank ≤ 1.001 while the activations
  vary): the weights did not break symmetry, so no unit can learn anything another does not.
- overflow: activations or gradients became inf/nan in the working dtype.
- no-signal: the last layer's activations do not vary over the batch, or layer 1 gets no
  gradient at all: nothing reaches the output or nothing comes back.
- dead: in some layer more than half the units have zero derivative for every input.
- saturated: in some layer more than half the activations sit in a flat region.
- exploding / vanishing: the per-layer factor of the gradient variance (going down) or of the
  activation variance (going up, exploding only), measured over the deeper half of the stack
  where the signal has settled near its fixed point, compounded over the whole depth, moves by
  more than the larger of 10× and what finite width alone would explain at 3 standard
  deviations, exp(3·√(5·Σ 1/n_l)) (Hanin & Rolnick 2018). This is mean-field's ordered and
  chaotic phases: χ ≠ 1 at the fixed point gives an exponential trend with depth. A transient
  that settles to χ ≈ 1 (tanh under Xavier, whose q relaxes from 1 towards 0) decays only
  polynomially and is not called vanishing; `grad_ratio` still shows its total size.
- stable: none of the above.

Transformer stacks (`arch="transformer"`) are judged on their stream rows (one per block)
and add two failure modes of their own, checked before exploding/vanishing:
- rank-collapse: the last block's tokens point nearly one way (token_cosine > 0.99, Dong et
  al. 2021): the sequence has become one vector, and the gradients of the tokens with it.
- entropy-collapse: in some block the attention puts over 90% of its weight on one key on
  average (attn_max > 0.9): the softmax is saturated and passes almost no gradient to the
  queries and keys (Zhai et al. 2023).
Symmetry there is read on block 1's attention output with each token as one input (its D
units move together), and no-signal also when block 1's weights get no gradient at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from .checks import check_memory
from .errors import InitcliError
from .parallel import check_jobs, run_all
from .propagation import PropagateResult, check_arch, engine, propagate

VERDICTS = ("symmetric", "overflow", "no-signal", "dead", "saturated", "rank-collapse", "entropy-collapse",
            "exploding", "vanishing", "stable")
RANK_COLLAPSE_COSINE = 0.99
ENTROPY_COLLAPSE_MAX = 0.9
SYMMETRY_RANK = 1.001
DEAD_FRAC = 0.5
SATURATED_FRAC = 0.5
MIN_FACTOR = 10.0


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
    # transformer runs only
    last_token_cosine: float | None = None
    max_attn_max: float | None = None


COMPARE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CompareRow))[:-2]
TRANSFORMER_COLUMNS: tuple[str, ...] = COMPARE_COLUMNS + ("last_token_cosine", "max_attn_max")


@dataclass(frozen=True)
class CompareResult:
    params: dict
    comparisons: tuple[CompareRow, ...]
    runs: tuple[PropagateResult, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return TRANSFORMER_COLUMNS if self.params.get("arch") == "transformer" else COMPARE_COLUMNS

    def rows(self) -> list[dict]:
        return [{name: getattr(row, name) for name in self.columns} for row in self.comparisons]


def drift_bound(sizes: Sequence[int]) -> float:
    """The factor beyond which a variance change over the stack is not finite-width noise."""
    return max(MIN_FACTOR, math.exp(3 * math.sqrt(5 * sum(1 / n for n in sizes[1:]))))


def _ratio(top: float, bottom: float) -> float:
    if bottom == 0:
        return math.nan if top == 0 else math.inf
    return top / bottom


def _fmt(x: float) -> str:
    return f"{x:.2g}"


def widths(params: dict) -> list[int]:
    """The widths a run's signal passes through, input first: an MLP's sizes, a conv stack's
    channels (its positions share one kernel, so they do not average its randomness away),
    a transformer's width per block."""
    if params.get("arch") == "conv":
        return [params["channels"]] * (params["depth"] + 1)
    if params.get("arch") == "transformer":
        return [params["width"]] * (params["depth"] + 1)
    return list(params["sizes"])


def judge(result) -> tuple[str, str]:
    """(verdict, reason) for one propagate run (MLP, conv or transformer)."""
    layers = result.per_layer()
    first, last = layers[0], layers[-1]
    depth = len(layers)
    bound = drift_bound(widths(result.params))
    values = [getattr(layer, name) for layer in layers for name in ("preact_var", "act_var", "grad_var")
              if getattr(layer, name) is not None]
    transformer = result.params.get("arch") == "transformer"
    if transformer:
        symmetric = result.layers[0].effective_rank  # block 1's attention output, tokens as inputs
        if 0 < symmetric <= SYMMETRY_RANK:
            return "symmetric", (f"block 1's attention output units move together (effective rank "
                                 f"{symmetric:.3g}): identical units get identical updates and never separate")
    elif 0 < first.effective_rank <= SYMMETRY_RANK:
        return "symmetric", (f"layer 1's units move together (effective rank {first.effective_rank:.3g}): "
                             "identical units get identical updates and never separate")
    if result.overflowed or not all(math.isfinite(v) for v in values):
        where = result.forward_overflow_layer or result.backward_overflow_layer
        return "overflow", f"{result.params['dtype']} overflowed at layer {where}: values grew past its range"
    if last.act_var == 0 or first.grad_var == 0:
        if last.act_var == 0:
            return "no-signal", (f"layer {depth}'s activations are the same for every input "
                                 f"(variance 0): the output cannot depend on the input")
        return "no-signal", "layer 1 gets no gradient at all: nothing learns"
    if transformer:
        verdict = _judge_transformer(result, depth)
        if verdict is not None:
            return verdict
    if not transformer:  # a transformer's MLP units were judged above
        verdict = _dead_or_saturated(layers, "layer {}'s", "input")
        if verdict is not None:
            return verdict
    grad_ratio = _ratio(first.grad_var, last.grad_var)
    unit = "block" if transformer else "layer"
    settled = _settled_rate([layer.grad_var for layer in layers])
    grad_step = math.inf if settled == 0 else 1 / settled  # per {unit} going down
    act_step = _settled_rate([layer.act_var for layer in layers])  # per {unit} going up
    if grad_step ** (depth - 1) > bound:
        return "exploding", (f"gradient grows ×{grad_step:.3g} per {unit} going down: "
                             f"{_fmt(grad_ratio)}× larger at {unit} 1 than at {unit} {depth}")
    if act_step ** (depth - 1) > bound:
        return "exploding", (f"activations grow ×{act_step:.3g} per {unit}: "
                             f"{_fmt(_ratio(last.act_var, first.act_var))}× larger at {unit} {depth} than at {unit} 1")
    if grad_step ** (depth - 1) < 1 / bound:
        return "vanishing", (f"gradient shrinks ×{grad_step:.3g} per {unit} going down: "
                             f"{_fmt(first.grad_var)} at {unit} 1 against {_fmt(last.grad_var)} at {unit} {depth}")
    if 1 / bound <= grad_ratio <= bound:
        return "stable", (f"gradient variance changes ×{_fmt(grad_ratio)} over {depth} {unit}s, "
                          f"within the finite-width bound ×{_fmt(bound)}")
    return "stable", (f"gradient settles at ×{grad_step:.3g} per {unit} (×{_fmt(grad_step ** (depth - 1))} over "
                      f"{depth} {unit}s, within ×{_fmt(bound)}); the total ×{_fmt(grad_ratio)} comes from "
                      "a transient near the input")


def _dead_or_saturated(rows, owner: str, inputs: str) -> tuple[str, str] | None:
    """dead: over half a layer's units never fire for any input; saturated: over half its
    activations sit where the derivative is near 0. `owner` names the layer ("layer {}'s")."""
    dead = max(rows, key=lambda row: row.dead_frac)
    if dead.dead_frac > DEAD_FRAC:
        return "dead", f"{dead.dead_frac:.0%} of {owner.format(dead.layer)} units never fire for any {inputs}"
    saturated = max(rows, key=lambda row: row.saturated_frac)
    if saturated.saturated_frac > SATURATED_FRAC:
        return "saturated", (f"{saturated.saturated_frac:.0%} of {owner.format(saturated.layer)} activations sit in "
                             "the flat part of the activation, where the derivative is near 0")
    return None


def _judge_transformer(result, depth: int) -> tuple[str, str] | None:
    """The transformer's own verdicts, after overflow and before the gradient trend: no
    gradient to block 1's weights, dead or saturated MLP units, rank and entropy collapse."""
    rows = result.layers
    first_block = [row for row in rows if row.layer == 1 and row.weight_grad_var is not None]
    if all(row.weight_grad_var == 0 for row in first_block):
        return "no-signal", "block 1's weights get no gradient at all: nothing learns"
    mlp = [row for row in rows if row.sublayer == "mlp"]
    if mlp:
        verdict = _dead_or_saturated(mlp, "block {}'s MLP", "token")
        if verdict is not None:
            return verdict
    last = result.stream()[-1]
    if last.token_cosine > RANK_COLLAPSE_COSINE:
        collapsed = next(row.layer for row in result.stream() if row.token_cosine > RANK_COLLAPSE_COSINE)
        return "rank-collapse", (f"the tokens of a sequence point one way from block {collapsed} on (token_cosine "
                                 f"{last.token_cosine:.4g} at block {depth}): the sequence is one vector")
    attn = max((row for row in rows if row.sublayer == "attn"), key=lambda row: row.attn_max)
    if attn.attn_max > ENTROPY_COLLAPSE_MAX:
        return "entropy-collapse", (f"block {attn.layer}'s attention puts {attn.attn_max:.0%} of its weight on one "
                                    f"key on average (entropy {attn.attn_entropy:.3g} nats): the softmax is "
                                    "saturated and passes almost no gradient to queries and keys")
    return None


def _settled_rate(values: Sequence[float]) -> float:
    """Per-layer growth, layer l to l+1, over the deeper half of a profile (all of a short one): where
    the signal has settled near its fixed point, so a transient near the input (tanh's q
    relaxing from 1 towards 0 under Xavier) does not pass for an exponential trend."""
    start = len(values) // 2 if len(values) >= 4 else 0
    steps = len(values) - 1 - start
    if steps <= 0:
        return 1.0
    ratio = _ratio(values[-1], values[start])
    if math.isnan(ratio):
        return 1.0
    return ratio ** (1 / steps)


def _row(result) -> CompareRow:
    layers = result.per_layer()
    sizes = widths(result.params)
    verdict, reason = judge(result)
    transformer = result.params.get("arch") == "transformer"
    return CompareRow(
        scheme=result.params["scheme"], activation=result.params["activation"], depth=len(layers),
        width=sizes[1] if len(set(sizes)) == 1 else None,
        first_act_var=layers[0].act_var, last_act_var=layers[-1].act_var,
        first_grad_var=layers[0].grad_var, last_grad_var=layers[-1].grad_var,
        grad_ratio=_ratio(layers[0].grad_var, layers[-1].grad_var),
        max_saturated_frac=max(_present(result.layers, "saturated_frac")),
        max_dead_frac=max(_present(result.layers, "dead_frac")),
        min_effective_rank=min(layer.effective_rank for layer in layers),
        last_input_cosine=layers[-1].input_cosine,
        verdict=verdict, reason=reason,
        last_token_cosine=layers[-1].token_cosine if transformer else None,
        max_attn_max=max(_present(result.layers, "attn_max")) if transformer else None,
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
    runs: tuple  # the prepared runs (propagation._Run), in the order of `calls`
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
    comparisons = tuple(_row(run) for run in runs)
    first = runs[0].params
    params = {"schemes": [run.params["scheme"] for run in runs[: planned.schemes]],
              "activations": list(dict.fromkeys(run.params["activation"] for run in runs)),
              **{k: v for k, v in first.items() if k not in ("scheme", "activation", "mode", "distribution")}}
    return CompareResult(params, comparisons, runs)
