"""The one verdict rule set (initcli.verdicts) on profiles built for each verdict.

Thresholds come from theory: the finite-width drift bound max(10, exp(3·√(5·Σ 1/n_l))) (Hanin &
Rolnick 2018, THEORY.md "Finite width"), and mean-field's per-layer gradient factor χ = σ_w²·E[φ'²]
(He + ReLU: χ = 1; Xavier + ReLU on square layers: χ = 1/2).
"""

import math
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from initcli.verdicts import (
    VERDICTS,
    Profile,
    Unit,
    drift_bound,
    judge,
    judge_modules,
    modules_profile,
    repeated_blocks,
)

WIDTH, DEPTH = 64, 40
BOUND = drift_bound([WIDTH] * (DEPTH + 1))


def stack(grads, acts=None, width=WIDTH, overrides=None) -> Profile:
    """A plain stack's profile, layer 1 first."""
    acts = acts or [1.0] * len(grads)
    units = []
    for i, (grad, act) in enumerate(zip(grads, acts)):
        values = dict(act_var=act, grad_var=grad, weight_grad_var=1.0, dead_frac=0.0, saturated_frac=0.0,
                      effective_rank=30.0) | (overrides or {}).get(i + 1, {})
        units.append(Unit(f"layer {i + 1}", "layer", **values))
    return Profile(tuple(units), drift_bound([width] * (len(grads) + 1)))


def cited(reason: str) -> list[str]:
    """The numbers a reason cites after ×."""
    return re.findall(r"×([-+0-9.e]+|inf|nan)", reason)


def check_consistent(verdict) -> None:
    """The reason cites only numbers the rule compared, and the verdict is what those numbers
    say under the rules: an exponential trend needs the settled factor compounded over the
    depth and the total change beyond the bound, the same way."""
    numbers = verdict.numbers
    for token in cited(verdict.reason):
        assert any(token in (format(v, ".2g"), format(v, ".3g"), format(v, ".4g")) for v in numbers.values()), \
            (token, verdict.reason, numbers)
    bound = numbers.get("bound")
    if bound is None:
        return

    def beyond(trend: str, total: str, up: bool) -> bool:
        if trend not in numbers:
            return False
        if up:
            return numbers[trend] > bound and numbers[total] > bound
        return numbers[trend] < 1 / bound and numbers[total] < 1 / bound

    grad_up, grad_down = beyond("grad_trend", "grad_ratio", True), beyond("grad_trend", "grad_ratio", False)
    act_up, act_down = beyond("act_trend", "act_ratio", True), beyond("act_trend", "act_ratio", False)
    if verdict.verdict == "exploding":
        assert grad_up or act_up, verdict
    elif verdict.verdict == "vanishing":
        assert grad_down or (act_down and "grad_trend" not in numbers), verdict
    elif verdict.verdict == "stable":
        assert not (grad_up or grad_down or act_up), verdict
    claim = re.search(r"changes ×(\S+) over .*?, within the finite-width bound", verdict.reason)
    if claim:
        total = numbers.get("grad_ratio", numbers.get("act_ratio"))
        assert 1 / bound <= total <= bound, verdict


# -- the drift bound and the trend, from theory ------------------------------------------------


def test_drift_bound_is_three_finite_width_deviations():
    assert math.exp(3 * math.sqrt(5 * DEPTH / WIDTH)) == pytest.approx(BOUND)  # ≈ 200 at 40 × 64
    assert drift_bound([256] * 6) == 10.0  # shallow and wide: the 10× floor


@pytest.mark.parametrize("factor,expected", [(0.9, "stable"), (1.1, None)])
def test_exponential_trend_at_the_bound(factor, expected):
    step = (BOUND * factor) ** (1 / (DEPTH - 1))
    grows_down = judge(stack([step ** -i for i in range(DEPTH)]))
    shrinks_down = judge(stack([step ** i for i in range(DEPTH)]))
    acts_grow = judge(stack([1.0] * DEPTH, [step ** i for i in range(DEPTH)]))
    assert grows_down.verdict == (expected or "exploding"), grows_down.reason
    assert shrinks_down.verdict == (expected or "vanishing"), shrinks_down.reason
    assert acts_grow.verdict == (expected or "exploding"), acts_grow.reason
    for verdict in (grows_down, shrinks_down, acts_grow):
        check_consistent(verdict)
        assert verdict.count == DEPTH and verdict.units[0] == "layer 1" and verdict.units[-1] == f"layer {DEPTH}"


def test_mean_field_phases():
    # He + ReLU: χ = 1, the gradient keeps its variance; Xavier + ReLU: χ = 1/2 per layer going down
    he = judge(stack([1.0] * DEPTH))
    xavier = judge(stack([0.5 ** (DEPTH - 1 - i) for i in range(DEPTH)]))
    assert he.verdict == "stable" and xavier.verdict == "vanishing"
    assert xavier.numbers["grad_step"] == pytest.approx(0.5) and "×0.5 per layer" in xavier.reason
    check_consistent(he), check_consistent(xavier)


def test_a_transient_near_the_input_is_not_a_trend():
    # the gradient settles after a few layers (tanh under Xavier): the total is beyond the bound,
    # the settled factor is not
    grads = [1e-3, 1e-2, 1e-1] + [1.0] * (DEPTH - 3)
    verdict = judge(stack(grads))
    assert verdict.verdict == "stable" and "transient" in verdict.reason
    assert verdict.numbers["grad_ratio"] == pytest.approx(1e-3)
    check_consistent(verdict)


@given(st.lists(st.floats(-4, 4), min_size=2, max_size=60), st.lists(st.floats(-4, 4), min_size=2, max_size=60))
@settings(max_examples=200, deadline=None)
def test_every_trend_reason_agrees_with_its_numbers(log_grads, log_acts):
    n = min(len(log_grads), len(log_acts))
    verdict = judge(stack([10.0 ** g for g in log_grads[:n]], [10.0 ** a for a in log_acts[:n]]))
    assert verdict.verdict in ("exploding", "vanishing", "stable")
    check_consistent(verdict)


# -- every other verdict ----------------------------------------------------------------------


FLAT = [1.0] * 5


def test_dead_and_saturated_need_more_than_half():
    assert judge(stack(FLAT, overrides={3: {"dead_frac": 0.5}})).verdict == "stable"
    dead = judge(stack(FLAT, overrides={3: {"dead_frac": 0.51}}))
    assert dead.verdict == "dead" and dead.reason.startswith("51% of layer 3's units")
    assert judge(stack(FLAT, overrides={2: {"saturated_frac": 0.5}})).verdict == "stable"
    assert judge(stack(FLAT, overrides={2: {"saturated_frac": 0.51}})).verdict == "saturated"


def test_a_unit_with_zero_output_everywhere_has_no_dead_units_to_count():
    units = stack(FLAT).units
    zero_branch = Unit("blocks.1.branch", "branch", act_var=0.0, dead_frac=1.0, weight_grad_var=0.5)
    verdict = judge(Profile(units[:2] + (zero_branch,) + units[2:], 10.0))
    assert verdict.verdict == "stable", verdict.reason
    assert "1 of 1 branches start at zero output" in verdict.reason  # a zero-initialised branch, noted


def test_symmetry_is_read_on_the_first_unit():
    assert judge(stack(FLAT, overrides={1: {"effective_rank": 1.0}})).verdict == "symmetric"
    assert judge(stack(FLAT, overrides={1: {"effective_rank": 1.01}})).verdict == "stable"
    assert judge(stack(FLAT, overrides={5: {"effective_rank": 1.0}})).verdict == "stable"


def test_no_signal():
    assert judge(stack(FLAT, [1, 1, 1, 1, 0])).verdict == "no-signal"
    assert judge(stack([0.0, 1, 1, 1, 1])).verdict == "no-signal"
    weights = judge(stack(FLAT, overrides={1: {"weight_grad_var": 0.0}}))
    assert weights.verdict == "no-signal" and weights.reason.startswith("layer 1's weights get no gradient")


def test_overflow_names_where():
    verdict = judge(stack([1.0, 1.0, math.inf, math.nan], [1.0, 1.0, math.inf, math.nan]))
    assert verdict.verdict == "overflow" and "at layer 3" in verdict.reason


def stream(token_cosines, attn_max=0.2) -> Profile:
    units = []
    for i, cosine in enumerate(token_cosines, 1):
        units.append(Unit(f"block {i}'s attention", "branch", 0.5, 1.0, 1.0, effective_rank=20.0, attn_max=attn_max,
                          attn_entropy=1.5, owner=f"block {i}'s attention output"))
        units.append(Unit(f"block {i}", "stream", float(i), 1.0, 1.0, effective_rank=20.0, token_cosine=cosine))
    return Profile(tuple(units), 10.0, noun="block", sample="token")


def test_rank_and_entropy_collapse():
    assert judge(stream([0.5, 0.9, 0.99])).verdict == "stable"
    collapsed = judge(stream([0.5, 0.995, 0.999]))
    assert collapsed.verdict == "rank-collapse" and "from block 2 on" in collapsed.reason
    assert collapsed.units == ("block 1", "block 2", "block 3") and collapsed.count == 3
    assert judge(stream([0.1, 0.1], attn_max=0.9)).verdict == "stable"
    assert judge(stream([0.1, 0.1], attn_max=0.91)).verdict == "entropy-collapse"


def test_verdict_names():
    assert VERDICTS == ("symmetric", "overflow", "no-signal", "dead", "saturated", "rank-collapse",
                        "entropy-collapse", "exploding", "vanishing", "stable")


# -- probe's rows: the contradictions issue 21 saw, and the units theory judges ------------------


@dataclass(frozen=True)
class Row:
    """The ModuleStats columns the verdict reads."""

    module: str
    type: str
    output_shape: str
    act_var: float = 1.0
    grad_var: float = 1.0
    weight_std: float = math.nan
    weight_grad_var: float = math.nan
    dead_frac: float = 0.0
    saturated_frac: float = math.nan
    effective_rank: float = 30.0
    input_cosine: float = 0.1
    branch_var: float | None = None


def linear(name, width, grad, act=1.0, **more) -> Row:
    return Row(name, "Linear", f"64x{width}", act, grad, 0.05, 1e-3, **more)


def test_a_total_beyond_the_bound_is_never_called_within_it():
    # today: "gradient variance changes ×0.012 over the 4 weighted modules …, within the finite-width bound ×10"
    rows = [linear(str(i), 256, grad) for i, grad in enumerate([0.012, 1.0, 1.0, 1.0])]
    verdict = judge_modules(rows)
    check_consistent(verdict)
    assert verdict.numbers["grad_ratio"] == pytest.approx(0.012) and "within the finite-width bound ×10" not in verdict.reason


def test_a_per_layer_rate_the_total_does_not_bear_out_is_no_explosion():
    # today: "gradient grows ×135 per module going down: ×2.6 over the 4 weighted modules"
    rows = [linear(str(i), 256, grad) for i, grad in enumerate([2.6, 0.02, 135.0, 1.0])]
    verdict = judge_modules(rows)
    check_consistent(verdict)
    assert verdict.verdict == "stable", verdict.reason
    assert verdict.numbers["grad_step"] == pytest.approx(135) and verdict.numbers["grad_ratio"] == pytest.approx(2.6)


def test_the_verdict_reads_the_units_its_numbers_describe():
    # today: stable, read on a flat run of two same-shaped modules, while the summary showed a
    # 4.7e-8 first-to-last gradient ratio and a last act_var of 3.9e3
    widths = [100, 200, 200, 300, 400, 500, 600, 700]
    grads = [4.7e-8 ** ((7 - i) / 7) for i in range(8)]
    acts = [3.9e3 ** (i / 7) for i in range(8)]
    grads[2], acts[2] = grads[1], acts[1]
    rows = [linear(f"fc{i}", w, g, a) for i, (w, g, a) in enumerate(zip(widths, grads, acts))]
    verdict = judge_modules(rows)
    assert verdict.verdict in ("exploding", "vanishing"), verdict.reason
    assert verdict.units == tuple(f"fc{i}" for i in range(8)) and verdict.count == 8
    check_consistent(verdict)


def transformer_rows(depth=6, head_grad=1.0, head_act=1.0, stream_grad=1.0):
    """A pre-LN transformer's probe rows: inside each block the modules' scales change by
    orders of magnitude (a norm's output against the stream, a projection scaled down); the
    stream between blocks grows by one unit per block, as theory says of an unscaled pre-LN
    stream."""
    rows = [Row("embed", "Embedding", "8x16x64", 1.0, stream_grad, 1.0, 1e-3)]
    for i in range(depth):
        inner = 10.0 ** -(i + 2)  # the projection's gradient shrinks block after block
        rows += [Row(f"blocks.{i}.ln", "LayerNorm", "8x16x64", 1.0, stream_grad * 1e-3, 1.0, 1e-3),
                 Row(f"blocks.{i}.attn.qkv", "Linear", "8x16x192", 1.0, 0.3, 0.1, 1e-3),
                 Row(f"blocks.{i}.attn.proj", "Linear", "8x16x64", 1e-3, inner, 1e-4, 1e-3),
                 Row(f"blocks.{i}.attn", "Attention", "8x16x64", 0.5, stream_grad, math.nan, math.nan,
                     branch_var=0.5),
                 Row(f"blocks.{i}.mlp.fc1", "Linear", "8x16x256", 1.0, 0.2, 0.1, 1e-3),
                 Row(f"blocks.{i}.mlp.act", "GELU", "8x16x256", 0.4, 0.2, math.nan, math.nan, dead_frac=0.0,
                     saturated_frac=0.0),
                 Row(f"blocks.{i}.mlp.fc2", "Linear", "8x16x64", 0.5, stream_grad, 0.05, 1e-3),
                 Row(f"blocks.{i}", "Block", "8x16x64", float(i + 2), stream_grad, math.nan, math.nan)]
    rows += [Row("norm", "LayerNorm", "8x16x64", 1.0, stream_grad, 1.0, 1e-3),
             Row("head", "Linear", "8x10", head_act, head_grad, 0.0 if head_act == 0 else 0.02, 0.3)]
    return rows


def test_a_residual_stream_is_judged_between_blocks():
    rows = transformer_rows()
    verdict = judge_modules(rows, channels_last=True)
    assert verdict.verdict == "stable", verdict.reason
    assert verdict.units == tuple(f"blocks.{i}" for i in range(6)) and verdict.count == 6
    profile = modules_profile(rows, channels_last=True)
    assert [u.name for u in profile.role("branch")] == [f"blocks.{i}.attn" for i in range(6)]
    assert [u.name for u in profile.role("head")] == ["head"] and [u.name for u in profile.role("stem")] == ["embed"]
    assert profile.bound == drift_bound([0] + [64] * 6)  # the stream's channels, the last axis of (B, T, D)
    assert verdict.numbers["max_branch_ratio"] == 0.5  # block 0's attention adds 0.5 to the embedding's 1
    check_consistent(verdict)


def test_a_zero_initialised_head_is_a_design_not_no_signal():
    # the head's weights are 0: its output is 0 for every input and nothing flows back past it,
    # yet its own weights get a gradient, so it moves at the first step
    rows = transformer_rows(head_grad=1.0, head_act=0.0, stream_grad=0.0)
    verdict = judge_modules(rows, channels_last=True)
    assert verdict.verdict == "stable" and "zero-initialised head" in verdict.reason, verdict.reason
    # probe told which head starts at zero and sent a unit cotangent into its input
    told = judge_modules(transformer_rows(head_act=0.0), channels_last=True, zero_head="head")
    assert told.verdict == "stable" and "head starts at zero output" in told.reason, told.reason


def test_a_narrow_head_does_not_make_a_healthy_stack_vanish():
    # He + ReLU (χ = 1) over 12 layers of 256, then a 10-way head: the gradient below the head
    # is fan_out/fan_in = 10/256 of the head's, a change of shape, not of depth
    rows = [linear(f"fc{i}", 256, 10 / 256) for i in range(12)] + [linear("head", 10, 1.0)]
    verdict = judge_modules(rows)
    assert verdict.verdict == "stable" and verdict.units[-1] == "fc11", verdict.reason
    assert judge(stack([10 / 256] * 12 + [1.0])).verdict == "vanishing"  # were the head judged


def test_repeated_blocks_are_the_outermost_family_of_indexed_containers():
    def family(names_types):
        rows = [Row(name, kind, "2x8") for name, kind in names_types]
        return [row.module for row in repeated_blocks(rows)]

    resnet = [("conv1", "Conv2d")] + [(f"layer{s}.{b}.{leaf}", "Conv2d") for s in (1, 2) for b in (0, 1)
                                      for leaf in ("conv1", "conv2")]
    resnet += [(f"layer{s}.{b}", "BasicBlock") for s in (1, 2) for b in (0, 1)] + [("layer1", "Sequential"),
                                                                                     ("layer2", "Sequential")]
    assert family(resnet) == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    vit = [(f"encoder.layers.encoder_layer_{i}.mlp.0", "Linear") for i in range(3)]
    vit += [(f"encoder.layers.encoder_layer_{i}.mlp", "MLPBlock") for i in range(3)]
    vit += [(f"encoder.layers.encoder_layer_{i}", "EncoderBlock") for i in range(3)]
    assert family(vit) == [f"encoder.layers.encoder_layer_{i}" for i in range(3)]
    mobilenet = [("features.0.0", "Conv2d"), ("features.0", "Conv2dNormActivation")]
    mobilenet += [(f"features.{i}.block.0.0", "Conv2d") for i in (1, 2, 3)]
    mobilenet += [(f"features.{i}.block.0", "Conv2dNormActivation") for i in (1, 2, 3)]
    mobilenet += [(f"features.{i}", "InvertedResidual") for i in (1, 2, 3)]
    mobilenet += [("features.4.0", "Conv2d"), ("features.4", "Conv2dNormActivation")]
    assert family(mobilenet) == ["features.1", "features.2", "features.3"]
    assert family([(str(i), "Linear") for i in range(4)]) == []  # a Sequential of leaves has no blocks


@dataclass(frozen=True)
class TaggedRow(Row):
    """Rows that say what they are, as probe's ModuleStats do."""

    kind: str = "other"
    width: int = 1
    size: int = 1


def test_rows_that_say_their_kind_are_taken_at_their_word():
    rows = [TaggedRow(f"s{i}", "Custom", "4x32", 1.0, 1.0, math.nan, math.nan, kind="block", width=32, size=32)
            for i in range(3)]
    rows.append(TaggedRow("out", "Linear", "4x32", 1.0, 1.0, 0.1, 1.0, kind="weighted", width=32, size=32))
    profile = modules_profile(rows)
    assert [u.name for u in profile.judged] == ["s0", "s1", "s2"] and profile.noun == "block"
    assert [u.name for u in profile.role("head")] == ["out"]


# resnet18's stages at 64×64 inputs: (channels, side) of each stage's output, two blocks each
STAGES = [(64, 16), (128, 8), (256, 4), (512, 2)]


def staged_rows(norms, extra: float = 1.0, stages=STAGES, blocks: int = 2):
    """A ResNet's block rows, layer1.0 first, each row's gradient given as its squared norm per
    input (`norms`, in the blocks' order) times `extra` per block going down; grad_var, the
    per-entry variance, is that norm over the row's values per input."""
    rows, i = [], 0
    depth = len(stages) * blocks
    for s, (channels, side) in enumerate(stages, 1):
        for b in range(blocks):
            size = channels * side * side
            norm = norms[i] * extra ** (depth - 1 - i)
            rows.append(TaggedRow(f"layer{s}.{b}", "BasicBlock", f"8x{channels}x{side}x{side}", 1.0, norm / size,
                                  math.nan, math.nan, kind="block", width=channels, size=size))
            i += 1
    return rows + [TaggedRow("fc", "Linear", "8x10", 1.0, 1.0, 0.05, 1e-3, kind="weighted", width=10, size=10)]


# Through y = W·x with iid entries of variance σ²/n_in (n: values per input), ‖Wᵀδ‖² ≈ σ²·‖δ‖²:
# the squared norm per input changes by σ² (depth), the per-entry variance by σ²·n_out/n_in.
# resnet18 in training mode: the norm halves per block going up inside a stage (the stream grows
# there, De & Smith 2020) and is kept at each stage change (a BatchNorm makes σ² = 1), so it
# falls ×16 over 8 blocks while per entry (÷ values per input, halved at each stage) it is ×2.
RESNET_NORMS = [16, 8, 8, 4, 4, 2, 2, 1]


def test_a_stage_change_is_shape_not_depth():
    rows = staged_rows(RESNET_NORMS)
    bound = drift_bound([0] + [c for c, _ in STAGES for _ in range(2)])
    assert bound == 10.0
    verdict = judge_modules(rows)
    # today: exploding, "gradient grows ×1.59 per block going down: 16× larger at layer1.0 than at layer4.1"
    assert verdict.verdict == "stable", verdict.reason
    assert verdict.units == tuple(f"layer{s}.{b}" for s in range(1, 5) for b in range(2))
    assert verdict.numbers["grad_ratio"] == pytest.approx(2.0)  # per entry: 16/16384 against 1/2048
    assert verdict.numbers["norm_ratio"] == pytest.approx(16.0) and verdict.numbers["shape_changes"] == 3
    check_consistent(verdict)


@pytest.mark.parametrize("extra, expected", [(4.0, "exploding"), (0.25, "vanishing")])
def test_a_trend_on_top_of_stage_changes_is_still_depth(extra, expected):
    # ×4 per block more going down (or ÷4): ×4⁷ ≈ 1.6e4 in both readings, far beyond ×10
    verdict = judge_modules(staged_rows(RESNET_NORMS, extra))
    assert verdict.verdict == expected, verdict.reason
    numbers = verdict.numbers
    assert numbers["grad_ratio"] == pytest.approx(16 * extra ** 7)  # the norm, as read on one shape
    assert numbers["entry_ratio"] == pytest.approx(2 * extra ** 7)
    check_consistent(verdict)


def test_a_plain_stack_of_stages_keeping_its_gradient_norm_is_stable():
    # a plain fan-in (or BatchNorm) stack keeps the norm at every change of shape (σ² = 1); per
    # entry the gradient then changes by the values per input alone: channels ×2 and positions
    # ÷16 per stage, 65536 → 128 values per input, ×1/512 against a bound of ×26
    stages = [(16, 64), (32, 16), (64, 4), (128, 1)]
    verdict = judge_modules(staged_rows([1.0] * 8, stages=stages))
    assert verdict.verdict == "stable", verdict.reason
    assert verdict.numbers["grad_ratio"] == pytest.approx(1.0)
    assert verdict.numbers["entry_ratio"] == pytest.approx(128 / 65536)
    assert verdict.numbers["entry_ratio"] < 1 / verdict.numbers["bound"]
    check_consistent(verdict)



# A BatchNorm ResNet's stream inside a stage (De & Smith 2020; THEORY.md "Residual streams"):
# each normalised branch adds about a fixed variance, Var_l = Var_0 + l·ΔV, and the gradient
# per entry falls as a power of it (1/Var_l here), a per-block factor fading like 1/l; each
# downsampling block starts over. resnet50 measured in training mode: Var 0.68 → 2.41 over
# layer3's 6 blocks, +0.35 a block.
STREAM_START, STREAM_STEP = 0.7, 0.35


def stream_rows(grad, act=lambda b: STREAM_START + STREAM_STEP * b, blocks: int = 6):
    """Block rows over resnet18's four stage shapes (`STAGES`), `blocks` per stage, layer1.0
    first: block b of a stage has act_var `act(b)` and per-entry grad_var `grad(b, act(b))`
    times 1 at every stage change (per entry kept; in squared norm per input it then halves
    going up, the values per input halving), plus an fc head."""
    stages, carried = [], 1.0  # the per-entry gradient entering the stage above, going down
    for s, (channels, side) in reversed(list(enumerate(STAGES, 1))):
        size = channels * side * side
        scale = carried / grad(blocks - 1, act(blocks - 1))
        stages.insert(0, [TaggedRow(f"layer{s}.{b}", "Bottleneck", f"8x{channels}x{side}x{side}", act(b),
                                    scale * grad(b, act(b)), math.nan, math.nan, kind="block", width=channels,
                                    size=size) for b in range(blocks)])
        carried = stages[0][0].grad_var
    head = TaggedRow("fc", "Linear", "8x10", 1.0, 1.0, 0.05, 1e-3, kind="weighted", width=10, size=10)
    return [row for stage in stages for row in stage] + [head]


def test_a_polynomially_growing_stream_in_stages_is_stable():
    verdict = judge_modules(stream_rows(lambda b, var: 1 / var))
    # each stage: ×(0.7 + 5·0.35)/0.7 = ×3.5 per entry; four compound to ×150 per entry and
    # ×1200 in squared norm per input, against a bound of ×17 (24 blocks of widths 64…512)
    bound = drift_bound([0] + [c for c, _ in STAGES for _ in range(6)])
    assert 16 < bound < 17
    # today: exploding, "gradient grows ×1.34 per block going down: 1.2e+03× larger at layer1.0 …"
    assert verdict.verdict == "stable", verdict.reason
    numbers = verdict.numbers
    assert numbers["entry_ratio"] == pytest.approx(3.5 ** 4) and numbers["runs"] == 4
    assert numbers["run_grad_ratio"] == pytest.approx(3.5) and numbers["run_power"] == pytest.approx(1.0)
    assert "De & Smith 2020" in verdict.reason and len(verdict.units) == 24
    check_consistent(verdict)


@pytest.mark.parametrize("grad, act, expected", [
    # a settled factor per block going down inside each stage on the same additive stream:
    # ×1.6⁵ ≈ ×10 a stage, ×1.6²⁰ ≈ 1.2e4 over four
    (lambda b, var: 1.6 ** -b, None, "exploding"),
    (lambda b, var: 1.6 ** b, None, "vanishing"),
    # a stream growing geometrically (variance ×2 a block, unnormalised), the gradient its inverse:
    # geometric in depth both ways, whatever the power
    (lambda b, var: 1 / var, lambda b: STREAM_START * 2 ** b, "exploding"),
])
def test_a_geometric_trend_inside_stages_is_still_depth(grad, act, expected):
    rows = stream_rows(grad) if act is None else stream_rows(grad, act)
    verdict = judge_modules(rows)
    assert verdict.verdict == expected, verdict.reason
    check_consistent(verdict)

# -- compare's profiles ----------------------------------------------------------------------


def test_compare_judges_a_transformer_on_its_stream_with_branches_apart():
    from initcli.compare import compare, verdict
    from initcli.verdicts import propagate_profile

    result = compare(["constant", "xavier-normal"], ["gelu"], arch="transformer", depth=3, width=16, seq_len=8,
                     batch=8)
    profile = propagate_profile(result.runs[1])
    assert [u.name for u in profile.judged] == ["block 1", "block 2", "block 3"]
    assert [u.name for u in profile.role("branch")] == [f"block {i}'s {part}" for i in (1, 2, 3)
                                                        for part in ("attention", "MLP")]
    assert verdict(result.runs[1]).units == ("block 1", "block 2", "block 3")
    symmetric = verdict(result.runs[0])  # read on block 1's attention output, each token an input
    assert symmetric.verdict == "symmetric" and symmetric.reason.startswith("block 1's attention output units")


def test_compare_judges_an_mlp_up_to_a_narrow_head():
    from initcli.compare import compare

    # He + ReLU is χ = 1; below a 4-wide head the gradient is 4/64 of the head's (fan_out/fan_in)
    row = compare(["he-normal"], ["relu"], sizes=[64] * 13 + [4], batch=256).comparisons[0]
    assert row.verdict == "stable" and row.reason.endswith("judged up to the head (layer 13)"), row.reason
