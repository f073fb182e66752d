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


def _torch_layers(stack, act_name, a, ws, bs, on_preact=None):
    """Run torch tensor `a` (batch, C, *spatial) through the stack's layers with torch's conv,
    float64: every layer's output a_l; on_preact(h) sees each pre-activation."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    dims = stack.shape.dims
    conv_fn = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}[dims]
    act = {"tanh": torch.tanh, "relu": torch.relu, "linear": lambda t: t}[act_name]
    before, after = stack.shape.pads
    block_input, outputs = a, []
    for index, (w, b) in enumerate(zip(ws, bs), start=1):
        if stack.arch.opens_block(index):
            block_input = a
        if stack.shape.padding == "circular":
            h = conv_fn(functional.pad(a, (before, after) * dims, mode="circular"), w, b)
        else:  # torch's own "same" padding: checks the before/after split too
            with warnings.catch_warnings():  # torch notes that even kernels pad a copy: so do we
                warnings.simplefilter("ignore", UserWarning)
                h = conv_fn(a, w, b, padding="same")
        if on_preact is not None:
            on_preact(h)
        a = block_input + stack.arch.residual_scale * act(h) if stack.arch.closes_block(index) else act(h)
        outputs.append(a)
    return outputs


def _torch_stack(stack, act_name, x, cotangent):
    """The same stack in torch, float64: output, per-layer h and ∂L/∂h, and every gradient."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ws = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in stack.weights]
    bs = [torch.tensor(b, dtype=torch.float64, requires_grad=True) for b in stack.biases]
    hs = []

    def keep(h):
        h.retain_grad()
        hs.append(h)

    a = _torch_layers(stack, act_name, xt, ws, bs, keep)[-1]
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


def test_cli_compare_and_jacobian_take_conv():
    """compare judges conv stacks (width is the channels) and jacobian takes their spectrum;
    commands that build Linear stacks only refuse --arch conv by name."""
    import csv
    import io

    result = CliRunner().invoke(app, ["compare", "--arch", "conv", "--depth", "3", "--batch", "4", "--spatial", "8",
                                      "--channels", "4", "--schemes", "zeros,he-normal", "--format", "csv"], env=ENV)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["scheme"] for row in rows] == ["zeros", "he-normal"]
    assert {row["width"] for row in rows} == {"4"} and rows[0]["verdict"] == "no-signal"
    result = CliRunner().invoke(app, ["jacobian", "--arch", "conv", "--depth", "2", "--spatial", "6",
                                      "--channels", "2", "--format", "csv"], env=ENV)
    assert result.exit_code == 0, result.output
    assert [row["layer"] for row in csv.DictReader(io.StringIO(result.stdout))] == ["1", "2"]
    result = CliRunner().invoke(app, ["coordcheck", "--arch", "conv"], env=ENV)
    assert result.exit_code == 2 and "--arch" in result.stderr


# -- jacobian --arch conv -------------------------------------------------------------------


def _torch_layer_outputs(stack, act_name):
    """x ↦ (a_1, …, a_L) for one example in torch's (C, *spatial) layout, float64."""
    torch = pytest.importorskip("torch")
    ws = [torch.tensor(w, dtype=torch.float64) for w in stack.weights]
    bs = [torch.tensor(b, dtype=torch.float64) for b in stack.biases]

    def outputs(x):
        return tuple(a[0] for a in _torch_layers(stack, act_name, x[None], ws, bs))

    return torch, outputs


JACOBIAN_CASES = [((5, 6), 3, "circular", "tanh", False), ((5, 6), 3, "zero", "relu", True),
                  ((5, 4), 2, "zero", "tanh", False), ((13,), 5, "circular", "tanh", True),
                  ((13,), 3, "zero", "tanh", False), ((3, 4, 3), 3, "circular", "relu", False)]


@pytest.mark.parametrize(("spatial", "kernel", "padding", "act_name", "residual"), JACOBIAN_CASES)
def test_conv_jacobian_singular_values_match_torch_autograd(spatial, kernel, padding, act_name, residual):
    channels, depth = 3, 4
    shape = conv.conv_shape(channels, spatial, kernel, padding)
    arch = make_architecture(residual, 0.7 if residual else 1.0, 2 if residual else 1, None, None, depth)
    stack = conv.build_conv_stack(make_init("xavier-normal", gain=1.3), shape, depth, bias_std=0.2, seed=2,
                                  dtype="float64", arch=arch)
    x = np.random.default_rng(5).normal(size=(2, channels) + spatial)
    stats, values = conv.jacobian_spectrum(stack, get_activation(act_name), conv.to_channels_last(x), spectrum=True)
    torch, outputs = _torch_layer_outputs(stack, act_name)
    n = channels * math.prod(spatial)
    # Both sides float64. Each Jacobian entry is a sum of at most C·k^d products per layer over
    # depth layers, so the two differ entrywise by ~depth·C·k^d·eps·|J|; the n×n difference has
    # norm ≤ n× that, a singular value moves by at most that norm (Weyl), and each SVD adds
    # ~n·eps·σ_max. 10× both leaves room for the constants.
    atol_factor = 10 * (depth * shape.fan * n + n) * EPS64
    for i in range(len(x)):
        jacobians = torch.autograd.functional.jacobian(outputs, torch.tensor(x[i]))
        for layer, jac in enumerate(jacobians):
            want = torch.linalg.svdvals(jac.reshape(n, n)).numpy()
            np.testing.assert_allclose(values[layer][i], want, rtol=0, atol=atol_factor * want[0])
    for layer, row in zip(stats, values):
        assert layer.sv_max == pytest.approx(row[:, 0].mean(), rel=1e-14)
        assert layer.sv_min == pytest.approx(row[:, -1].mean(), rel=1e-14)
        assert layer.sv_mean_sq == pytest.approx(np.mean(row ** 2), rel=1e-13)


@pytest.mark.parametrize("spatial", [(6, 6), (16,)])
def test_delta_orthogonal_linear_conv_jacobian_is_isometric_and_gaussian_spreads(spatial):
    depth, channels = 8, 8
    n = channels * math.prod(spatial)
    iso = conv.jacobian("delta-orthogonal", "linear", channels=channels, spatial=spatial, depth=depth, batch=2,
                        dtype="float64", spectrum=True)
    # delta-orthogonal (drawn in float64 with dtype float64): each layer is an orthogonal C×C map
    # per position, exact to ~C·eps64; L of them to ~L·C·eps64, and the SVD adds ~n·eps64
    tolerance = 4 * (depth * channels + n) * EPS64
    for layer, values in zip(iso.layers, iso.singular_values):
        assert np.abs(values - 1).max() <= tolerance
        assert abs(layer.sv_condition - 1) <= 2 * tolerance
    gaussian_run = conv.jacobian("xavier-normal", "linear", channels=channels, spatial=spatial, depth=depth,
                                 batch=2, dtype="float64", spectrum=True)
    # Same σ_w² = 1 (xavier on a square kernel): the mean square stays O(1) (mean field), but
    # with circular padding the linear stack is block-circulant, its singular values the union
    # over the P spatial frequencies of those of a product of L random C×C matrices. One C×C
    # Gaussian matrix alone has condition number of order C (Edelman 1988: κ/n has the limit
    # law P(κ/n < x) = exp(−2/x − 2/x²), so P(κ < 10) ≈ 6% at C = 8), and the Jacobian's is at
    # least its worst frequency's: 100 to 2000 at layer 1 and beyond 1e5 at layer 8 over
    # seeds 0–3, so > 10 at every layer holds with a wide margin. The σ² spread: Var(σ²) → L
    # for a product of L square Gaussian maps (Fuss–Catalan moments, m2 = L + 1); at C = 8 it
    # measured 3.6–6.6 at L = 8, against 0 (to rounding) for delta-orthogonal.
    last = gaussian_run.layers[-1]
    assert 0.1 < last.sv_mean_sq < 10
    assert all(layer.sv_condition > 10 for layer in gaussian_run.layers)
    assert last.sv_sq_var > 1  # delta-orthogonal: 0 to rounding


def test_conv_jacobian_defaults_progress_and_params():
    from initcli.threads import blas_threads

    plan = conv.prepare_jacobian("he-normal", "relu", depth=3, batch=5)
    # a Jacobian run's geometry defaults to 8 channels over 8×8 (propagate's 16 × 16×16 would
    # be n = 4096 per input: minutes of SVDs)
    assert (plan.run.shape.channels, plan.run.shape.spatial) == (conv.JACOBIAN_CHANNELS, conv.JACOBIAN_SPATIAL)
    assert plan.inputs == 5 and plan.steps == 5 * 3
    before = blas_threads()
    seen = []
    result = conv.jacobian("he-normal", "tanh", depth=3, channels=2, spatial=(4, 4), batch=10, inputs=3,
                           progress=lambda n: seen.append((n, blas_threads())))
    assert sum(n for n, _ in seen) == 3 * 3
    if before is not None:
        assert {threads for _, threads in seen} == {1} and blas_threads() == before
    p = result.params
    assert p | {"arch": "conv", "channels": 2, "spatial": [4, 4], "inputs": 3, "spectrum": False, "depth": 3} == p
    assert len(result.layers) == 3 and result.singular_values is None and result.value_rows() == []
    # the Jacobian is taken at the first inputs of the batch propagate draws from the seed
    run = conv.prepare("he-normal", "tanh", depth=3, channels=2, spatial=(4, 4), batch=10)
    stack, x, _ = conv.inputs(run)
    again, _ = conv.jacobian_spectrum(stack, get_activation("tanh"), x[:3])
    assert again == result.layers


def test_conv_jacobian_results_do_not_depend_on_blas_threads():
    from initcli.threads import blas_threads_limited

    options = dict(depth=3, channels=4, spatial=(6, 6), batch=2, spectrum=True)
    with blas_threads_limited(1):
        one = conv.jacobian("xavier-normal", "tanh", **options)
    other = conv.jacobian("xavier-normal", "tanh", **options)  # run_jacobian pins one thread itself
    for a, b in zip(one.singular_values, other.singular_values):
        assert np.array_equal(a, b)


def test_conv_jacobian_overflow_is_nan_not_a_warning():
    # |σ| grows ~1e30 a layer: past float64's range within a dozen layers
    result = conv.jacobian("normal", "linear", std=1e30, depth=14, channels=2, spatial=4, batch=2, spectrum=True)
    assert math.isfinite(result.layers[0].sv_max)
    assert math.isnan(result.layers[-1].sv_max) and np.isnan(result.singular_values[-1]).all()


@pytest.mark.parametrize(("options", "param"), [
    ({"channels": 17, "spatial": (16, 16)}, "channels"), ({"inputs": 0}, "inputs"),
    ({"inputs": 3, "batch": 2}, "inputs"), ({"width": 8}, "width"), ({"kernel": 9}, "kernel"),
])
def test_conv_jacobian_bad_options_are_refused_before_allocating(options, param):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(InitcliError) as error:
            conv.jacobian(**options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.value.param == param and peak < 1 << 20
    if param == "channels":  # one line naming both options that set the width
        assert "--channels" in str(error.value) and "--spatial" in str(error.value)


def test_conv_jacobian_memory_guard_names_its_options():
    with pytest.raises(InitcliError, match="--inputs") as error:
        conv.prepare_jacobian(channels=16, spatial=(16, 16), batch=10**6, inputs=10**6)
    assert "GiB" in str(error.value)


@pytest.mark.parametrize("options", [{"spatial": (9, 9)}, {"spatial": 80, "residual": True, "block": 2}], ids=str)
def test_conv_jacobian_memory_estimate_covers_the_real_peak(options):
    import tracemalloc

    tracemalloc.start()
    try:
        # n = 324 or 320: the tangent arrays (8·n²·8 bytes, ~6.5 MiB) outweigh the fixed workspace
        result = conv.jacobian("he-normal", "tanh", channels=4, depth=2, batch=16, inputs=8, spectrum=True,
                               **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    p = result.params
    shape = conv.conv_shape(p["channels"], p["spatial"], p["kernel"], p["padding"])
    assert peak <= conv.estimate_jacobian_bytes(shape, p["depth"], p["inputs"], p["batch"], np.dtype(p["dtype"]),
                                                spectrum=True)


# -- orthogonal per tap in the conv engine ---------------------------------------------------


def test_orthogonal_per_tap_runs_and_follows_the_mean_field_map():
    """Per-tap orthogonal kernels are random (every tap a Haar draw), so mean-field applies with
    σ_w² = C·k^d·Var(W) = gain²: its theory columns are filled, and the measured variances
    follow them as the Gaussian schemes' do (tolerance as in the test above: each filter's norm
    is even exact here, so only the inputs and the finite width move the measurement)."""
    depth, channels, kernel, batch = 5, 32, 3, 32
    gain = 1.2
    result = propagate("orthogonal-per-tap", "tanh", arch="conv", gain=gain, depth=depth, channels=channels,
                       spatial=(8, 8), kernel=kernel, batch=batch, bias_std=0.1, dtype="float64", seed=0)
    assert result.params["scheme"] == "orthogonal-per-tap"
    fan = channels * kernel * kernel
    predicted = mean_field(get_activation("tanh"), [gain**2 / fan] * depth, [fan] * (depth + 1), bias_var=0.01)
    assert predicted[0].preact_var == pytest.approx(gain**2 + 0.01)
    sd = math.sqrt(2 / (channels * fan)) + math.sqrt(2 / (batch * 64 * channels))
    for i, (layer, theory, column) in enumerate(zip(result.layers, predicted, result.theory), start=1):
        assert column.theory_preact_var == pytest.approx(theory.preact_var, rel=1e-12)
        assert column.theory_grad_var == pytest.approx(theory.grad_var, rel=1e-12)
        assert layer.preact_var == pytest.approx(theory.preact_var, rel=5 * math.sqrt(i) * sd)
        assert column.off_theory == ""


def test_orthogonal_per_tap_linear_conv_is_not_isometric():
    # every tap orthogonal, but their sum at a spatial frequency (Σ_t W_t e^{iω·t}/√taps) is not:
    # the mean square of the singular values stays 1, their spread does not
    result = conv.jacobian("orthogonal-per-tap", "linear", channels=8, spatial=(6, 6), depth=4, batch=1,
                           dtype="float64", spectrum=True)
    first = result.layers[0]
    # E[σ²] = 1 exactly per frequency average: tr(JᵀJ)/n = Σ_t tr(W_tᵀW_t)/(taps·C) = 1
    assert first.sv_mean_sq == pytest.approx(1.0, rel=1e-12)
    assert all(layer.sv_condition > 10 for layer in result.layers)


# -- the edge of chaos, 200 layers -------------------------------------------------------------


def test_delta_orthogonal_tanh_conv_at_the_edge_of_chaos_keeps_its_gradient_variance():
    """Issue 15's "done when" (Xiao et al. 2018). A critical point of tanh with small bias,
    σ_b² = 1e-5: σ_w = critical_sigma_w ≈ 1.0196, q* ≈ 0.020, χ₁ = 1, where mean field
    predicts a gradient variance that stays put over depth for any kernel with this σ_w².

    The band: a Gaussian layer of fan_in n = C·k^d rescales a vector's squared norm by a
    χ²_n/n factor, whose log has sd √(2/n); the band is 3 of those around mean field, i.e.
    what a single layer's finite-width draw explains (0.61 in log at C = 16, k = 3). A
    Gaussian stack takes L independent such factors, a random walk in log (measured over 20
    seeds at these sizes: per-layer sd 0.18, sd 1.3 after 200 layers, max |log| over depth
    1.1–4.8); a delta-orthogonal stack takes none, since Qᵀ preserves each position's
    channel vector exactly and only tanh' (≈ 1 − h², h² ~ q* ≈ 0.02) varies (measured:
    per-layer sd 0.0075, max |log| 0.04–0.28). Orthogonal-per-tap, random across taps, walks
    like the Gaussian (max |log| 0.9–3.0)."""
    from initcli.theory import chi_1, critical_sigma_w, fixed_point

    act = get_activation("tanh")
    bias_std = math.sqrt(1e-5)
    sigma_w = critical_sigma_w(act, bias_std)
    assert chi_1(act, sigma_w, fixed_point(act, sigma_w, bias_std)) == pytest.approx(1.0, abs=1e-9)
    channels, kernel, depth = 16, 3, 200
    band = 3 * math.sqrt(2 / (channels * kernel))

    def drift(scheme, seed):
        # gain σ_w: delta-orthogonal, orthogonal-per-tap and xavier-normal (on a square kernel,
        # std = σ_w/√(C·k)) all have σ_w² = C·k·Var(W)
        result = propagate(scheme, "tanh", arch="conv", gain=sigma_w, channels=channels, spatial=16, kernel=kernel,
                           depth=depth, batch=4, bias_std=bias_std, dtype="float64", seed=seed)
        measured = np.array([layer.grad_var for layer in result.layers])
        predicted = np.array([column.theory_grad_var for column in result.theory])
        return float(np.abs(np.log(measured / predicted)).max())

    for seed in (0, 1):
        assert drift("delta-orthogonal", seed) < band
        assert drift("xavier-normal", seed) > band
        assert drift("orthogonal-per-tap", seed) > band
