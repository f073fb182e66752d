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

The package: `records` (the records, thresholds and shared arithmetic), `rules` (`judge`) and
`profiles` (profiles of propagate runs and probed modules). Every name is importable from here.
"""

from __future__ import annotations

from .profiles import (
    judge_modules,
    modules_profile,
    propagate_profile,
    repeated_blocks,
    run_widths,
)
from .records import (
    CONTAINERS,
    DEAD_FRAC,
    ENTROPY_COLLAPSE_MAX,
    JUDGED_ROLES,
    MIN_FACTOR,
    NAN,
    RANK_COLLAPSE_COSINE,
    ROLES,
    SATURATED_FRAC,
    SYMMETRY_RANK,
    VERDICTS,
    Profile,
    Unit,
    Verdict,
    compounded,
    drift_bound,
    finite,
    ratio,
    settled_rate,
)
from .rules import (
    judge,
)

__all__ = [
    "CONTAINERS",
    "DEAD_FRAC",
    "ENTROPY_COLLAPSE_MAX",
    "JUDGED_ROLES",
    "MIN_FACTOR",
    "NAN",
    "Profile",
    "RANK_COLLAPSE_COSINE",
    "ROLES",
    "SATURATED_FRAC",
    "SYMMETRY_RANK",
    "Unit",
    "VERDICTS",
    "Verdict",
    "compounded",
    "drift_bound",
    "finite",
    "judge",
    "judge_modules",
    "modules_profile",
    "propagate_profile",
    "ratio",
    "repeated_blocks",
    "run_widths",
    "settled_rate",
]
