"""The verdict rules over a `Profile`, in the package docstring's order: `judge`."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .records import (
    DEAD_FRAC,
    ENTROPY_COLLAPSE_MAX,
    RANK_COLLAPSE_COSINE,
    SATURATED_FRAC,
    SYMMETRY_RANK,
    Profile,
    Unit,
    Verdict,
    compounded,
    finite,
    ratio,
    settled_rate,
)

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
    present = [u for u in units if finite(getattr(u, column))]
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
    if finite(last.token_cosine) and last.token_cosine > RANK_COLLAPSE_COSINE:
        since = next(u for u in judged if finite(u.token_cosine) and u.token_cosine > RANK_COLLAPSE_COSINE)
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
    units = [u for u in profile.judged if u.role == "stream" and finite(u.grad_var) and finite(u.act_var)]
    if len(units) != len(profile.judged) or any(u.grad_var <= 0 or u.act_var <= 0 for u in units):
        return None
    runs: list[list[Unit]] = []
    for unit in units:
        same = runs and (runs[-1][-1].size == unit.size or not (finite(unit.size) and finite(runs[-1][-1].size)))
        if same:
            runs[-1].append(unit)
        else:
            runs.append([unit])
    if any(len(run) < 3 for run in runs):
        return None
    bound = profile.bound
    for above, below in zip(runs, runs[1:]):
        entry = ratio(above[-1].grad_var, below[0].grad_var)
        norm = entry * above[-1].size / below[0].size if finite(above[-1].size) else entry
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
    changes = sum(a != b for a, b in zip(sizes, sizes[1:]) if finite(a) and finite(b))
    return dict(widest, runs=len(runs), shape_changes=changes,
                entry_ratio=ratio(units[0].grad_var, units[-1].grad_var), depth=len(units))


def _misfit(values: Sequence[float], line: Sequence[float]) -> float:
    """Sum of squared differences: how far `values` lie from a model's `line`."""
    return sum((v - m) ** 2 for v, m in zip(values, line))


def _settled_trend(profile: Profile, activations_only: bool = False):
    """exploding / vanishing / stable from the judged units' gradient and activation trends, a
    trend being a settled per-unit factor that the total bears out."""
    bound, noun = profile.bound, profile.noun
    grads = [u for u in profile.judged if finite(u.grad_var)]
    acts = [u for u in profile.judged if finite(u.act_var)]
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
    if not (all(finite(n) and n > 0 for n in sizes) and len(set(sizes)) > 1):
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
