"""`coordcheck`: mup's headline on the built-in MLP (SP grows with width after a step of Adam,
µP stays flat, both flat at init), the slope fit, and the command's outputs."""

import csv
import io
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli.cli import app
from initcli.coordcheck import ROW_COLUMNS, SUMMARY_COLUMNS, coordcheck, fit_slope, verdict
from initcli.errors import InitcliError

F64_EPS = float(np.finfo(np.float64).eps)
runner = CliRunner()
WIDTHS = (128, 256, 512, 1024, 2048)
# A learning rate at which SP's Adam update η·n reaches the init's O(1) scale inside 128…2048
# (at 1e-3 it only does past ~2048, and the slopes there are small: see the README's run).
HEADLINE = dict(widths=WIDTHS, steps=3, optimizer="adam", lr=1e-2, seeds=2, batch=8)


@pytest.fixture(scope="module")
def sp():
    return coordcheck(param="sp", **HEADLINE)


@pytest.fixture(scope="module")
def mup():
    return coordcheck(param="mup", **HEADLINE)


def _slopes(result, step):
    return {s.layer: s for s in result.slopes if s.step == step}


def test_step_zero_flat_under_both(sp, mup):
    for result in (sp, mup):
        for layer, s in _slopes(result, 0).items():
            if s.verdict == "zero":  # µP's readout starts at 0, as mup's examples
                assert layer == "readout" and result.params["param"] == "mup"
                continue
            assert s.verdict == "flat", (result.params["param"], layer, s)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_sp_hidden_grows_with_width_after_adam_steps(sp, step):
    slopes = _slopes(sp, step)
    # layer 1 is the input layer: its fan_in (the task's 2 features) does not grow, nor its update
    hidden = [slopes[str(layer)] for layer in range(2, sp.params["depths"][0] + 1)]
    assert all(s.verdict == "grows" for s in hidden[:1]), hidden
    best = max(hidden, key=lambda s: s.slope)
    assert best.slope > max(0.3, 3 * best.slope_se), hidden


@pytest.mark.parametrize("step", [1, 2])
def test_sp_output_grows_with_width(sp, step):
    readout = _slopes(sp, step)["readout"]
    assert readout.verdict == "grows" and readout.slope > max(0.5, 3 * readout.slope_se), readout


@pytest.mark.parametrize("step", [1, 2, 3])
def test_mup_flat_within_standard_error(mup, step):
    for layer, s in _slopes(mup, step).items():
        assert s.predicted == 0.0
        # flat: within 3 standard errors of µP's exponent 0, or below the finite-width tolerance
        assert abs(s.slope) <= max(3 * s.slope_se, 0.1), (layer, s)
        assert s.verdict == "flat"


def test_rows_cover_every_layer_step_width_seed(sp):
    depth = sp.params["depths"][0]
    assert len(sp.rows) == (depth + 1) * 4 * len(WIDTHS) * 2
    assert {r.layer for r in sp.rows} == {*map(str, range(1, depth + 1)), "readout"}
    assert all(math.isfinite(r.l1) and r.l1 > 0 for r in sp.rows)


def test_fit_slope_exact_power_law():
    x = [128, 256, 512, 1024]
    slope, se = fit_slope(x, [3.0 * v ** 0.7 for v in x])
    # log of 4 numbers and a sum of 4 products: a few float64 roundings of numbers ≤ 10
    assert slope == pytest.approx(0.7, abs=64 * F64_EPS)
    assert se <= 1e-12
    assert math.isnan(fit_slope([1, 2], [1, 2])[1])  # two points: no residual degrees of freedom
    assert verdict(0.05, math.nan) == "flat" and verdict(0.5, 0.01) == "grows" and verdict(-0.5, 0.01) == "shrinks"
    assert verdict(0.15, 0.06) == "flat"  # within 3 small standard errors
    assert verdict(0.5, 0.2) == "unclear"  # within 3 standard errors too large to call it flat


def test_depths_give_slopes_against_depth():
    result = coordcheck(widths=(64, 128), depths=(2, 4), steps=1, seeds=1, batch=8)
    against = {s.against for s in result.slopes}
    assert against == {"width", "depth"}
    depth_layers = {s.layer for s in result.slopes if s.against == "depth"}
    assert depth_layers == {"1", "2", "readout"}  # the layers every depth has


def test_residual_stack_with_preset_and_mup():
    result = coordcheck(widths=(64, 128), depths=(3,), steps=1, seeds=1, batch=8, param="mup", residual=True,
                        residual_init="depth-mup")
    assert result.params["residual_init"] == "depth-mup" and result.params["readout_init"] == "zero"
    assert all(math.isfinite(r.l1) for r in result.rows)


@pytest.mark.parametrize(("kwargs", "param"), [
    (dict(widths=(64,)), "widths"),
    (dict(widths=(64, 64)), "widths"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(lr=-1), "lr"),
    (dict(readout_init="ones"), "readout_init"),
    (dict(param="mu"), "param"),
    (dict(scheme="lsuv"), "scheme"),
    (dict(residual=True, residual_init="rezero"), "residual_init"),
])
def test_refusals(kwargs, param):
    options = dict(widths=(16, 32), seeds=1, steps=1, batch=4) | kwargs
    with pytest.raises(InitcliError) as err:
        coordcheck(**options)
    assert err.value.param == param


# -- the command --------------------------------------------------------------------------------

SMALL = ["coordcheck", "--widths", "32,64", "--seeds", "1", "--steps", "1", "--batch", "4"]


def test_cli_csv_rows_summary_and_json():
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, SMALL + ["-f", "csv"]).stdout)))
    assert tuple(rows[0]) == ROW_COLUMNS and len(rows) == 4 * 2 * 2
    summary = list(csv.DictReader(io.StringIO(runner.invoke(app, SMALL + ["-f", "csv", "--summary"]).stdout)))
    assert tuple(summary[0]) == SUMMARY_COLUMNS and len(summary) == 4 * 2
    document = json.loads(runner.invoke(app, SMALL + ["-f", "json", "--param", "mup"]).stdout)
    assert document["command"] == "coordcheck" and document["params"]["param"] == "mup"
    assert len(document["summary"]) == 8 and document["params"]["base_width"] == 32


def test_cli_table_and_bad_widths():
    result = runner.invoke(app, SMALL + ["-f", "table"])
    assert result.exit_code == 0 and "log-log slopes" in result.stdout
    assert runner.invoke(app, ["coordcheck", "--widths", "32,x"]).exit_code == 2
    assert runner.invoke(app, SMALL + ["--bias-std", "0.1"]).exit_code == 2
