"""--param sp|ntk|mup: the abc table, the engine's output multiplier (against torch
autograd), the factors on weights and learning rates, and sp's bytes unchanged."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli.activations import get_activation
from initcli.cli import app
from initcli.engine import Stack, apply_parametrization, build_stack, fold_multipliers, forward, make_architecture, vjp
from initcli.errors import InitcliError
from initcli.parametrization import TABLE, param_table, parametrize, predicted_slope
from initcli.propagation import propagate
from initcli.schemes import make_init
from initcli.training import Optimizer, build_network, gradients, make_task, train

F64_EPS = float(np.finfo(np.float64).eps)
F32_EPS = float(np.finfo(np.float32).eps)
runner = CliRunner()


# -- the table ------------------------------------------------------------------------------


def test_table_rows_as_the_papers_give_them():
    # Yang et al. 2022 Table 3 (µP): input SGD LR η·fan_out; hidden Adam LR η/fan_in; readout
    # init var 1/fan_in² (the scheme's 1/fan_in times 1/n) and LR η/fan_in for both
    mup = TABLE["mup"]
    assert (mup["input"].sgd_lr, mup["input"].adam_lr, mup["input"].variance) == (1, 0, 0)
    assert (mup["hidden"].sgd_lr, mup["hidden"].adam_lr, mup["hidden"].variance) == (0, -1, 0)
    assert (mup["readout"].variance, mup["readout"].sgd_lr, mup["readout"].adam_lr) == (-1, -1, -1)
    # NTK: W = w/√fan_in with w ~ N(0, σ²): the same variance at init
    assert TABLE["ntk"]["hidden"].multiplier == -0.5 and TABLE["ntk"]["hidden"].variance == 1
    assert all(e.multiplier == e.variance == e.sgd_lr == e.adam_lr == 0 for e in TABLE["sp"].values())
    assert len(param_table()) == 9


def test_parametrize_factors_for_a_stack():
    p = parametrize("mup", [2, 512, 512, 1], base_width=128)
    assert [layer.role for layer in p.layers] == ["input", "hidden", "readout"]
    assert p.layers[0].sgd_lr == pytest.approx(4, rel=F64_EPS)  # fan_out/base = 512/128
    assert p.layers[1].adam_lr == pytest.approx(1 / 4, rel=F64_EPS)
    assert p.layers[2].std_factor == pytest.approx(1 / 2, rel=F64_EPS)  # √(1/n)
    ntk = parametrize("ntk", [2, 512, 512, 1])
    for layer in ntk.layers[1:]:
        assert layer.multiplier * layer.std_factor == pytest.approx(1, rel=2 * F64_EPS)
    assert ntk.params()["multipliers"][1] == pytest.approx(512 ** -0.5, rel=F64_EPS)


def test_predicted_exponents():
    assert predicted_slope("mup", "hidden", 3) == 0.0
    assert predicted_slope("mup", "readout", 0) == -0.5  # drawn with variance 1/fan_in²
    assert predicted_slope("mup", "readout", 0, readout_zero=True) is None
    assert predicted_slope("sp", "hidden", 0) == 0.0
    assert predicted_slope("sp", "hidden", 1) is None


@pytest.mark.parametrize("name", ["bogus", "", "mu-p"])
def test_unknown_param_refused(name):
    with pytest.raises(InitcliError) as err:
        parametrize(name, [4, 4])
    assert err.value.param == "param"


# -- the engine's multiplier against torch ----------------------------------------------------


@pytest.mark.parametrize("residual", [False, True])
def test_multiplier_forward_backward_against_torch(residual):
    torch = pytest.importorskip("torch")
    width, depth, batch = 12, 4, 5
    arch = make_architecture(residual, 0.7, 2 if residual else 1, None, None, depth)
    base = build_stack(make_init("he-normal", activation="tanh"), [width] * (depth + 1), bias_std=0.3, seed=3,
                       dtype="float64", arch=arch)
    multipliers = (1.7, 0.3, 1.0, 2.5)
    stack = apply_parametrization(base, None, multipliers)
    act = get_activation("tanh")
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((batch, width)), rng.standard_normal((batch, width))
    trace = forward(stack, act, x)
    grads, input_grad = vjp(stack, trace, g)

    ws = [torch.tensor(w, requires_grad=True) for w in stack.weights]
    bs = [torch.tensor(b, requires_grad=True) for b in stack.biases]
    xt = torch.tensor(x, requires_grad=True)
    a = block_input = xt
    for i, (w, b, m) in enumerate(zip(ws, bs, multipliers), start=1):
        if arch.opens_block(i):
            block_input = a
        branch = torch.tanh(m * (a @ w.T) + b)
        a = block_input + 0.7 * branch if arch.closes_block(i) else branch
    (a * torch.tensor(g)).sum().backward()
    # float64, a handful of products of length 12: a few hundred eps covers the reassociation
    tol = 300 * F64_EPS
    np.testing.assert_allclose(trace.states[-1].act, a.detach().numpy(), rtol=tol, atol=tol)
    for (gw, gb), w, b in zip(grads, ws, bs):
        np.testing.assert_allclose(gw, w.grad.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(gb, b.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(input_grad, xt.grad.numpy(), rtol=tol, atol=tol)


def test_fold_multipliers_is_the_same_function():
    base = build_stack(make_init("he-normal"), [8, 8, 8], seed=1, dtype="float64")
    stack = apply_parametrization(base, None, (0.5, 3.0))
    x = np.random.default_rng(1).standard_normal((4, 8))
    act = get_activation("relu")
    folded = fold_multipliers(stack)
    assert folded.multipliers is None
    np.testing.assert_allclose(forward(folded, act, x).states[-1].act, forward(stack, act, x).states[-1].act,
                               rtol=50 * F64_EPS, atol=50 * F64_EPS)
    assert apply_parametrization(base, None, (1.0, 1.0)).multipliers is None  # nothing to apply


# -- sp is bit-identical ------------------------------------------------------------------------


def test_sp_propagate_rows_bit_identical():
    options = dict(depth=4, width=32, batch=16, seed=2)
    assert propagate(**options).rows() == propagate(param="sp", **options).rows()


def test_sp_train_bit_identical():
    options = dict(schemes=["he-normal"], task="moons", samples=64, depth=2, width=16, epochs=3, batch=32)
    for optimizer in ("sgd", "adam"):
        a = train(optimizer=optimizer, **options)
        b = train(optimizer=optimizer, param="sp", **options)
        assert a.runs[0].curve == b.runs[0].curve
        assert a.rows()[0]["final_loss"] == b.rows()[0]["final_loss"]


def test_cli_param_sp_rows_identical_and_recorded():
    base = ["propagate", "--depth", "3", "--width", "16", "--batch", "8", "-f", "json"]
    plain = json.loads(runner.invoke(app, base).stdout)
    sp = json.loads(runner.invoke(app, base + ["--param", "sp"]).stdout)
    assert plain["rows"] == sp["rows"] and sp["params"]["param"] == "sp"
    mup = json.loads(runner.invoke(app, base + ["--param", "mup"]).stdout)
    assert mup["params"]["param"] == "mup" and len(mup["params"]["multipliers"]) == 3


# -- ntk and mup at init and in training -------------------------------------------------------


def test_ntk_at_init_is_sp_function():
    # NTK's w·√n times its multiplier 1/√n: the same weights up to two float32 roundings a layer
    options = dict(depth=4, width=64, batch=32, seed=0)
    sp, ntk = propagate(**options), propagate(param="ntk", **options)
    for a, b in zip(sp.rows(), ntk.rows()):
        assert b["preact_var"] == pytest.approx(a["preact_var"], rel=40 * F32_EPS * b["layer"])
        assert b["theory_preact_var"] == pytest.approx(a["theory_preact_var"], rel=8 * F64_EPS)


def test_mup_readout_variance_in_propagate_and_theory():
    width = 64
    options = dict(depth=3, width=width, batch=32, seed=0)
    sp, mup = propagate(**options).rows(), propagate(param="mup", **options).rows()
    # µP's readout: the scheme's variance over n (Table 3: 1/fan_in²); earlier layers as sp
    forward_columns = ("preact_var", "act_var", "weight_std", "dead_frac", "effective_rank")
    for layer in (0, 1):
        assert all(mup[layer][c] == sp[layer][c] for c in forward_columns)
        # relu's φ' does not see a positive scale, and the readout's factor 1/√64 = 1/8 is a power
        # of two, exact in float32: the gradient below it is sp's over 8, its variance over 64
        assert mup[layer]["grad_var"] == pytest.approx(sp[layer]["grad_var"] / width, rel=8 * F32_EPS)
    assert mup[2]["weight_std"] == pytest.approx(sp[2]["weight_std"] / math.sqrt(width), rel=4 * F32_EPS)
    assert mup[2]["theory_preact_var"] == pytest.approx(sp[2]["theory_preact_var"] / width, rel=8 * F64_EPS)


def test_lsuv_with_param_refused():
    with pytest.raises(InitcliError) as err:
        propagate("lsuv", depth=2, width=8, batch=8, param="mup")
    assert err.value.param == "param"


def _network(param, optimizer, width=32):
    task = make_task("regression", 16, rng=np.random.default_rng(0))
    init = make_init("he-normal", activation="relu")
    net = build_network(init, get_activation("relu"), task, [width, width], seed=0, dtype="float64", param=param)
    return net, task, Optimizer(optimizer, 0.01, net.parameters, net.lr_factors(optimizer))


def test_ntk_sgd_step_is_sp_step_scaled_by_multiplier_squared():
    # W = m·w, Δw = −η·∂L/∂w = −η·m·∂L/∂W, so ΔW = −η·m²·∂L/∂W: an SGD step on sp's weights
    # with each layer's rate times m² (Jacot et al. 2018's NTK scaling of the learning rate)
    sp, task, _ = _network("sp", "sgd")
    ntk, _, opt = _network("ntk", "sgd")
    rows = np.arange(16)
    _, _, sp_grads = gradients(sp, task, rows)
    before = [m * w for stack, _ in ntk.stages for w, m in zip(stack.weights, stack.multipliers)]
    _, _, ntk_grads = gradients(ntk, task, rows)
    opt.step(ntk.parameters, ntk_grads)
    after = [m * w for stack, _ in ntk.stages for w, m in zip(stack.weights, stack.multipliers)]
    multipliers = [m for stack, _ in ntk.stages for m in stack.multipliers]
    weight_grads, i = [], 0
    for stack, _ in sp.stages:  # parameters: each stage's weights, then its biases
        weight_grads += sp_grads[i:i + stack.depth]
        i += 2 * stack.depth
    # the effective weights agree to a few float64 roundings (w·√n·n^−½), so do the gradients:
    # 1e-9 is far above that and far below any missing or doubled factor m
    for b, a, m, g in zip(before, after, multipliers, weight_grads):
        np.testing.assert_allclose(a - b, -0.01 * m * m * g, rtol=1e-9, atol=1e-12 * float(np.abs(g).max()))


def test_mup_adam_rates_per_layer():
    net, _, opt = _network("mup", "adam", width=64)
    # order: the first stage's weights (input, hidden), then its biases, then the readout's
    assert opt.lrs == pytest.approx([0.01, 0.01 / 64, 0.01, 0.01, 0.01 / 64, 0.01], rel=F64_EPS)
    assert json.dumps(train(["he-normal"], task="regression", samples=16, depth=2, width=8, epochs=1,
                            param="mup").params["lr_factors_adam"]) == "[1.0, 0.125, 0.125]"


def test_stack_without_multipliers_unchanged():
    stack = Stack((np.eye(2),), (np.zeros(2),))
    assert stack.multiplier(1) == 1.0
