"""Residual-init presets (--residual-init): their constants, the stack at init, the theory of
the residual stream, DeepNorm's post-LN against torch, and the CLI."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli.activations import get_activation
from initcli.cli import app
from initcli.engine import (
    backward,
    build_stack,
    close_block_jacobian,
    forward,
    layer_forward,
    make_architecture,
    seed_streams,
    vjp,
)
from initcli.errors import InitcliError
from initcli.jacobian import jacobian
from initcli.propagation import propagate
from initcli.schemes import (
    RESIDUAL_INIT_NAMES,
    gaussian,
    make_init,
    resolve_residual_init,
    scheme_table,
)
from initcli.theory import mean_field, phi_sq

F64_EPS = float(np.finfo(np.float64).eps)


def _stack(preset, *, depth=6, width=32, block=1, scheme="he-normal", activation="relu", dtype="float64", seed=0,
           norm=None):
    arch = make_architecture(True, 1.0, block, norm, preset, depth)
    return build_stack(make_init(scheme, activation=activation), [width] * (depth + 1), seed=seed, dtype=dtype,
                       arch=arch)


# -- constants ------------------------------------------------------------------------------


def test_deepnorm_constants_for_six_blocks():
    # DeepNet's encoder row: α = (2N)^¼, β = (8N)^−¼
    constants = resolve_residual_init("deepnorm", 6, 2)
    assert constants.skip_scale == pytest.approx(12 ** 0.25, rel=4 * F64_EPS)
    assert constants.residual_alpha == pytest.approx(12 ** 0.25, rel=4 * F64_EPS)
    assert constants.weight_scales == pytest.approx((48 ** -0.25,) * 2, rel=4 * F64_EPS)
    assert constants.post_norm


@pytest.mark.parametrize(("name", "blocks", "block", "residual_scale", "weight_scales"), [
    ("fixup", 4, 3, 1.0, (4 ** -0.25, 4 ** -0.25, 0.0)),  # L^(−1/(2m−2)) with m = 3
    ("fixup", 9, 1, 1.0, (0.0,)),
    ("t-fixup", 16, 2, 1.0, (0.67 / 2, 0.67 / 2)),  # 0.67·N^(−1/4)
    ("rezero", 5, 2, 0.0, (1.0, 1.0)),
    ("skipinit", 5, 1, 0.0, (1.0,)),
    ("gpt2", 8, 2, 1.0, (1.0, 0.25)),  # 1/√(2·n_layer)
    ("depth-mup", 25, 1, 0.2, (1.0,)),  # 1/√L
])
def test_preset_constants(name, blocks, block, residual_scale, weight_scales):
    constants = resolve_residual_init(name, blocks, block)
    assert constants.residual_scale == pytest.approx(residual_scale, rel=4 * F64_EPS)
    assert constants.weight_scales == pytest.approx(weight_scales, rel=4 * F64_EPS)
    assert not constants.post_norm and constants.skip_scale == 1.0


def test_architecture_without_preset_is_unchanged():
    arch = make_architecture(True, 0.5, 2, None)
    assert arch.params() == {"residual_scale": 0.5, "block": 2, "norm": "none"}
    assert arch.weight_scale(1) == 1.0 and arch.skip_scale == 1.0 and not arch.post_norm
    plain = build_stack(make_init("he-normal"), [16] * 5, seed=3, arch=arch)
    again = build_stack(make_init("he-normal"), [16] * 5, seed=3, arch=make_architecture(True, 0.5, 2, None, None, 4))
    assert all(np.array_equal(a, b) for a, b in zip(plain.weights, again.weights))


def test_presets_scale_the_schemes_own_draws():
    base = build_stack(make_init("xavier-normal", activation="tanh"), [16] * 7, seed=1,
                       arch=make_architecture(True, 1.0, 2, None))
    gpt2 = _stack("gpt2", depth=6, width=16, block=2, scheme="xavier-normal", activation="tanh", dtype="float32",
                  seed=1)
    factor = np.float32(1 / math.sqrt(6))  # 3 blocks: 1/√(2·3)
    for i, (w, w0) in enumerate(zip(gpt2.weights, base.weights)):
        assert np.array_equal(w, w0 * factor if i % 2 else w0)


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"residual": False, "residual_init": "rezero"}, "residual_init"),
    ({"residual": True, "residual_init": "rezero", "residual_scale": 0.5}, "residual_scale"),
    ({"residual": True, "residual_init": "deepnorm", "norm": "layer"}, "norm"),
    ({"residual": True, "residual_init": "fixup", "bias_std": 0.1}, "bias_std"),
    ({"residual": True, "residual_init": "nonsense"}, "residual_init"),
    ({"residual": True, "residual_init": "gpt2", "block": 4}, "block"),  # 6 layers, blocks of 4
])
def test_refusals(kwargs, param):
    with pytest.raises(InitcliError) as error:
        propagate("he-normal", "relu", depth=6, width=16, batch=8, **kwargs)
    assert error.value.param == param


def test_lsuv_is_refused():
    with pytest.raises(InitcliError) as error:
        propagate("lsuv", "relu", depth=4, width=16, batch=8, residual=True, residual_init="gpt2")
    assert error.value.param == "residual_init"


# -- the stack at init ----------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["rezero", "skipinit", "fixup"])
@pytest.mark.parametrize("block", [1, 2])
def test_zero_branches_give_unit_jacobian_singular_values(preset, block):
    # α = 0 (ReZero, SkipInit) or a zero last branch layer with relu(0) = 0 (Fixup): every
    # block is the identity, so ∂a_l/∂x = I at the end of every block (inside a branch, a_l
    # is the branch's own activation). The float64 SVD of I is exact to a few ulps.
    result = jacobian("he-normal", "relu", depth=6, width=24, batch=4, residual=True, block=block,
                      residual_init=preset)
    for layer in result.layers[block - 1::block]:
        for value in (layer.sv_max, layer.sv_min, layer.sv_mean_sq):
            assert abs(value - 1) <= 8 * F64_EPS


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])  # φ(0) = 0 for each
def test_fixup_output_equals_input(activation):
    stack = _stack("fixup", depth=6, width=32, block=3, activation=activation, dtype="float32")
    assert np.all(stack.weights[2] == 0) and np.all(stack.weights[5] == 0)
    assert all(np.all(b == 0) for b in stack.biases)
    x = gaussian(seed_streams(0)["inputs"], (16, 32), np.float32)
    out = forward(stack, get_activation(activation), x).states[-1].act
    assert np.array_equal(out, x)  # x + 1·φ(0·a) = x + 0, exactly


def test_fixup_trains_from_a_zero_readout():
    from initcli.training import build_network, make_task

    task = make_task("spiral", 64, rng=np.random.default_rng(0))
    arch = make_architecture(True, 1.0, 2, None, "fixup", 4)
    network = build_network(make_init("he-normal"), get_activation("relu"), task, [16] * 5, seed=0, dtype="float32",
                            arch=arch)
    readout = network.stages[-1][0].weights[0]
    assert np.all(readout == 0)
    body = network.stages[1][0]
    assert np.all(body.weights[1] == 0) and np.all(body.weights[3] == 0)  # the last layer of both branches
    assert np.all(network.stages[0][0].weights[0] != 0)  # the first, plain layer keeps the scheme's draw


# -- the residual stream's variance recursion ------------------------------------------------


def _stream_recursion(act, depth, residual_scale, weight_scale, q0=1.0):
    """Q_{l+1} = Q_l + r²·E[φ(h)²], h ~ N(0, s²·Q_l) (xavier-normal on square layers: σ_w² = 1),
    for a zero-mean φ (tanh), and each block's increment relative to Q_{l+1}."""
    q, ratios = [q0], []
    for _ in range(depth):
        increment = residual_scale ** 2 * phi_sq(act, weight_scale ** 2 * q[-1])
        q.append(q[-1] + increment)
        ratios.append(increment / q[-1])
    return np.array(q[1:]), np.array(ratios)


@pytest.mark.parametrize("depth", [16, 48])
def test_stream_growth_linear_unscaled_bounded_scaled(depth):
    width, batch = 512, 64
    act = get_activation("tanh")
    init = make_init("xavier-normal", activation="tanh")
    x = gaussian(seed_streams(0)["inputs"], (batch, width), np.float64)
    q0 = float(np.mean(x * x))
    finals = {}
    for preset in (None, "gpt2", "depth-mup"):
        arch = make_architecture(True, 1.0, 1, None, preset, depth)
        stack = build_stack(init, [width] * (depth + 1), seed=0, dtype="float64", arch=arch)
        measured = np.array([float(np.mean(state.act ** 2)) for state in forward(stack, act, x).states])
        weight_scale = arch.weight_scale(1)
        theory, ratios = _stream_recursion(act, depth, arch.residual_scale, weight_scale, q0)
        # Finite-width band: block l multiplies Q by 1 + r_l·(1 + ε_l), r_l its increment
        # over the new Q; ε_l, the relative error of that layer's empirical variance map, has
        # log-sd at most √(5/n) (Hanin & Rolnick 2018's per-layer ReLU value, larger than
        # tanh's). Independent across blocks, so log(measured/theory) at block l has sd
        # √(5/n·Σ r_k²); the batch adds √(2/(B·n)) from estimating Q itself. 4 sd.
        band = 4 * np.sqrt(5 / width * np.cumsum(ratios ** 2) + 2 / (batch * width))
        assert np.all(np.abs(np.log(measured / theory)) <= band), (preset, measured, theory, band)
        finals[preset] = (measured[-1], theory)
    unscaled = finals[None][1]
    # unscaled: each block adds E[tanh²(√Q z)] ∈ (0.5, 1) once Q ≥ 2: linear, not geometric
    increments = np.diff(unscaled[depth // 2:])
    assert np.all((increments > 0.5) & (increments < 1.0))
    assert 0.5 * depth < finals[None][0] < depth + q0
    # GPT-2 (s² = 1/(2N)) and depth-µP (r² = 1/L): each block adds at most Q/(2N) or Q/L
    # (E[tanh²(h)] ≤ E[h²]), so Q_L ≤ Q_0·e^{1/2} or Q_0·e whatever the depth
    assert finals["gpt2"][1][-1] <= q0 * math.exp(0.5)
    assert finals["depth-mup"][1][-1] <= q0 * math.e
    assert finals["gpt2"][0] < 2 and finals["depth-mup"][0] < 3


@pytest.mark.parametrize("preset", ["gpt2", "depth-mup", "deepnorm", "t-fixup", "rezero"])
def test_theory_columns_follow_the_preset(preset):
    result = propagate("he-normal", "relu", depth=12, width=256, batch=128, residual=True, residual_init=preset,
                       dtype="float64")
    assert all(row["off_theory"] == "" for row in result.rows())
    if preset == "deepnorm":  # the post-LN stream has unit variance: every branch sees β²·σ_w²
        expected = 2 * (8 * 12) ** -0.5 * (1 - 1e-5)
        assert all(row["theory_preact_var"] == pytest.approx(expected, rel=1e-4) for row in result.rows()[1:])


def test_deepnorm_theory_grad_through_post_norm():
    # one block of one layer, relu: the stream's variance across units before the LN is
    # v = α²·Q_in + 2α·0·E[φ] + E[φ²] with M_in = 0, and the gradient divides by v + ε
    arch = make_architecture(True, 1.0, 1, None, "deepnorm", 1)
    alpha, beta = 2 ** 0.25, 8 ** -0.25
    (layer,) = mean_field(get_activation("relu"), [2 / 64 * beta * beta], [64, 64], arch=arch)
    q = 2 * beta * beta
    mean_phi = math.sqrt(q / (2 * math.pi))
    v = alpha * alpha + q / 2 - mean_phi ** 2
    assert layer.preact_var == pytest.approx(q, rel=1e-12)
    assert layer.grad_var == pytest.approx(0.5 / (v + 1e-5), rel=1e-9)


# -- DeepNorm's post-LN against torch --------------------------------------------------------


def test_deepnorm_forward_backward_against_torch():
    torch = pytest.importorskip("torch")
    depth, width, batch, block = 6, 24, 5, 2
    stack = _stack("deepnorm", depth=depth, width=width, block=block, activation="tanh", scheme="xavier-normal")
    act = get_activation("tanh")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((batch, width))
    g = rng.standard_normal((batch, width))
    trace = forward(stack, act, x)
    grads, input_grad = vjp(stack, trace, g)

    alpha = (2 * depth / block) ** 0.25
    xt = torch.tensor(x, requires_grad=True)
    weights = [torch.tensor(w, requires_grad=True) for w in stack.weights]
    a = xt
    for start in range(0, depth, block):
        h = a
        for w in weights[start:start + block]:
            h = torch.tanh(h @ w.T)
        a = torch.nn.functional.layer_norm(alpha * a + h, (width,), eps=1e-5)
    (a * torch.tensor(g)).sum().backward()
    # float64: each value passes depth·(width-long dot products + a LayerNorm); 1e3·eps
    # covers the rounding of both implementations with a wide margin, and an error in the
    # formulas (a missing α, the LN's projection) is of order 1
    tol = 1e3 * F64_EPS
    assert np.allclose(trace.states[-1].act, a.detach().numpy(), rtol=tol, atol=tol)
    assert np.allclose(input_grad, xt.grad.numpy(), rtol=tol, atol=tol)
    for (weight_grad, _), w in zip(grads, weights):
        assert np.allclose(weight_grad, w.grad.numpy(), rtol=tol, atol=tol)
    # the scratch-buffer backward pass (propagate's) gives the same δ
    deltas = {}
    backward(stack, forward(stack, act, x), g, lambda layer, delta, wg: deltas.setdefault(layer, wg.copy()),
             keep_grads=False)
    for layer, (weight_grad, _) in enumerate(grads, start=1):
        assert np.allclose(deltas[layer], weight_grad, rtol=tol, atol=tol)


def test_close_block_jacobian_against_torch():
    # the end-of-block Jacobian initcli.jacobian needs for DeepNorm (skip α, then the post-LN)
    torch = pytest.importorskip("torch")
    width = 12
    stack = _stack("deepnorm", depth=2, width=width, block=1, activation="tanh", scheme="xavier-normal")
    act = get_activation("tanh")
    x = np.random.default_rng(3).standard_normal((1, width))
    _, _, state = layer_forward(stack, act, 1, x, x)
    block_jac = np.eye(width)[:, None, :]  # ∂x/∂x, layout (units, inputs, n_0)
    branch_jac = (state.deriv.T[:, :, None] * stack.weights[0][:, None, :])  # ∂φ(Wx)/∂x
    jac = close_block_jacobian(stack.arch, state, block_jac, branch_jac)[:, 0, :]
    alpha = 4 ** 0.25  # N = 2 blocks: (2N)^¼
    w = torch.tensor(stack.weights[0])

    def block(v):
        return torch.nn.functional.layer_norm(alpha * v + torch.tanh(v @ w.T), (width,), eps=1e-5)

    expected = torch.autograd.functional.jacobian(block, torch.tensor(x[0])).numpy()
    assert np.allclose(jac, expected, rtol=1e3 * F64_EPS, atol=1e3 * F64_EPS)


# -- listing and the CLI ---------------------------------------------------------------------


def test_scheme_table_lists_the_presets():
    rows = scheme_table(residual_inits=True)
    presets = [row for row in rows if row["kind"] == "residual-init"]
    assert [row["name"] for row in presets] == list(RESIDUAL_INIT_NAMES)
    assert all(row["formula"] and row["reference"] for row in presets)
    assert "kind" not in scheme_table()[0]  # the plain listing is unchanged


@pytest.fixture
def run(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_params_record_the_constants(run):
    result = run("propagate", "--residual", "--depth", "6", "--width", "16", "--batch", "8",
                 "--residual-init", "deepnorm", "-f", "json")
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["params"]
    assert params["residual_init"] == "deepnorm"
    assert params["residual_alpha"] == pytest.approx(12 ** 0.25, rel=4 * F64_EPS)
    assert params["branch_scale"] == pytest.approx(48 ** -0.25, rel=4 * F64_EPS)
    result = run("propagate", "--residual", "--depth", "8", "--width", "16", "--batch", "8",
                 "--residual-init", "gpt2", "-f", "json")
    params = json.loads(result.stdout)["params"]
    assert params["branch_scale"] == pytest.approx(0.25, rel=4 * F64_EPS) and params["residual_alpha"] == 1.0


def test_cli_train_records_the_constants(run):
    result = run("train", "--residual", "--depth", "5", "--width", "16", "--samples", "32", "--epochs", "2",
                 "--schemes", "he-normal", "--residual-init", "depth-mup", "--jobs", "1", "-f", "json")
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["params"]
    assert params["residual_alpha"] == pytest.approx(0.5, rel=4 * F64_EPS)  # 4 residual blocks: 1/√4


@pytest.mark.parametrize("args", [
    ("--residual-init", "rezero"),  # without --residual
    ("--residual", "--residual-init", "rezero", "--residual-scale", "1"),  # α given twice
    ("--residual", "--residual-init", "rezer"),
])
def test_cli_refusals(run, args):
    result = run("propagate", "--depth", "4", "--width", "16", "--batch", "8", *args)
    assert result.exit_code == 2


# -- sample: the presets' weights can be drawn and saved -------------------------------------


def test_sample_applies_the_presets_factors_and_saves_them(tmp_path):
    from initcli.sampling import sample
    from initcli.weightfile import load_npz

    sizes = [64] * 5  # 4 layers: 2 blocks of 2
    plain = sample("xavier-normal", sizes=sizes, seed=3)
    gpt2 = sample("xavier-normal", sizes=sizes, seed=3, residual_init="gpt2", block=2)
    fixup = sample("xavier-normal", sizes=sizes, seed=3, residual_init="fixup", block=2)
    n_layer = 2
    for i in (0, 2):  # the first layer of each branch: untouched by gpt2, × L^(−1/(2m−2)) = 2^(−1/2) by fixup
        np.testing.assert_array_equal(gpt2.weights[i], plain.weights[i])
        np.testing.assert_allclose(fixup.weights[i], plain.weights[i] * 2 ** -0.5, rtol=2e-7)
    for i in (1, 3):  # the branch's output projection: × 1/√(2·n_layer) by gpt2, zero by fixup
        np.testing.assert_allclose(gpt2.weights[i], plain.weights[i] / math.sqrt(2 * n_layer), rtol=2e-7)
        assert not fixup.weights[i].any()
    assert gpt2.params["residual_init"] == "gpt2" and gpt2.params["branch_scale"] == pytest.approx(0.5)
    target = tmp_path / "w.npz"
    done = CliRunner().invoke(app, ["sample", "--sizes", "64,64,64,64,64", "--seed", "3", "--scheme", "xavier-normal",
                                    "--residual-init", "gpt2", "--block", "2", "--save", str(target), "-f", "csv"])
    assert done.exit_code == 0, done.output
    weights, _, metadata = load_npz(str(target))
    np.testing.assert_array_equal(weights[1], gpt2.weights[1])
    assert metadata["residual_init"] == "gpt2"


def test_sample_refuses_presets_where_they_mean_nothing():
    from initcli.sampling import sample

    with pytest.raises(InitcliError, match="residual"):
        sample("he-normal", shape=[64, 64], residual_init="gpt2")
    with pytest.raises(InitcliError, match="lsuv"):
        sample("lsuv", sizes=[16, 16, 16], residual_init="gpt2")
