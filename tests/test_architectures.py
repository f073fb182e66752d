"""Beyond the plain MLP: LSUV, orthogonal/identity/delta-orthogonal, residual blocks,
LayerNorm, unequal widths and the Jacobian spectrum (issue 6)."""

import json
import math

import numpy as np
import pytest
from finite_differences import numeric_gradient
from typer.testing import CliRunner

from initcli.activations import ACTIVATION_NAMES, get_activation
from initcli.cli import app
from initcli.engine import Architecture, backward, build_stack, forward
from initcli.errors import InitcliError
from initcli.jacobian import JACOBIAN_COLUMNS, jacobian
from initcli.propagation import propagate
from initcli.schemes import make_init

ARCHITECTURES = [
    Architecture(),
    Architecture(norm="layer"),
    Architecture(residual_scale=0.7),
    Architecture(residual_scale=0.5, block=2),
    Architecture(residual_scale=1.0, block=2, norm="layer"),
]


def _loss(stack, act, x, g):
    """The network written out directly, as an independent reference for the engine."""
    arch = stack.arch
    a = block_input = x
    for index, (w, b) in enumerate(zip(stack.weights, stack.biases), start=1):
        if arch.opens_block(index):
            block_input = a
        h = a @ w.T + b
        if arch.norm == "layer":
            h = (h - h.mean(axis=1, keepdims=True)) / np.sqrt(h.var(axis=1, keepdims=True) + 1e-5)
        branch = act.fn(h)
        a = block_input + arch.residual_scale * branch if arch.closes_block(index) else branch
    return float(np.sum(g * a))


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=repr)
@pytest.mark.parametrize("name", ["relu", "tanh", "gelu"])
def test_backward_matches_finite_differences(arch, name):
    act = get_activation(name)
    stack = build_stack(make_init("xavier-normal"), (5,) * 5, bias_std=0.3, seed=2, dtype="float64", arch=arch)
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    grads = backward(stack, forward(stack, act, x), g)
    for layer, (w, b) in enumerate(zip(stack.weights, stack.biases)):
        for target, analytic in ((w, grads[layer][0]), (b, grads[layer][1])):
            numeric = numeric_gradient(lambda: _loss(stack, act, x, g), target)
            np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_layer_norm_backward_for_every_activation(name):
    act = get_activation(name)
    stack = build_stack(make_init("he-normal"), (6, 6, 6), seed=1, dtype="float64", arch=Architecture(norm="layer"))
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    analytic = backward(stack, forward(stack, act, x), g)[0][0]
    numeric = numeric_gradient(lambda: _loss(stack, act, x, g), stack.weights[0])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


# -- LSUV -----------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("tol", [0.05, 0.01])
def test_lsuv_gives_unit_preactivation_variance(activation, tol):
    result = propagate("lsuv", activation, depth=12, width=256, batch=256, lsuv_tol=tol)
    for layer in result.layers:
        assert abs(layer.preact_var - 1) <= tol  # on the very batch it calibrated on
    assert result.lsuv_iterations is not None and len(result.lsuv_iterations) == 12
    assert all(0 <= n <= 10 for n in result.lsuv_iterations)
    assert "lsuv_iterations" in result.rows()[0]


def test_lsuv_refuses_a_layer_without_variance():
    with pytest.raises(InitcliError, match="layer 1") as info:
        propagate("lsuv", "relu", depth=3, width=32, batch=16, input_std=0.0)
    assert info.value.option == "--scheme"


def test_lsuv_stops_at_max_iter():
    # a bias of std 2 alone gives Var(h) ≥ 4: unit variance is out of reach
    result = propagate("lsuv", "tanh", depth=2, width=64, batch=64, bias_std=2.0, lsuv_max_iter=3)
    assert result.lsuv_iterations[0] == 3


def test_sample_refuses_lsuv_on_a_single_tensor():
    # lsuv calibrates a stack on a batch (sample --sizes); one --shape tensor has no inputs
    from initcli.sampling import sample

    with pytest.raises(InitcliError) as info:
        sample("lsuv", shape=(16, 8))
    assert info.value.option == "--shape"


# -- orthogonal, identity, delta-orthogonal -------------------------------------------------


def test_delta_orthogonal_is_orthogonal_at_the_centre_tap_only():
    w = make_init("delta-orthogonal", gain=1.5).sample((16, 8, 3, 3), np.random.default_rng(0), np.float64)
    centre = w[:, :, 1, 1]
    np.testing.assert_allclose(centre.T @ centre, 2.25 * np.eye(8), atol=1e-12)
    w[:, :, 1, 1] = 0
    assert not w.any()


def test_identity_is_the_identity_map():
    for layer in propagate("identity", "linear", depth=5, width=64, batch=128, dtype="float64").layers:
        assert layer.preact_var == pytest.approx(propagate("identity", "linear", depth=1, width=64, batch=128,
                                                           dtype="float64").layers[0].preact_var, rel=1e-12)
    with pytest.raises(InitcliError, match="delta-orthogonal"):
        make_init("identity").sample((4, 4, 3, 3), np.random.default_rng(0))


def test_orthogonal_linear_stack_is_an_isometry():
    result = jacobian("orthogonal", "linear", depth=20, width=128, dtype="float64")
    for layer in result.layers:
        # float64: a product of 20 orthogonal matrices is orthogonal to ~20·128·eps64 ≈ 6e-13
        for value in (layer.sv_mean_sq, layer.sv_max, layer.sv_min, layer.sv_condition):
            assert value == pytest.approx(1.0, abs=1e-6)
    assert list(result.rows()[0]) == list(JACOBIAN_COLUMNS)


def test_he_relu_spectrum_widens_with_depth():
    layers = jacobian("he-normal", "relu", depth=24, width=128).layers
    assert layers[-1].sv_max > 2 * layers[0].sv_max
    # the mean square stays near 1: He controls the average, not the spread
    assert 0.3 < layers[-1].sv_mean_sq < 3


def test_jacobian_mean_square_matches_the_variance_map():
    # for a linear stack E[σ²] is the gradient variance factor: (gain²)^l. The Jacobian of a
    # linear stack is the same matrix at every input, so one input shows all there is.
    layers = jacobian("lecun-normal", "linear", gain=1.1, depth=5, width=512, inputs=1, dtype="float64").layers
    # E[σ²] = ‖J‖²_F/n, a mean over n² entries: relative sd ≈ √(2l)/n ≈ 0.006, so 0.1 is > 15 sd
    for layer in layers:
        assert layer.sv_mean_sq == pytest.approx(1.21**layer.layer, rel=0.1)


# -- residual stacks and LayerNorm against theory -------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.5, 1 / math.sqrt(20)])
def test_residual_linear_branches_follow_the_closed_form(alpha):
    # a_l = a_{l−1}(I + αW): E[a_l²] = (1 + α²σ_w²)^l E[x²]; h_l reads a_{l−1}. Each of the l
    # matrices met so far moves the measured variance by a relative sd ≤ √(2/n) whatever the
    # batch (a rank-one batch is the worst case), and the inputs' own mean square is off by
    # √(2/(n·b)): 4 sd of both, which at every layer is within the former 4√(2l/n) + 0.01.
    # float32 rounding (≤ n·eps32 ≈ 1e-4 relative a layer) is far inside that.
    n, b = 1024, 32
    layers = propagate("lecun-normal", "linear", depth=20, width=n, batch=b, residual=True, residual_scale=alpha,
                       theory=False).layers
    for layer in layers:
        want = (1 + alpha**2) ** (layer.layer - 1)
        assert layer.preact_var == pytest.approx(want, rel=4 * math.sqrt(2 * layer.layer / n + 2 / (n * b)))


def test_zero_residual_scale_is_the_identity_network():
    # a_L = x exactly, so act_var is the sample variance of b·n standard normals: relative sd
    # √(2/(b·n)) = 0.0078, and 0.05 is 6 sd; layer 1's q ≈ 2·Var(x) also varies with W, by
    # ≤ √(2/n) = 0.125 relative in the rank-one worst case (far less over 256 inputs)
    layers = propagate("he-normal", "relu", depth=30, width=128, batch=256, residual=True, residual_scale=0.0,
                       dtype="float64", theory=False).layers
    assert layers[-1].act_var == pytest.approx(layers[0].preact_var / 2, rel=0.2)  # a_L = x: Var 1
    assert layers[-1].act_var == pytest.approx(1.0, rel=0.05)
    assert all(layer.grad_var == 0 for layer in layers)  # the branch's h gets α·g = 0


@pytest.mark.parametrize("options", [{"residual": True, "block": 2, "residual_scale": 1 / math.sqrt(10)},
                                     {"norm": "layer"}, {"residual": True, "norm": "layer", "residual_scale": 0.5}],
                         ids=str)
def test_architecture_theory_tracks_measurement(options):
    # Finite width moves each layer's q by ≤ √(2/n) = 0.044 relative in the rank-one worst case
    # and by ~√(2/(n·r)) ≈ 0.004 over 256 inputs (r their effective rank), ≲ 0.015 after 10
    # layers; the gradient's goes through the stack twice. 0.1 and 0.2 also leave room for the
    # theory's own O(1/n) error through LayerNorm (its mean and variance are estimated per input).
    n = 1024
    result = propagate("he-normal", "relu", depth=10, width=n, batch=256, dtype="float64", **options)
    for row in result.rows():
        assert row["preact_var"] == pytest.approx(row["theory_preact_var"], rel=0.1)
        assert row["grad_var"] == pytest.approx(row["theory_grad_var"], rel=0.2)
        assert row["off_theory"] == ""


def test_layer_norm_pins_the_variance():
    layers = propagate("normal", "relu", depth=20, width=256, batch=128, norm="layer").layers
    assert all(math.isfinite(layer.preact_var) for layer in layers)  # no overflow: LN renormalises
    # σ_w² = fan_in and E[relu(ñ)²] ≈ 1/2 pin q near 128 at every depth, where the plain
    # stack grows ×128 a layer (the deep layers' collapsed inputs make ñ less Gaussian)
    for layer in layers[1:]:
        assert 0.5 * 128 < layer.preact_var < 1.5 * 128


def test_heterogeneous_sizes_against_theory():
    result = propagate("he-normal", "relu", sizes=[784, 1024, 512, 256, 10], batch=512, dtype="float64")
    rows = result.rows()
    assert [(r["fan_in"], r["fan_out"]) for r in rows] == [(784, 1024), (1024, 512), (512, 256), (256, 10)]
    for row in rows[:3]:
        assert row["preact_var"] == pytest.approx(row["theory_preact_var"], rel=0.1)


@pytest.mark.parametrize("options", [{"residual": True, "block": 2}, {"norm": "layer"},
                                     {"residual": True, "norm": "layer", "residual_scale": 0.3}], ids=str)
def test_checkpoint_identical_with_architectures(options):
    common = {"depth": 12, "width": 32, "batch": 16, "theory": False, **options}
    assert repr(propagate(**common).layers) == repr(propagate(checkpoint=True, **common).layers)


@pytest.mark.parametrize("options,option", [
    ({"residual": True, "sizes": [8, 16, 8]}, "--residual"),
    ({"residual": True, "block": 3, "depth": 4}, "--block"),
    ({"block": 2, "depth": 4}, "--block"),
    ({"norm": "batch"}, "--norm"),
    ({"residual": True, "residual_scale": math.inf}, "--residual-scale"),
    ({"lsuv_tol": 0.0}, "--lsuv-tol"),
    ({"lsuv_max_iter": 0}, "--lsuv-max-iter"),
])
def test_architecture_options_are_checked(options, option):
    with pytest.raises(InitcliError) as info:
        propagate(**options)
    assert info.value.option == option


# -- the CLI --------------------------------------------------------------------------------


def test_cli_jacobian_and_architecture_options():
    runner = CliRunner()
    result = runner.invoke(app, ["jacobian", "--scheme", "orthogonal", "--activation", "linear", "--depth", "4",
                                 "--width", "32", "--inputs", "3", "-f", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["params"]["inputs"] == 3 and len(document["rows"]) == 4
    result = runner.invoke(app, ["propagate", "--residual", "--block", "2", "--norm", "layer", "--depth", "4",
                                 "--width", "32", "--batch", "16", "-f", "json"])
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["params"]
    assert params["residual_scale"] == 1.0 and params["block"] == 2 and params["norm"] == "layer"
    result = runner.invoke(app, ["compare", "--schemes", "lsuv,he-normal", "--residual", "--residual-scale", "0.2",
                                 "--depth", "6", "--width", "32", "--batch", "32", "--jobs", "1", "-f", "csv"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["jacobian", "--inputs", "0"]).exit_code == 2
