"""The conv engine (`initcli.conv`, `propagate --arch conv`): forward and backward against torch
autograd, the mean-field variance map with fan_in = C·k^d, delta-orthogonal isometry, the CLI."""

import json
import math
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli import conv
from initcli.activations import get_activation
from initcli.cli import app
from initcli.engine import make_architecture
from initcli.errors import InitcliError
from initcli.propagation import propagate
from initcli.schemes import make_init
from initcli.stats import moments
from initcli.theory import mean_field

EPS64 = np.finfo(np.float64).eps
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def _torch_stack(stack, act_name, x, cotangent):
    """The same stack in torch, float64: output, per-layer h and ∂L/∂h, and every gradient."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    dims = stack.shape.dims
    conv_fn = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}[dims]
    act = {"tanh": torch.tanh, "relu": torch.relu, "linear": lambda t: t}[act_name]
    before, after = stack.shape.pads
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ws = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in stack.weights]
    bs = [torch.tensor(b, dtype=torch.float64, requires_grad=True) for b in stack.biases]
    a, block_input, hs = xt, xt, []
    for index, (w, b) in enumerate(zip(ws, bs), start=1):
        if stack.arch.opens_block(index):
            block_input = a
        if stack.shape.padding == "circular":
            h = conv_fn(functional.pad(a, (before, after) * dims, mode="circular"), w, b)
        else:  # torch's own "same" padding: checks the before/after split too
            with warnings.catch_warnings():  # torch notes that even kernels pad a copy: so do we
                warnings.simplefilter("ignore", UserWarning)
                h = conv_fn(a, w, b, padding="same")
        h.retain_grad()
        hs.append(h)
        a = block_input + stack.arch.residual_scale * act(h) if stack.arch.closes_block(index) else act(h)
    (a * torch.tensor(cotangent, dtype=torch.float64)).sum().backward()
    return a, hs, ws, bs, xt


CASES = [((6, 7), 3, "circular", "tanh"), ((6, 7), 3, "zero", "relu"), ((6, 7), 2, "zero", "tanh"),
         ((6, 7), 4, "circular", "relu"), ((11,), 5, "circular", "tanh"), ((11,), 3, "zero", "relu"),
         ((4, 5, 3), 3, "circular", "tanh")]


@pytest.mark.parametrize(("spatial", "kernel", "padding", "act_name"), CASES)
@pytest.mark.parametrize("residual", [False, True])
def test_forward_backward_and_statistics_match_torch(spatial, kernel, padding, act_name, residual):
    shape = conv.conv_shape(3, spatial, kernel, padding)
    arch = make_architecture(residual, 0.5 if residual else 1.0, 2 if residual else 1, None, None, 4)
    stack = conv.build_conv_stack(make_init("he-normal"), shape, 4, bias_std=0.1, seed=3, dtype="float64", arch=arch)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 3) + spatial)
    g = rng.normal(size=(5, 3) + spatial)
    act = get_activation(act_name)
    trace = conv.forward(stack, act, conv.to_channels_last(x))
    grads, input_grad = conv.backward(stack, trace, conv.to_channels_last(g), input_grad=True)
    out, hs, ws, bs, xt = _torch_stack(stack, act_name, x, g)

    # float64 sums of at most C·k^d·depth products of O(1) terms per entry, and of
    # batch·positions for the weight gradients: 1e-11 relative leaves room for both
    def close(ours, theirs):
        theirs = theirs.detach().numpy()
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-11 * scale)

    close(conv.to_channels_first(trace.acts[-1]), out)
    close(conv.to_channels_first(input_grad), xt.grad)
    for (weight_grad, bias_grad), w, b in zip(grads, ws, bs):
        close(weight_grad, w.grad)
        close(bias_grad, b.grad)

    layers, forward_overflow, backward_overflow = conv.measure(stack, act, conv.to_channels_last(x),
                                                               conv.to_channels_last(g))
    assert forward_overflow is None and backward_overflow is None
    for layer, h, w in zip(layers, hs, ws):
        for ours, theirs in ((layer.preact_var, moments(h.detach().numpy())[1]),
                             (layer.grad_var, moments(h.grad.numpy())[1]),
                             (layer.weight_grad_var, moments(w.grad.numpy())[1])):
            assert ours == pytest.approx(theirs, rel=1e-10)
        assert layer.fan_in == layer.fan_out == 3 * kernel ** len(spatial)


def test_measured_variances_follow_the_mlp_map_with_fan_in_c_k_d():
    """Circular padding: q_l = σ_w²·E[φ(√q z)²] + σ_b² with σ_w² = C·k^d·Var(W). At layer 1 the
    measured variance differs from q_1 by the kernel draw (each filter's squared norm has
    relative sd √(2/(C·k^d)), averaged over C filters) and the inputs' (√(2/N) for N entries);
    later layers add about as much each. A wrong fan (C without the kernel) is off ×9."""
    depth, channels, kernel = 5, 32, 3
    for scheme, act_name, bias_std in (("he-normal", "relu", 0.0), ("xavier-normal", "tanh", 0.2)):
        result = propagate(scheme, act_name, arch="conv", depth=depth, channels=channels, spatial=(8, 8),
                           kernel=kernel, batch=32, bias_std=bias_std, dtype="float64", seed=0)
        init = make_init(scheme, activation=act_name)
        variance = init.expected_std((channels, channels, kernel, kernel)) ** 2
        fan = channels * kernel * kernel
        predicted = mean_field(get_activation(act_name), [variance] * depth, [fan] * (depth + 1),
                               bias_var=bias_std ** 2)
        sd = math.sqrt(2 / (channels * fan)) + math.sqrt(2 / (32 * 64 * channels))
        for i, (layer, theory) in enumerate(zip(result.layers, predicted), start=1):
            assert layer.preact_var == pytest.approx(theory.preact_var, rel=5 * math.sqrt(i) * sd)
            assert result.theory[i - 1].theory_preact_var == pytest.approx(theory.preact_var, rel=1e-12)
            assert result.theory[i - 1].off_theory == ""


def test_zero_padding_leaves_theory_blank():
    result = propagate("he-normal", "relu", arch="conv", depth=2, channels=4, spatial=8, padding="zero", batch=4)
    assert all(column.theory_preact_var is None for column in result.theory)
    assert result.params["padding"] == "zero"


def _linear_map(scheme, padding, seed=0):
    """The linear conv stack as an n×n matrix (n = C·positions), column j the image of basis vector j."""
    shape = conv.conv_shape(4, (5, 6), 3, padding)
    stack = conv.build_conv_stack(make_init(scheme, activation="linear"), shape, 6, seed=seed, dtype="float64")
    n = 4 * 30
    basis = np.eye(n).reshape(n, 4, 5, 6)
    trace = conv.forward(stack, get_activation("linear"), conv.to_channels_last(basis))
    return conv.to_channels_first(trace.acts[-1]).reshape(n, n), stack


@pytest.mark.parametrize("padding", ["circular", "zero"])
def test_delta_orthogonal_linear_stack_is_exactly_isometric(padding):
    matrix, _ = _linear_map("delta-orthogonal", padding)
    singular = np.linalg.svd(matrix, compute_uv=False)
    # each layer is an orthogonal C×C map per position: products of 6 orthogonal float64
    # matrices, each with entries exact to ~eps, stay within depth·C·eps of norm 1 (×10 slack)
    np.testing.assert_allclose(singular, 1.0, rtol=0, atol=10 * 6 * 4 * EPS64)


def test_gaussian_linear_conv_stack_spreads_its_singular_values():
    matrix, _ = _linear_map("lecun-normal", "circular")
    singular = np.linalg.svd(matrix, compute_uv=False)
    # LeCun keeps the mean square near 1 (mean field) but not the spread: a 6-layer product
    # of random 120×120 maps has condition number in the hundreds or more
    assert 0.2 < float(np.mean(singular ** 2)) < 5
    assert singular.max() / singular.min() > 10


def test_delta_orthogonal_preserves_each_examples_norm_in_float64():
    result_x = np.random.default_rng(0).normal(size=(3, 8, 16, 16))
    shape = conv.conv_shape(8, (16, 16), 3, "circular")
    stack = conv.build_conv_stack(make_init("delta-orthogonal"), shape, 20, dtype="float64")
    out = conv.forward(stack, get_activation("linear"), conv.to_channels_last(result_x)).acts[-1]
    before = np.linalg.norm(result_x.reshape(3, -1), axis=1)
    after = np.linalg.norm(out.reshape(3, -1), axis=1)
    np.testing.assert_allclose(after, before, rtol=20 * 8 * EPS64 * 10)


def test_streams_follow_the_seed_and_deeper_stacks_start_alike():
    shallow = propagate("he-normal", "relu", arch="conv", depth=2, channels=4, spatial=(6, 6), batch=4, seed=5)
    deep = propagate("he-normal", "relu", arch="conv", depth=3, channels=4, spatial=(6, 6), batch=4, seed=5)
    assert shallow.layers[0].preact_var == deep.layers[0].preact_var
    other = propagate("he-normal", "relu", arch="conv", depth=2, channels=4, spatial=(6, 6), batch=4, seed=6)
    assert other.layers[0].preact_var != shallow.layers[0].preact_var


def test_float32_agrees_with_float64():
    runs = [propagate("he-normal", "tanh", arch="conv", depth=3, channels=8, spatial=12, batch=16, dtype=d)
            for d in ("float32", "float64")]
    # same draws (weights are drawn in float32); float32 sums of 24 products per entry over 3
    # layers: relative ~1e-6, well inside 1e-4
    for a, b in zip(runs[0].layers, runs[1].layers):
        assert a.preact_var == pytest.approx(b.preact_var, rel=1e-4)
        assert a.grad_var == pytest.approx(b.grad_var, rel=1e-4)


def test_overflow_is_a_result_not_a_warning():
    result = propagate("normal", "linear", arch="conv", std=1e6, depth=8, channels=4, spatial=6, batch=2)
    assert result.forward_overflow_layer is not None
    assert math.isinf(result.layers[-1].preact_var) or math.isnan(result.layers[-1].preact_var)


@pytest.mark.parametrize(("options", "param"), [
    ({"kernel": 7, "spatial": (6, 6)}, "kernel"), ({"padding": "reflect"}, "padding"),
    ({"spatial": (2, 2, 2, 2)}, "spatial"), ({"channels": 0}, "channels"), ({"width": 8}, "width"),
    ({"spatial": "16"}, "spatial"),
])
def test_bad_options_are_refused(options, param):
    with pytest.raises(InitcliError) as error:
        propagate("he-normal", "relu", arch="conv", **options)
    assert error.value.param == param


def test_unknown_arch_and_identity_scheme_are_refused():
    with pytest.raises(InitcliError, match="choose from"):
        propagate(arch="transformr")
    with pytest.raises(InitcliError) as error:
        propagate("identity", "linear", arch="conv", depth=1, channels=2, spatial=4, batch=2)
    assert error.value.param == "scheme"


def test_memory_guard_refuses_huge_runs():
    with pytest.raises(InitcliError, match="GiB"):
        conv.prepare(channels=4096, spatial=(4096, 4096), batch=512)


# -- CLI ---------------------------------------------------------------------------------------


def _run(*args):
    return CliRunner().invoke(app, ["propagate", *args], env=ENV)


def test_cli_propagate_conv_json_records_the_architecture():
    result = _run("--arch", "conv", "--depth", "3", "--channels", "4", "--spatial", "8,8", "--kernel", "3",
                  "--scheme", "delta-orthogonal", "-a", "tanh", "--batch", "4", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["params"] | {"arch": "conv", "channels": 4, "spatial": [8, 8], "kernel": 3,
                             "padding": "circular"} == data["params"]
    assert len(data["rows"]) == 3 and data["rows"][0]["fan_in"] == 36
    assert data["rows"][0]["theory_preact_var"] == pytest.approx(1.0)  # delta-orthogonal: σ_w² = 1, E[x²] = 1


def test_cli_propagate_conv_csv_and_table():
    csv = _run("--arch", "conv", "--depth", "2", "--channels", "4", "--spatial", "16", "--padding", "zero",
               "--batch", "4", "--format", "csv")
    assert csv.exit_code == 0, csv.output
    lines = csv.stdout.strip().splitlines()
    assert lines[0].startswith("layer,fan_in,fan_out") and len(lines) == 3
    table = _run("--arch", "conv", "--depth", "2", "--channels", "4", "--spatial", "16", "--batch", "4",
                 "--format", "table")
    assert table.exit_code == 0 and "conv layers" in table.stdout


@pytest.mark.parametrize("args", [
    ["--kernel", "3"], ["--spatial", "8"], ["--padding", "zero"], ["--channels", "4"], ["--arch", "nope"],
    ["--arch", "conv", "--width", "8"], ["--arch", "conv", "--checkpoint"], ["--arch", "conv", "--norm", "layer"],
    ["--arch", "conv", "--spatial", "8,x"], ["--arch", "conv", "--param", "mup"],
])
def test_cli_refuses_what_does_not_apply(args):
    result = _run("--depth", "2", "--batch", "4", "--format", "csv", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("initcli: error: --")


def test_cli_other_commands_refuse_conv():
    result = CliRunner().invoke(app, ["compare", "--arch", "conv", "--depth", "2", "--format", "csv"], env=ENV)
    assert result.exit_code == 2 and "--arch" in result.stderr
