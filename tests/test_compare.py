import math
from dataclasses import replace

import pytest

from initcli.compare import COMPARE_COLUMNS, VERDICTS, compare, drift_bound, judge
from initcli.errors import InitcliError
from initcli.propagation import LayerStats, PropagateResult


def verdict(scheme, activation, **options):
    options.setdefault("depth", 50)
    options.setdefault("batch", 256)
    return compare([scheme], [activation], **options).comparisons[0]


# -- every verdict, reached on a stack built for it ------------------------------------------


@pytest.mark.parametrize("scheme,activation,options,expected", [
    ("constant", "tanh", {}, "symmetric"),
    ("constant", "relu", {"value": 0.01}, "symmetric"),
    ("normal", "relu", {}, "overflow"),
    ("normal", "linear", {}, "overflow"),
    ("zeros", "relu", {}, "no-signal"),
    ("zeros", "tanh", {}, "no-signal"),
    ("zeros", "sigmoid", {}, "no-signal"),
    ("he-normal", "relu", {"width": 16}, "dead"),  # narrow deep ReLU nets collapse (Lu et al. 2019)
    ("normal", "tanh", {}, "saturated"),
    ("normal", "sigmoid", {}, "saturated"),
    ("he-normal", "tanh", {}, "exploding"),  # σ_w² = 2 puts tanh in the chaotic phase, χ > 1
    ("he-normal", "linear", {"depth": 20}, "exploding"),
    ("xavier-normal", "relu", {}, "vanishing"),  # χ = 1/2 per layer
    ("xavier-normal", "sigmoid", {}, "vanishing"),
    ("he-normal", "relu", {}, "stable"),
    ("xavier-normal", "tanh", {}, "stable"),
    ("xavier-normal", "linear", {}, "stable"),
    ("orthogonal", "linear", {}, "stable"),
])
def test_verdicts(scheme, activation, options, expected):
    row = verdict(scheme, activation, **options)
    assert row.verdict == expected, row.reason
    assert row.reason


def test_the_seed_story():
    # batch 128: every verdict is a trend over 50 layers, the same at 64, 128 or 256 inputs; each
    # pair is also checked alone, at batch 256, in test_verdicts
    result = compare(["zeros", "constant", "normal", "xavier-normal", "he-normal"], ["relu", "tanh"], depth=50,
                     batch=128)
    by_pair = {(r.scheme, r.activation): r.verdict for r in result.comparisons}
    assert by_pair[("zeros", "relu")] != "stable" and by_pair[("zeros", "tanh")] != "stable"
    assert by_pair[("constant", "relu")] == by_pair[("constant", "tanh")] == "symmetric"
    assert by_pair[("normal", "relu")] in ("exploding", "overflow")
    assert by_pair[("normal", "tanh")] == "saturated"
    assert by_pair[("he-normal", "relu")] == "stable" and by_pair[("xavier-normal", "relu")] == "vanishing"
    assert by_pair[("xavier-normal", "tanh")] == "stable" and by_pair[("he-normal", "tanh")] == "exploding"
    assert [(r.scheme, r.activation) for r in result.comparisons][:2] == [("zeros", "relu"), ("constant", "relu")]


def test_rows_have_the_documented_columns():
    row = compare(["he-normal"], ["relu"], depth=3, width=32, batch=16).rows()[0]
    assert list(row) == list(COMPARE_COLUMNS)
    assert row["depth"] == 3 and row["width"] == 32
    assert row["grad_ratio"] == pytest.approx(row["first_grad_var"] / row["last_grad_var"])


def test_every_pair_sees_the_same_inputs_and_seed():
    result = compare(["he-normal", "he-uniform"], ["relu"], depth=2, width=64, batch=32, seed=4)
    assert {run.params["seed"] for run in result.runs} == {4}
    # same seed, same scheme: the same run as a lone propagate
    from initcli import propagate

    assert result.runs[0].layers == propagate("he-normal", "relu", depth=2, width=64, batch=32, seed=4,
                                              theory=False).layers


def test_empty_lists_are_refused():
    with pytest.raises(InitcliError):
        compare([], ["relu"])


# -- thresholds, exactly at their edges ------------------------------------------------------


def _synthetic(grad_vars, act_vars=None, overrides=None):
    depth = len(grad_vars)
    act_vars = act_vars or [1.0] * depth
    layers = tuple(
        LayerStats(layer=i + 1, fan_in=256, fan_out=256, weight_std=0.1, preact_mean=0.0, preact_var=1.0,
                   act_mean=0.0, act_var=act_vars[i], grad_var=grad_vars[i], weight_grad_var=1.0,
                   saturated_frac=0.0, dead_frac=0.0, effective_rank=50.0, input_cosine=0.1)
        for i in range(depth))
    layers = tuple(replace(layer, **(overrides or {}).get(layer.layer, {})) for layer in layers)
    return PropagateResult({"sizes": [256] * (depth + 1), "dtype": "float32"}, layers)


def test_exponential_trend_beyond_the_bound():
    depth = 20
    bound = drift_bound([256] * (depth + 1))
    assert bound == pytest.approx(max(10, math.exp(3 * math.sqrt(5 * depth / 256))))
    inside = (bound * 0.9) ** (1 / (depth - 1))
    outside = (bound * 1.1) ** (1 / (depth - 1))
    assert judge(_synthetic([inside ** -i for i in range(depth)]))[0] == "stable"
    assert judge(_synthetic([outside ** -i for i in range(depth)]))[0] == "exploding"
    assert judge(_synthetic([outside ** i for i in range(depth)]))[0] == "vanishing"
    assert judge(_synthetic([1.0] * depth, [outside ** i for i in range(depth)]))[0] == "exploding"


def test_dead_and_saturated_need_more_than_half():
    flat = [1.0] * 5
    assert judge(_synthetic(flat, overrides={3: {"dead_frac": 0.5}}))[0] == "stable"
    assert judge(_synthetic(flat, overrides={3: {"dead_frac": 0.51}}))[0] == "dead"
    assert judge(_synthetic(flat, overrides={2: {"saturated_frac": 0.5}}))[0] == "stable"
    assert judge(_synthetic(flat, overrides={2: {"saturated_frac": 0.51}}))[0] == "saturated"


def test_symmetry_is_read_at_layer_one():
    flat = [1.0] * 5
    assert judge(_synthetic(flat, overrides={1: {"effective_rank": 1.0}}))[0] == "symmetric"
    assert judge(_synthetic(flat, overrides={1: {"effective_rank": 1.01}}))[0] == "stable"
    # a collapse deep in the stack is not symmetry
    assert judge(_synthetic(flat, overrides={5: {"effective_rank": 1.0}}))[0] == "stable"


def test_verdict_names_are_the_documented_ones():
    assert VERDICTS == ("symmetric", "overflow", "no-signal", "dead", "saturated", "rank-collapse",
                        "entropy-collapse", "exploding", "vanishing", "stable")
