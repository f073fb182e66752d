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
from initcli.coordcheck import MODULE_ROW_COLUMNS, ROW_COLUMNS, SUMMARY_COLUMNS, coordcheck, fit_slope, verdict
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


# -- the user's own torch model (--module MODULE:CALLABLE --width-arg NAME) -------------------------

MODELS = str(__import__("pathlib").Path(__file__).with_name("coordcheck_models.py"))
F32_EPS = float(np.finfo(np.float32).eps)
# widths 64…1024, lr 1e-2: SP's first Adam step moves a hidden unit by about lr·n·mean|a|, from
# 0.6 to 10 times the init's O(1) scale across these widths (see the headline runs above)
TORCH = dict(widths=(64, 128, 256, 512, 1024), steps=2, optimizer="adam", lr=1e-2, seeds=2, batch=8)


def _module(name, **kwargs):
    from initcli.coordcheck import coordcheck_module

    return coordcheck_module(f"{MODELS}:{name}", width_arg="width", **(TORCH | kwargs))


@pytest.fixture(scope="module")
def torch_sp():
    pytest.importorskip("torch")
    return _module("mlp")


def test_torch_sp_hidden_grows_after_one_adam_step_and_is_flat_at_init(torch_sp):
    slopes = {(s.layer, s.step): s for s in torch_sp.slopes}
    # modules of mlp(width): 0 input Linear, 1 ReLU, 2 hidden Linear, 3 ReLU, 4 readout
    assert {s.layer for s in torch_sp.slopes} == {"0", "1", "2", "3", "4"}
    assert slopes["2", 0].verdict == "flat", slopes["2", 0]
    hidden = slopes["2", 1]
    assert hidden.verdict == "grows" and hidden.slope > max(0.2, 3 * hidden.slope_se), hidden
    assert slopes["4", 1].verdict == "grows"  # the output too
    # the input layer's fan_in (2 features) does not grow, nor does its update
    assert slopes["0", 1].verdict == "flat"
    assert all(s.predicted is None for s in torch_sp.slopes)  # no theory for an arbitrary model
    p = torch_sp.params
    assert p["inputs"] == "task" and p["targets"] == "task" and p["param_groups"] == "one" and p["batch"] == 8
    assert len(torch_sp.rows) == 5 * 3 * 5 * 2 and all(r.depth is None for r in torch_sp.rows)


def test_torch_mup_groups_keep_every_module_flat():
    result = _module("mup_mlp")
    assert result.params["param_groups"] == "model"
    for s in result.slopes:
        if s.verdict == "zero":  # the readout starts at 0, as mup's examples
            assert s.layer == "readout" and s.step == 0
            continue
        assert s.verdict == "flat", s


def test_torch_path_reproduces_builtin_network_bytes_for_bytes():
    """The built-in network's weights in torch modules, trained by torch's Adam on the same
    batch, give the built-in rows: both paths compute the same thing."""
    pytest.importorskip("torch")
    kw = dict(widths=(64, 256), steps=2, lr=1e-2, seeds=1, batch=8, dtype="float64")
    builtin = coordcheck(depths=(2,), **kw)
    mine = _module("builtin", kwargs={"seed": 0}, **kw)
    names = {"0": "1", "2": "2", "4": "readout"}
    torch_l1 = {(names[r.layer], r.step, r.width): r.l1 for r in mine.rows if r.layer in names}
    assert len(torch_l1) == len(builtin.rows)
    for row in builtin.rows:
        # a dot product of n float64 terms rounds within n·eps relative (Higham 2002, §3.1), a few
        # such per step in the forward, backward and Adam update
        assert torch_l1[row.layer, row.step, row.width] == pytest.approx(row.l1, rel=16 * row.width * F64_EPS), row


def test_torch_runs_are_reproducible_and_seeded_per_point():
    pytest.importorskip("torch")
    import torch

    first = _module("mlp", widths=(16, 32), seeds=2)
    torch.manual_seed(1234)  # whatever ran before: each point seeds torch itself
    torch.rand(7)
    again = _module("mlp", widths=(16, 32), seeds=2)
    assert first.rows == again.rows
    by_seed = {}
    for r in first.rows:
        by_seed.setdefault(r.seed, []).append(r.l1)
    assert by_seed[0] != by_seed[1]


def test_torch_input_shape_and_example_inputs():
    pytest.importorskip("torch")
    shaped = _module("mlp", widths=(16, 32), seeds=1, steps=1, input_shape=(5,), kwargs={"inputs": 5, "outputs": 3})
    assert shaped.params["inputs"] == "input_shape" and shaped.params["input_shape"] == [5]
    assert shaped.params["targets"] == "task"  # a (batch, outputs) output fits the task's targets
    example = _module("with_example", widths=(16, 32), seeds=1, steps=1)
    assert example.params["inputs"] == "example" and example.params["batch"] == 16
    assert all(math.isfinite(r.l1) for r in example.rows)


def test_torch_gaussian_targets_for_other_output_shapes():
    pytest.importorskip("torch")
    result = _module("mlp", widths=(16, 32), seeds=1, steps=1, input_shape=(3, 4), kwargs={"inputs": 4})
    assert result.params["targets"] == "gaussian"  # output (batch, 3, 1): not the task's shape


@pytest.mark.parametrize(("name", "kwargs", "param"), [
    ("mlp", dict(width_arg=None), "width_arg"),
    ("mlp", dict(width_arg="not an identifier"), "width_arg"),
    ("no_width", {}, "width_arg"),  # the callable takes no `width`
    ("not_a_module", {}, "module"),
    ("frozen", {}, "module"),  # nothing to train
    ("mup_mlp", dict(optimizer="sgd"), "module"),  # its param groups refuse sgd
    ("mlp", dict(kwargs={"width": 3}), "kwargs"),
    ("mlp", dict(kwargs={"depth": "x"}), "kwargs"),  # the callable fails with these
    ("mlp", dict(kwargs="{not json"), "kwargs"),
    ("mlp", dict(input_shape=(7,)), "input_shape"),  # mlp takes 2 features
    ("mlp", dict(widths=(16,)), "widths"),
    ("mlp", dict(lr=0), "lr"),
    ("mlp", dict(lr=3e38), "lr"),  # Adam's first step lr/(1 − 0.9) is past float32's 3.4e38
    ("mlp", dict(lr=1e39, optimizer="sgd"), "lr"),
])
def test_torch_refusals(name, kwargs, param):
    pytest.importorskip("torch")
    from initcli.coordcheck import coordcheck_module

    options = TORCH | dict(widths=(8, 16), seeds=1, steps=1, width_arg="width") | kwargs
    with pytest.raises(InitcliError) as err:
        coordcheck_module(f"{MODELS}:{name}", **options)
    assert err.value.param == param, err.value
    assert "\n" not in str(err.value)


def test_torch_overflow_is_a_result():
    pytest.importorskip("torch")
    result = _module("mlp", widths=(8, 16), seeds=1, steps=2, lr=3.4e37)  # the largest Adam lr torch holds
    assert {s.verdict for s in result.slopes if s.step == 2} == {"overflow"}


@pytest.mark.parametrize("target", ["nope", "no_such_module_here:f", f"{MODELS}:nothing", f"{MODELS}:_layers_x"])
def test_torch_bad_module_target(target):
    pytest.importorskip("torch")
    from initcli.coordcheck import coordcheck_module

    with pytest.raises(InitcliError) as err:
        coordcheck_module(target, width_arg="width", widths=(8, 16), seeds=1, steps=1)
    assert err.value.param == "module" and "\n" not in str(err.value)


MODULE_CLI = ["coordcheck", "--module", f"{MODELS}:mlp", "--width-arg", "width", "--widths", "16,32", "--seeds", "1",
              "--steps", "1", "--batch", "4"]


def test_cli_module_csv_json_and_table():
    pytest.importorskip("torch")
    env = {"COLUMNS": "200"}
    result = runner.invoke(app, MODULE_CLI + ["-f", "csv"], env=env)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    # a user's model has its own depth: no depth column, which would always be empty
    assert tuple(rows[0]) == MODULE_ROW_COLUMNS and len(rows) == 5 * 2 * 2 and "depth" not in rows[0]
    document = json.loads(runner.invoke(app, MODULE_CLI + ["-f", "json", "--kwargs", '{"depth": 3}'], env=env).stdout)
    assert document["params"]["kwargs"] == {"depth": 3} and document["params"]["module"].endswith(":mlp")
    assert {s["layer"] for s in document["summary"]} == {str(i) for i in range(7)}
    table = runner.invoke(app, MODULE_CLI + ["-f", "table"], env=env)
    assert table.exit_code == 0 and "log-log slopes" in table.stdout
    assert "· 1 seed\n" in table.stdout and "1 seeds" not in table.stdout
    assert "depth" not in document["rows"][0] and "depth" not in document["summary"][0]
    # one learning rate for every parameter: said on stderr, since a µP model would need its own
    assert "one learning rate" in result.stderr


PROBE_MODELS = str(__import__("pathlib").Path(__file__).with_name("probe_models.py"))


def test_torch_repeated_blocks_are_rows():
    pytest.importorskip("torch")
    from initcli.coordcheck import coordcheck_module

    result = coordcheck_module(f"{PROBE_MODELS}:residual_blocks", width_arg="width", widths=(16, 32), seeds=1,
                               steps=1, batch=8)
    layers = list(dict.fromkeys(r.layer for r in result.rows))
    # the residual stream after each block, right after the block's own leaves
    assert layers == ["0", "1.fc", "1", "2.fc", "2", "3.fc", "3", "4"]


def test_torch_mup_set_base_shapes_groups_match_explicit_mup_groups():
    pytest.importorskip("torch")
    # MuAdam's rates read from mup's infshape (hidden matrices lr/m, the rest lr) are the rates
    # MupMLP states through initcli_param_groups: the same weights train to the same numbers
    explicit = _module("mup_mlp", widths=(64, 128), seeds=1, steps=2)
    shaped = coordcheck_module_from(PROBE_MODELS, "mup_shaped", widths=(64, 128), seeds=1, steps=2)
    assert shaped.params["param_groups"] == "mup" and explicit.params["param_groups"] == "model"
    assert shaped.rows == explicit.rows
    result = runner.invoke(app, ["coordcheck", "--module", f"{PROBE_MODELS}:mup_shaped", "--width-arg", "width",
                                 "--widths", "64,128", "--seeds", "1", "--steps", "1", "-f", "csv"])
    assert result.exit_code == 0 and "one learning rate" not in result.stderr


def coordcheck_module_from(path, name, **kwargs):
    from initcli.coordcheck import coordcheck_module

    return coordcheck_module(f"{path}:{name}", width_arg="width", **(TORCH | kwargs))


@pytest.mark.parametrize("extra", [
    ["--param", "mup"], ["--depths", "2,3"], ["--scheme", "xavier-normal"], ["--residual"],
])
def test_cli_module_refuses_builtin_options(extra):
    result = runner.invoke(app, MODULE_CLI + extra)
    assert result.exit_code == 2 and "does not apply with --module" in result.output


@pytest.mark.parametrize("extra", [["--width-arg", "width"], ["--kwargs", "{}"], ["--input-shape", "4"]])
def test_cli_module_options_need_module(extra):
    result = runner.invoke(app, SMALL + extra)
    assert result.exit_code == 2 and "only applies with --module" in result.output


def test_cli_module_bad_input_is_one_line():
    pytest.importorskip("torch")
    for args in (["--width-arg", "size"], ["--input-shape", "7"]):
        result = runner.invoke(app, MODULE_CLI[:4] + args + MODULE_CLI[6:])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    no_arg = runner.invoke(app, ["coordcheck", "--module", f"{MODELS}:mlp", "--widths", "16,32"])
    assert no_arg.exit_code == 2 and "--width-arg" in no_arg.output
