"""One verdict rule set for every command that judges a network: compare, sweep and probe.

A `Profile` lists the units of a network in execution order, each with a role:
- `layer`: a layer of a plain stack; `stream`: a repeated block's output, the residual stream
  between blocks. These are the judged units, the ones whose trend with depth is read.
- `branch`: what a residual branch adds to the stream (judged separately: its variance against
  the stream's, its dead/saturated units, its attention).
- `head`: what comes after the judged units (a classification head): its shape change says
  nothing about depth, so the trend is judged up to it.
- `stem`: before the judged units (an embedding, a first conv); `inner`: any other measured
  module. Both count for symmetry (the stem) and for dead/saturated units (both).
A statistic a unit does not have is nan. `judge(profile)` returns a `Verdict`: the verdict
word, the reason, the names of the judged units (and their count), and `numbers`, the very
numbers the rule compared. Every reason is formatted from those numbers and the units' names
only, so it cannot say something the rule did not see.

Rules, in this order (the first that holds wins):
- symmetric: the first unit's units move together (0 < effective rank ≤ 1.001): the weights
  did not break symmetry, so no unit can learn anything another does not.
- overflow: activations or gradients left the dtype's range.
- no-signal: the last judged unit's activations do not vary over the batch, or the first
  judged unit gets no gradient, or its weights get none. A head that starts at zero output
  while its weights get a gradient is a deliberate design (a zero-initialised head), not this:
  the reason says so, and if the judged units get no gradient because of it, the activations
  alone are judged.
- dead: some unit has over half its units at zero derivative for every input.
- saturated: some unit has over half its activations in a flat region.
- rank-collapse: the last judged unit's tokens point one way (token_cosine > 0.99, Dong et
  al. 2021).
- entropy-collapse: some attention puts over 90% of its weight on one key on average
  (attn_max > 0.9, Zhai et al. 2023): the softmax passes almost no gradient to queries and keys.
- exploding / vanishing: an exponential trend with depth (mean-field's chaotic / ordered
  phase, χ ≠ 1 at the fixed point). Two numbers must agree: the settled per-unit factor (over
  the deeper half of the judged units, where the signal has settled near its fixed point)
  compounded over the whole depth, and the total change from the first judged unit to the
  last; both beyond the finite-width drift bound, the same way. The bound is the larger of 10×
  and exp(3·√(5·Σ 1/n_l)), what finite width alone explains at 3 standard deviations (Hanin &
  Rolnick 2018; THEORY.md "Finite width"). Gradients (going down) are read first, then
  activations (going up, exploding only). Where the judged units change shape (a ResNet's
  stages), the gradient is read both per entry (what fan-out scaling conserves) and as its
  squared norm per input (what fan-in scaling conserves): a change of shape moves one against
  the other (He et al. 2015 §2.2), so both must show the trend. A residual stream whose
  variance grows additively inside each run of same-shape blocks, its gradient following a
  power of that variance rather than a settled per-block factor, is polynomial, not
  exponential (a normalised stream, De & Smith 2020; `_polynomial_stream`): stable.
- stable: none of the above. The reason says which of the two numbers is within the bound:
  a total beyond it from a transient near the input that settles (tanh under Xavier, whose q
  relaxes towards 0: polynomial, not exponential), or a settled factor that the total does
  not bear out.
Zero-output branches whose weights get a gradient (Fixup's zero last layer, a zero layer
scale) are a deliberate design too: the reason notes them.

Profiles come from `propagate_profile(result)` (compare and sweep: an MLP, conv or
transformer propagate run) or `modules_profile(rows, ...)` (probe).

API for probe (`initcli.probing`):
    from .verdicts import judge_modules
    verdict = judge_modules(rows, channels_last=channels_last, dtype=dtype_name, zero_head=zero_head)
    verdict.verdict, verdict.reason   # what ProbeResult holds
    verdict.units, verdict.count      # the module names judged, in execution order, and how many
    verdict.numbers                   # what the rule compared: numbers["grad_ratio"], ["bound"], …
`rows` are probe's `ModuleStats` in execution order: anything with the attributes module,
type, output_shape ("-" when not measured), act_var, grad_var, weight_std, weight_grad_var,
dead_frac, saturated_frac, effective_rank; optionally branch_var (None except on branch
rows), token_cosine, attn_max, attn_entropy (nan when absent). When every measured row also
has `kind` ("block" for a repeated block's output, "weighted" for a module holding a weight
matrix or kernel, anything else otherwise), `width` (channels) and `size` (values per
input), they are used as given; else they are inferred (`repeated_blocks`, the weight_std,
the output shape with `channels_last`). Two or more block rows make the residual stream the
judged units. `zero_head` names a module that starts at zero output (all-zero weights),
measured with a unit cotangent sent into its input: it and what follows are the head. For
the summary row, take first/last values from the rows named `verdict.units[0]` and
`verdict.units[-1]`, so its columns describe the units the verdict judged.
`numbers["max_branch_ratio"]`, when there are branches, is the largest variance a branch adds
over the variance of the stream it joins (THEORY.md "Residual streams": each block adds α²·V).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

VERDICTS = ("symmetric", "overflow", "no-signal", "dead", "saturated", "rank-collapse", "entropy-collapse",
            "exploding", "vanishing", "stable")
ROLES = ("layer", "stream", "branch", "head", "stem", "inner")
JUDGED_ROLES = ("layer", "stream")
RANK_COLLAPSE_COSINE = 0.99
ENTROPY_COLLAPSE_MAX = 0.9
SYMMETRY_RANK = 1.001
DEAD_FRAC = 0.5
SATURATED_FRAC = 0.5
MIN_FACTOR = 10.0
NAN = math.nan
CONTAINERS = ("Sequential", "ModuleList", "ModuleDict")  # plain containers: stages, not blocks


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One measured unit. `name` says where it is ("layer 3", "block 2", "blocks.2");
    `owner` is how a reason names what it holds ("layer 3's", "block 1's attention output"),
    by default the name's possessive. `act_var` is its output's variance (for a branch: what
    it adds to the stream), `grad_var` its gradient's variance per entry, `size` its values per
    input (nan when not known: then the judged units are taken to share one shape)."""

    name: str
    role: str = "layer"
    act_var: float = NAN
    grad_var: float = NAN
    weight_grad_var: float = NAN
    dead_frac: float = NAN
    saturated_frac: float = NAN
    effective_rank: float = NAN
    token_cosine: float = NAN
    attn_max: float = NAN
    attn_entropy: float = NAN
    owner: str = ""
    size: float = NAN

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if not self.owner:
            object.__setattr__(self, "owner", f"{self.name}'s")


@dataclass(frozen=True)
class Profile:
    """The units of one network in execution order, and how to read them: `bound` is the
    finite-width drift bound (`drift_bound`), `noun` what a judged unit is called ("layer",
    "block"), `sample` what dead units never fire for ("input", "token"), `overflow_at` where
    the run saw values leave `dtype`'s range (None: read from the units), `zero_head` the
    head known to start at zero output (the units were measured with a unit cotangent at its
    input), None when there is none or it is to be read from the head's statistics."""

    units: tuple[Unit, ...]
    bound: float
    noun: str = "layer"
    sample: str = "input"
    dtype: str = "float32"
    overflow_at: str | None = None
    zero_head: str | None = None

    def role(self, *roles: str) -> tuple[Unit, ...]:
        return tuple(unit for unit in self.units if unit.role in roles)

    @property
    def judged(self) -> tuple[Unit, ...]:
        return self.role(*JUDGED_ROLES)


@dataclass(frozen=True)
class Verdict:
    """A verdict, its reason, the names of the judged units and the numbers the rule compared
    (the reason is formatted from these alone)."""

    verdict: str
    reason: str
    units: tuple[str, ...]
    numbers: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.units)


# -- arithmetic the rules share -------------------------------------------------------------------


def drift_bound(sizes: Sequence[float]) -> float:
    """The factor beyond which a variance change over a stack is not finite-width noise:
    max(10, exp(3·√(5·Σ 1/n_l))) over the widths after the input, `sizes[1:]`."""
    return max(MIN_FACTOR, math.exp(3 * math.sqrt(5 * sum(1 / n for n in sizes[1:]))))


def ratio(top: float, bottom: float) -> float:
    """top / bottom, with 0/0 nan and x/0 inf."""
    if bottom == 0:
        return math.nan if top == 0 else math.inf
    return top / bottom


def settled_rate(values: Sequence[float]) -> float:
    """Per-unit growth, unit l to l+1, over the deeper half of a profile (all of a short one):
    where the signal has settled near its fixed point, so a transient near the input (tanh's q
    relaxing from 1 towards 0 under Xavier) does not pass for an exponential trend."""
    start = len(values) // 2 if len(values) >= 4 else 0
    steps = len(values) - 1 - start
    if steps <= 0:
        return 1.0
    measured = ratio(values[-1], values[start])
    if math.isnan(measured):
        return 1.0
    return measured ** (1 / steps)


def compounded(step: float, steps: int) -> float:
    """step ** steps, inf (or 0) where a float cannot hold it."""
    try:
        return step ** steps
    except OverflowError:
        return math.inf


def _fmt(x: float) -> str:
    return f"{x:.2g}"


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


# -- the rules ------------------------------------------------------------------------------------


def judge(profile: Profile) -> Verdict:
    """The verdict on a profile (see the module docstring for the rules, in order)."""
    judged = profile.judged
    names = tuple(unit.name for unit in judged)
    notes: list[str] = []  # on deliberate designs, after the reason
    design: dict = {}  # the numbers the notes rest on

    def verdict(word: str, template: str, **values) -> Verdict:
        return _verdict(word, template, {**values, **design}, names, notes)

    first_units = [u for u in profile.units if u.role not in ("head", "inner")]
    if first_units and 0 < first_units[0].effective_rank <= SYMMETRY_RANK:
        first = first_units[0]
        return verdict("symmetric", "{owner} units move together (effective rank {effective_rank:.3g}): identical "
                                    "units get identical updates and never separate",
                       owner=first.owner, effective_rank=first.effective_rank, symmetry_rank=SYMMETRY_RANK)
    where = profile.overflow_at or next(
        (u.name for u in profile.units if math.isinf(u.act_var) or math.isinf(u.grad_var) or math.isnan(u.act_var)),
        None)
    if where is not None:
        return verdict("overflow", "{dtype} overflowed at {where}: values grew past its range",
                       dtype=profile.dtype, where=where)
    if not judged:
        return verdict("stable", "no {noun} to judge", noun=profile.noun)
    first, last = judged[0], judged[-1]
    zero_head = _design_notes(profile, notes, design)
    branch_ratio = _branch_ratio(profile)
    if branch_ratio is not None:
        design["max_branch_ratio"] = branch_ratio
    if last.act_var == 0:
        return verdict("no-signal", "{owner} activations are the same for every input (variance 0): the output cannot "
                                    "depend on the input", owner=last.owner, last_act_var=last.act_var)
    gradients_wait = zero_head and all(u.grad_var == 0 for u in judged)
    if gradients_wait:
        notes.append(f"the gradient reaches the {profile.noun}s once the head moves: activations judged")
    elif first.grad_var == 0:
        return verdict("no-signal", "{name} gets no gradient at all: nothing learns", name=first.name,
                       first_grad_var=first.grad_var)
    elif first.weight_grad_var == 0:
        return verdict("no-signal", "{owner} weights get no gradient at all: nothing learns", owner=first.owner,
                       first_weight_grad_var=first.weight_grad_var)
    found = _dead_or_saturated(profile) or _collapsed(profile)
    if found is None:
        found = _trend(profile, gradients_wait)
    word, template, values = found
    return verdict(word, template, **values)


def _verdict(word: str, template: str, values: dict, names: tuple[str, ...], notes: Sequence[str] = ()) -> Verdict:
    """The verdict whose reason is `template` filled from `values` (the compared numbers and
    the names they belong to), then any notes; `numbers` keeps the numeric values."""
    reason = "; ".join([template.format(**values), *notes])
    numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return Verdict(word, reason, names, numbers)


def _design_notes(profile: Profile, notes: list[str], design: dict) -> bool:
    """Add notes on deliberate zero-output designs (and the numbers they rest on) and say
    whether the head is one: a head known or seen to start at zero output while its weights
    get a gradient; branches that do."""
    heads = profile.role("head")
    zero_head = bool(heads) and heads[-1].act_var == 0 and heads[-1].weight_grad_var > 0
    if profile.zero_head is not None:
        zero_head = True
        notes.append(f"{profile.zero_head} starts at zero output, a design: judged up to its input")
    elif zero_head:
        design.update(head_act_var=heads[-1].act_var, head_weight_grad_var=heads[-1].weight_grad_var)
        notes.append(f"{heads[-1].name} starts at zero output and its weights get a gradient: a zero-initialised "
                     "head, a design")
    elif heads:
        notes.append(f"judged up to the head ({heads[0].name})")
    branches = profile.role("branch")
    zero = [u for u in branches if u.act_var == 0 and u.weight_grad_var != 0]
    if zero:
        design.update(zero_branches=len(zero), branches=len(branches))
        notes.append(f"{len(zero)} of {len(branches)} branches start at zero output ({zero[0].name} first) and their "
                     "weights get a gradient: a zero-initialised design, the stream passes them unchanged")
    return zero_head


def _branch_ratio(profile: Profile) -> float | None:
    """The largest ratio of a branch's output variance to the variance of the stream it joins
    (the previous block's output, or the stem's for the first block); None without both."""
    entering, ratios = None, []
    for unit in profile.units:
        if unit.role in ("stream", "stem"):
            entering = unit.act_var
        elif unit.role == "branch" and entering is not None:
            value = ratio(unit.act_var, entering)
            if not math.isnan(value):
                ratios.append(value)
    return max(ratios) if ratios else None


def _largest(units: Sequence[Unit], column: str) -> Unit | None:
    """The first unit with the largest finite value of `column`."""
    present = [u for u in units if _finite(getattr(u, column))]
    return max(present, key=lambda u: getattr(u, column)) if present else None


def _dead_or_saturated(profile: Profile):
    # a unit whose output is 0 everywhere is a zero-initialised design, not dead units
    dead = _largest([u for u in profile.units if u.act_var != 0], "dead_frac")
    if dead is not None and dead.dead_frac > DEAD_FRAC:
        return "dead", "{dead_frac:.0%} of {owner} units never fire for any {sample}", dict(
            dead_frac=dead.dead_frac, limit=DEAD_FRAC, owner=dead.owner, sample=profile.sample)
    saturated = _largest(profile.units, "saturated_frac")
    if saturated is not None and saturated.saturated_frac > SATURATED_FRAC:
        return "saturated", ("{saturated_frac:.0%} of {owner} activations sit in the flat part of the activation, "
                             "where the derivative is near 0"), dict(
            saturated_frac=saturated.saturated_frac, limit=SATURATED_FRAC, owner=saturated.owner)
    return None


def _collapsed(profile: Profile):
    judged = profile.judged
    last = judged[-1]
    if _finite(last.token_cosine) and last.token_cosine > RANK_COLLAPSE_COSINE:
        since = next(u for u in judged if _finite(u.token_cosine) and u.token_cosine > RANK_COLLAPSE_COSINE)
        return "rank-collapse", ("the tokens of a sequence point one way from {since} on (token_cosine "
                                 "{token_cosine:.4g} at {last}): the sequence is one vector"), dict(
            since=since.name, last=last.name, token_cosine=last.token_cosine, limit=RANK_COLLAPSE_COSINE)
    attn = _largest(profile.units, "attn_max")
    if attn is not None and attn.attn_max > ENTROPY_COLLAPSE_MAX:
        return "entropy-collapse", ("{name} puts {attn_max:.0%} of its weight on one key on average (entropy "
                                    "{attn_entropy:.3g} nats): the softmax is saturated and passes almost no "
                                    "gradient to queries and keys"), dict(
            name=attn.name, attn_max=attn.attn_max, attn_entropy=attn.attn_entropy, limit=ENTROPY_COLLAPSE_MAX)
    return None


def _trend(profile: Profile, activations_only: bool = False):
    """exploding / vanishing / stable from the judged units' gradient and activation trends: a
    gradient trend that a normalised residual stream's polynomial growth explains
    (`_polynomial_stream`) is no trend with depth."""
    word, template, numbers = _settled_trend(profile, activations_only)
    if word not in ("exploding", "vanishing") or activations_only or numbers.get("act_trend", 1.0) > profile.bound:
        return word, template, numbers
    growth = _polynomial_stream(profile)
    if growth is None:
        return word, template, numbers
    return "stable", ("gradient changes ×{entry_ratio:.2g} per entry over {depth} {noun}s, but inside each of the "
                      "{runs} runs of one shape it follows a power of the stream's variance, not a settled factor "
                      "per {noun} (at most ×{run_grad_ratio:.2g} where the stream grows ×{run_act_ratio:.2g}: "
                      "power {run_power:.2g}): a normalised residual stream grows additively, its gradient "
                      "polynomially (De & Smith 2020), and each of the {shape_changes} changes of shape restarts "
                      "it"), dict({k: v for k, v in numbers.items() if k == "bound" or k.startswith("act")},
                                  noun=profile.noun, **growth)


def _polynomial_stream(profile: Profile) -> dict | None:
    """The numbers showing the judged residual stream grows polynomially, not geometrically, in
    each run of blocks of one shape (None when it does not, or cannot be seen).

    Within a run of same-shape blocks, exploding or vanishing is a geometric trend: a settled
    per-block factor that compounds over depth. A stream whose branches end in a normalisation
    is not one. Each branch adds about a fixed variance whatever the stream holds, so Var(x_l) ≈
    Var(x_0) + l·V (THEORY.md "Residual streams", with V(q) ≈ const; De & Smith 2020); each
    block's Jacobian is then the identity plus a branch of relative size √(V/Var(x_l)), and the
    gradient over a run, Π (1 + c/Var(x_l)), is a power of the stream's growth: a per-block
    factor that fades as 1/l, not a settled one. A downsampling block's normalised shortcut
    starts the stream over at the next shape, and the jump there is the shape's (`_trend`'s
    derivation, He et al. 2015 §2.2), so reading a trend across stages compounds restarts: a
    BatchNorm resnet50 in training mode changes ×5.6e3 per entry over 16 blocks, from runs of
    ×5.6, ×11, ×33 and ×16.

    So a run (≥ 3 blocks, so a middle block tells the two shapes apart) is polynomial when its
    activation variance, between the run's ends, is nearer the straight line Var_0 + l·ΔV than
    the geometric one Var_0·r^l (in log), and its gradient nearer the power of that variance
    through the ends, g_0·(Var_l/Var_0)^-p, than the geometric g_0·s^l. Every run must be, and
    every jump between runs must be within the bound per entry or in squared norm per input
    (a shape change moves one reading against the other; only both together are depth)."""
    units = [u for u in profile.judged if u.role == "stream" and _finite(u.grad_var) and _finite(u.act_var)]
    if len(units) != len(profile.judged) or any(u.grad_var <= 0 or u.act_var <= 0 for u in units):
        return None
    runs: list[list[Unit]] = []
    for unit in units:
        same = runs and (runs[-1][-1].size == unit.size or not (_finite(unit.size) and _finite(runs[-1][-1].size)))
        if same:
            runs[-1].append(unit)
        else:
            runs.append([unit])
    if any(len(run) < 3 for run in runs):
        return None
    bound = profile.bound
    for above, below in zip(runs, runs[1:]):
        entry = ratio(above[-1].grad_var, below[0].grad_var)
        norm = entry * above[-1].size / below[0].size if _finite(above[-1].size) else entry
        if not (1 / bound <= entry <= bound or 1 / bound <= norm <= bound):
            return None
    widest = None
    for run in runs:
        acts = [math.log(u.act_var) for u in run]
        grads = [math.log(u.grad_var) for u in run]
        growth = acts[-1] - acts[0]
        if growth <= 0:
            return None
        steps = len(run) - 1
        start = run[0].act_var
        additive = [math.log(start + (run[-1].act_var - start) * i / steps) for i in range(len(run))]
        geometric = [acts[0] + growth * i / steps for i in range(len(run))]
        if _misfit(acts, additive) >= _misfit(acts, geometric):
            return None
        power = (grads[0] - grads[-1]) / growth
        powered = [grads[0] - power * (a - acts[0]) for a in acts]
        settled = [grads[0] + (grads[-1] - grads[0]) * i / steps for i in range(len(run))]
        if _misfit(grads, powered) >= _misfit(grads, settled):
            return None
        if widest is None or abs(grads[0] - grads[-1]) > abs(math.log(widest["run_grad_ratio"])):
            widest = dict(run_grad_ratio=math.exp(grads[0] - grads[-1]), run_act_ratio=math.exp(growth),
                          run_power=power)
    sizes = [u.size for u in units]
    changes = sum(a != b for a, b in zip(sizes, sizes[1:]) if _finite(a) and _finite(b))
    return dict(widest, runs=len(runs), shape_changes=changes,
                entry_ratio=ratio(units[0].grad_var, units[-1].grad_var), depth=len(units))


def _misfit(values: Sequence[float], line: Sequence[float]) -> float:
    """Sum of squared differences: how far `values` lie from a model's `line`."""
    return sum((v - m) ** 2 for v, m in zip(values, line))


def _settled_trend(profile: Profile, activations_only: bool = False):
    """exploding / vanishing / stable from the judged units' gradient and activation trends, a
    trend being a settled per-unit factor that the total bears out."""
    bound, noun = profile.bound, profile.noun
    grads = [u for u in profile.judged if _finite(u.grad_var)]
    acts = [u for u in profile.judged if _finite(u.act_var)]
    base = dict(bound=bound, noun=noun)
    if len(acts) >= 2:
        act_step = settled_rate([u.act_var for u in acts])
        act = dict(act_step=act_step, act_trend=compounded(act_step, len(acts) - 1),
                   act_ratio=ratio(acts[-1].act_var, acts[0].act_var), act_depth=len(acts),
                   first_act=acts[0].name, last_act=acts[-1].name)
        act_explodes = act["act_trend"] > bound and act["act_ratio"] > bound
    else:
        act, act_explodes = {}, False
    if activations_only or len(grads) < 2:
        if not act:
            return "stable", "{count} {noun} with a gradient or an activation: too few to see a trend", dict(
                count=max(len(grads), len(acts)), noun=noun)
        numbers = {**base, **act}
        if act_explodes:
            return "exploding", ("activations grow ×{act_step:.3g} per {noun}: {act_ratio:.2g}× larger at "
                                 "{last_act} than at {first_act}"), numbers
        if act["act_trend"] < 1 / bound and act["act_ratio"] < 1 / bound:
            return "vanishing", ("activations shrink ×{act_step:.3g} per {noun}: {act_ratio:.2g}× at {last_act} "
                                 "of what they are at {first_act}"), numbers
        if 1 / bound <= act["act_ratio"] <= bound and 1 / bound <= act["act_trend"] <= bound:
            return "stable", ("activations change ×{act_ratio:.2g} over {act_depth} {noun}s, within the "
                              "finite-width bound ×{bound:.2g}"), numbers
        return "stable", ("activations change ×{act_ratio:.2g} over {act_depth} {noun}s and ×{act_trend:.2g} "
                          "compounded from the deeper half's ×{act_step:.3g} per {noun}: not both beyond the "
                          "finite-width bound ×{bound:.2g} the same way"), numbers
    entry = [u.grad_var for u in grads]
    sizes = [u.size for u in grads]
    if not (all(_finite(n) and n > 0 for n in sizes) and len(set(sizes)) > 1):
        return _gradient_verdict(dict(base, **_gradient_numbers(grads, entry), **act), bound, act_explodes)
    # The judged units change shape (a ResNet's stages: channels ×2, positions ÷4). Through a
    # layer y = W·x with iid entries of variance σ²/n_in (n: values per input), each of the n_in
    # entries of Wᵀδ sums n_out terms of variance σ²/n_in·Var(δ), so ‖Wᵀδ‖² ≈ σ²·‖δ‖²: the
    # squared norm per input changes by σ² alone, the per-entry variance by σ²·n_out/n_in, the
    # shape too. Fan-in scaling (σ² = 1 after the gain, or a BatchNorm dividing by the output's
    # scale) conserves the norm; fan-out scaling (stride 1) the per-entry variance (THEORY.md's
    # backward recursion, σ'² = fan_out·Var(W)). He et al. 2015 §2.2 show the two designs differ
    # over a whole network only by the ratio of its first and last widths (c_2/d_L), not by depth,
    # and both train. So a shape change moves one reading against the other, and a trend is depth
    # only when both show it beyond the bound. (torchvision's resnet18 in training mode: ×16 in
    # norm, from the residual stream's growth inside each stage, but ×2 per entry.)
    per_input = [g * n / sizes[0] for g, n in zip(entry, sizes)]  # the first unit's own grad_var
    norm, per_entry = _gradient_numbers(grads, per_input), _gradient_numbers(grads, entry)
    shape = dict(shape_changes=sum(a != b for a, b in zip(sizes, sizes[1:])), entry_ratio=per_entry["grad_ratio"],
                 entry_step=per_entry["grad_step"], entry_trend=per_entry["grad_trend"],
                 norm_ratio=norm["grad_ratio"])
    ways = _direction(norm, bound), _direction(per_entry, bound)
    if ways == (1, 1):
        return "exploding", ("gradient grows ×{grad_step:.3g} per {noun} going down: {grad_ratio:.2g}× larger at "
                             "{first} than at {last} in squared norm per input, ×{entry_ratio:.2g} per entry"), dict(
            base, **norm, **shape, **act)
    if act_explodes:
        return "exploding", ("activations grow ×{act_step:.3g} per {noun}: {act_ratio:.2g}× larger at {last_act} "
                             "than at {first_act}"), dict(base, **norm, **shape, **act)
    if ways == (-1, -1):
        return "vanishing", ("gradient shrinks ×{grad_step:.3g} per {noun} going down: {first_grad:.2g} at {first} "
                             "against {last_grad:.2g} at {last} in squared norm per input, ×{entry_ratio:.2g} per "
                             "entry"), dict(base, **norm, **shape, **act)
    if ways[0] == 0:  # the norm is within the bound: read as on a stack of one shape
        return _gradient_verdict(dict(base, **norm, **shape, **act), bound, act_explodes)
    if ways[1] == 0:
        word, template, numbers = _gradient_verdict(dict(base, **per_entry, **shape, **act), bound, act_explodes)
        note = ("; in squared norm per input it changes ×{norm_ratio:.2g}: the {shape_changes} changes of shape "
                "along the {noun}s move one reading against the other, and only a trend both show is depth")
        return word, "per entry, " + template + note, numbers
    return "stable", ("gradient changes ×{norm_ratio:.2g} in squared norm per input and ×{entry_ratio:.2g} per entry "
                      "over {depth} {noun}s, opposite ways: the {shape_changes} changes of shape along the {noun}s, "
                      "not depth"), dict(base, depth=len(grads), **shape, **act)


def _gradient_numbers(grads: Sequence[Unit], values: Sequence[float]) -> dict:
    """The gradient trend's numbers over the units `grads` reading `values`: the settled
    per-unit factor going down, it compounded over the depth, and the total first to last."""
    depth = len(grads)
    settled = settled_rate(values)
    grad_step = math.inf if settled == 0 else 1 / settled  # per unit going down
    return dict(depth=depth, first=grads[0].name, last=grads[-1].name, first_grad=values[0], last_grad=values[-1],
                grad_step=grad_step, grad_trend=compounded(grad_step, depth - 1),
                grad_ratio=ratio(values[0], values[-1]))


def _direction(numbers: dict, bound: float) -> int:
    """1 when the settled factor compounded and the total are both beyond the bound growing
    going down, -1 both shrinking, 0 otherwise."""
    trend, total = numbers["grad_trend"], numbers["grad_ratio"]
    if trend > bound and total > bound:
        return 1
    if trend < 1 / bound and total < 1 / bound:
        return -1
    return 0


def _gradient_verdict(numbers: dict, bound: float, act_explodes: bool):
    """exploding / vanishing / stable on one reading of the gradient (`_gradient_numbers`)."""
    trend, total = numbers["grad_trend"], numbers["grad_ratio"]
    if _direction(numbers, bound) == 1:
        return "exploding", ("gradient grows ×{grad_step:.3g} per {noun} going down: {grad_ratio:.2g}× larger at "
                             "{first} than at {last}"), numbers
    if act_explodes:
        return "exploding", ("activations grow ×{act_step:.3g} per {noun}: {act_ratio:.2g}× larger at {last_act} "
                             "than at {first_act}"), numbers
    if _direction(numbers, bound) == -1:
        return "vanishing", ("gradient shrinks ×{grad_step:.3g} per {noun} going down: {first_grad:.2g} at {first} "
                             "against {last_grad:.2g} at {last}"), numbers
    trend_within = 1 / bound <= trend <= bound
    total_within = 1 / bound <= total <= bound
    if total_within and trend_within:
        return "stable", ("gradient variance changes ×{grad_ratio:.2g} over {depth} {noun}s, within the "
                          "finite-width bound ×{bound:.2g}"), numbers
    if trend_within:
        return "stable", ("gradient settles at ×{grad_step:.3g} per {noun} (×{grad_trend:.2g} over {depth} {noun}s, "
                          "within ×{bound:.2g}); the total ×{grad_ratio:.2g} comes from a transient near the "
                          "input"), numbers
    if total_within:
        return "stable", ("gradient variance changes ×{grad_ratio:.2g} over {depth} {noun}s, within the "
                          "finite-width bound ×{bound:.2g}; the deeper half's ×{grad_step:.3g} per {noun} "
                          "(×{grad_trend:.2g} compounded) does not last over the stack"), numbers
    return "stable", ("gradient changes ×{grad_ratio:.2g} over {depth} {noun}s but ×{grad_trend:.2g} compounded "
                      "from the deeper half's ×{grad_step:.3g} per {noun}, the other way: no one trend beyond "
                      "the finite-width bound ×{bound:.2g}"), numbers


# -- profiles of propagate runs (compare, sweep) --------------------------------------------------


def run_widths(params: dict) -> list[int]:
    """The widths a propagate run's signal passes through, input first: an MLP's sizes, a conv
    stack's channels (its positions share one kernel, so they do not average its randomness
    away), a transformer's width per block."""
    if params.get("arch") == "conv":
        return [params["channels"]] * (params["depth"] + 1)
    if params.get("arch") == "transformer":
        return [params["width"]] * (params["depth"] + 1)
    return list(params["sizes"])


def _value(x) -> float:
    return NAN if x is None else x


def propagate_profile(result) -> Profile:
    """The profile of a propagate run (MLP, conv or transformer): an MLP's or conv stack's
    layers, up to a last layer narrower than the one before (a head, as `modules_profile`
    reads one); a transformer's stream rows (one per block, judged) with each block's
    attention and MLP outputs as branches. The run's recorded overflow layer, if any, is where
    it overflowed."""
    params = result.params
    transformer = params.get("arch") == "transformer"
    where = result.forward_overflow_layer or result.backward_overflow_layer
    if where is None:
        columns = ("preact_var", "act_var", "grad_var")
        where = next((row.layer for row in result.per_layer() for name in columns
                      if getattr(row, name) is not None and not math.isfinite(getattr(row, name))), None)
    if transformer:
        units = tuple(_sublayer_unit(row, result.layers) for row in result.layers)
    else:
        layers = result.per_layer()
        sizes = run_widths(params)
        # a last layer narrower than the one before is a head: the gradient below it is
        # fan_out/fan_in of what it is above, a change of shape, not of depth
        head = len(layers) >= 3 and sizes[-1] < sizes[-2]
        units = tuple(Unit(f"layer {row.layer}", "head" if head and i == len(layers) - 1 else "layer", row.act_var,
                           row.grad_var, row.weight_grad_var, row.dead_frac, row.saturated_frac, row.effective_rank)
                      for i, row in enumerate(layers))
    judged_widths = run_widths(params)[:len(units) if any(u.role == "head" for u in units) else None]
    return Profile(units, drift_bound(judged_widths), noun="block" if transformer else "layer",
                   sample="token" if transformer else "input", dtype=params["dtype"],
                   overflow_at=None if where is None else f"layer {where}")


def _sublayer_unit(row, rows) -> Unit:
    block = f"block {row.layer}"
    if row.sublayer == "stream":
        # a block's weights: every matrix of its sublayers (0 only when none gets a gradient)
        grads = [r.weight_grad_var for r in rows if r.layer == row.layer and r.weight_grad_var is not None]
        return Unit(block, "stream", row.act_var, row.grad_var, max(grads) if grads else NAN,
                    effective_rank=row.effective_rank, token_cosine=row.token_cosine)
    name, owner = ((f"{block}'s attention", f"{block}'s attention output") if row.sublayer == "attn"
                   else (f"{block}'s MLP", f"{block}'s MLP"))
    return Unit(name, "branch", row.act_var, row.grad_var, _value(row.weight_grad_var), _value(row.dead_frac),
                _value(row.saturated_frac), row.effective_rank, row.token_cosine, _value(row.attn_max),
                _value(row.attn_entropy), owner=owner)


# -- profiles of probed modules -------------------------------------------------------------------


def _dims(shape: str) -> list[int]:
    return [int(d) for d in shape.split("x")] if shape and shape != "-" else []


def _per_input(shape: str) -> int:
    return math.prod(_dims(shape)[1:]) or 1


def _channels(shape: str, channels_last: bool) -> int:
    dims = _dims(shape)
    if len(dims) < 2:
        return 1
    return dims[-1] if channels_last or len(dims) == 2 else dims[1]


def _weighted(row) -> bool:
    """A module holding a weight matrix or kernel (Linear, Conv, Embedding…), not a norm's scale."""
    return _finite(getattr(row, "weight_std", NAN)) and "Norm" not in row.type


def repeated_blocks(rows: Sequence) -> list:
    """The rows of the repeated blocks: containers (modules with measured modules inside, not a
    plain Sequential/ModuleList) of one type whose names differ only by indices (`blocks.3`,
    `layer2.1`, `encoder_layer_7`); the outermost such family, and of those the largest. []
    when no family has two members."""
    names = [row.module for row in rows]
    families: dict[tuple[str, str], list] = {}
    for row in rows:
        if row.type in CONTAINERS or not re.search(r"\d", row.module) or getattr(row, "output_shape", "-") == "-":
            continue
        if not any(other.startswith(row.module + ".") for other in names):
            continue
        families.setdefault((re.sub(r"\d+", "#", row.module), row.type), []).append(row)
    families = {key: members for key, members in families.items() if len(members) >= 2}
    members = {row.module for family in families.values() for row in family}
    outermost = [family for family in families.values()
                 if not any(row.module.startswith(outer + ".") for row in family for outer in members)]
    return max(outermost, key=len) if outermost else []


def _probe_fields(rows: Sequence) -> bool:
    """Whether the rows say themselves what they are (probe's `kind`, `width`, `size`)."""
    return bool(rows) and all(hasattr(row, "kind") for row in rows)


def modules_profile(rows: Sequence, *, channels_last: bool = False, dtype: str = "float32",
                    zero_head: str | None = None) -> Profile:
    """The profile of probed modules (probe's ModuleStats, in execution order).

    Each row's kind ("block", "weighted", "norm", "other"), channels (`width`) and values per
    input (`size`) are read from the row when it has them, else inferred: repeated blocks by
    `repeated_blocks`, weighted modules as those with a weight_std that are not norms, channels
    from the output shape (dim 1, or the last with `channels_last` and for 2-D outputs).

    `zero_head` names a module known to start at zero output (its weights all zero): it and
    what follows it are the head, the rest is judged up to its input, and the reason notes the
    design. With two or more repeated blocks before it, their outputs are the stream, judged;
    rows with a `branch_var` are branches; weighted modules before the first block are the
    stem, after the last block the head. Otherwise the weighted modules, up to the head: the
    2-D outputs after the last conv-like (3-D or more) output, or in an all-2-D stack the last
    module when it is narrower than the one before. Other rows count for dead and saturated
    units only.

    Each unit keeps its grad_var (per entry) and its values per input (`size`): where the
    judged units change shape, the trend reads the gradient both per entry and as its squared
    norm per input (the first judged unit's grad_var × a unit's size / the first's), and only
    a trend both readings show is depth (see `_trend`). Each judged unit's channels are its
    width in the drift bound."""
    measured = [row for row in rows if row.output_shape != "-"]
    told = _probe_fields(measured)

    def width(row) -> int:
        return max(int(row.width), 1) if told else max(_channels(row.output_shape, channels_last), 1)

    def size(row) -> int:
        return max(int(row.size), 1) if told else _per_input(row.output_shape)

    def weighted(row) -> bool:
        return row.kind == "weighted" if told else _weighted(row)

    names = [row.module for row in measured]
    cut = names.index(zero_head) if zero_head in names and names.index(zero_head) > 0 else len(measured)
    body, after = measured[:cut], measured[cut:]
    blocks = ([row for row in body if row.kind == "block"] if told else repeated_blocks(body))
    if len(blocks) < 2:
        blocks = []
    role: dict[int, str] = {id(row): "head" if weighted(row) or row.module == zero_head else "inner"
                            for row in after}
    if blocks:
        block_ids = {id(row) for row in blocks}
        first_inside = next(i for i, row in enumerate(body)
                            if row.module == blocks[0].module or row.module.startswith(blocks[0].module + "."))
        last_block = max(i for i, row in enumerate(body) if id(row) in block_ids)
        for i, row in enumerate(body):
            if id(row) in block_ids:
                role[id(row)] = "stream"
            elif getattr(row, "branch_var", None) is not None:
                role[id(row)] = "branch"
            elif i < first_inside and weighted(row):
                role[id(row)] = "stem"
            elif i > last_block and weighted(row):
                role[id(row)] = "head"
    else:
        layers = [row for row in body if weighted(row)] or body
        head: list = []
        spatial = [i for i, row in enumerate(layers) if len(_dims(row.output_shape)) >= 3]
        if spatial:
            head = layers[spatial[-1] + 1:]
        elif len(layers) >= 3 and width(layers[-1]) < width(layers[-2]):
            head = layers[-1:]
        head_ids = {id(row) for row in head}
        for row in layers:
            role[id(row)] = "head" if id(row) in head_ids else "layer"
        for row in body:
            if getattr(row, "branch_var", None) is not None and id(row) not in role:
                role[id(row)] = "branch"
    judged = [row for row in measured if role.get(id(row)) in JUDGED_ROLES]
    units = []
    for row in measured:
        kind = role.get(id(row), "inner")
        units.append(Unit(row.module, kind, row.act_var, row.grad_var, row.weight_grad_var, row.dead_frac,
                          row.saturated_frac, row.effective_rank, _value(getattr(row, "token_cosine", None)),
                          _value(getattr(row, "attn_max", None)), _value(getattr(row, "attn_entropy", None)),
                          size=size(row)))
    return Profile(tuple(units), drift_bound([0] + [width(row) for row in judged]),
                   noun="block" if blocks else "layer", dtype=dtype, zero_head=zero_head if after else None)


def judge_modules(rows: Sequence, *, channels_last: bool = False, dtype: str = "float32",
                  zero_head: str | None = None) -> Verdict:
    """probe's verdict: `judge(modules_profile(rows, ...))`."""
    return judge(modules_profile(rows, channels_last=channels_last, dtype=dtype, zero_head=zero_head))
