"""PyTorch as a reference oracle: initcli's formulas and every propagate statistic against
torch.nn.init and torch autograd. Skipped, with the reason shown, where torch is absent
(pip install 'initcli[torch]'); CI installs it."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (pip install 'initcli[torch]')")

from initcli.activations import get_activation  # noqa: E402
from initcli.engine import Architecture, build_stack  # noqa: E402
from initcli.propagation import measure  # noqa: E402
from initcli.schemes import compute_fans, make_init  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _float64_by_default():
    """Every tensor here is float64 unless said otherwise; restored after, so that no other
    test module's models change dtype with the order the tests run in."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)

SHAPES = [(256, 784), (10, 256), (64, 3, 7, 7), (128, 64, 3, 3), (7, 300), (32, 16, 5), (8, 4, 3, 3, 3)]


def _std_of(fill, shape):
    """The std torch's CPU normal_ uses, read back exactly: fill/z for the same generator state."""
    t = torch.empty(shape)
    fill(t, torch.Generator().manual_seed(0))
    z = torch.empty(shape).normal_(0, 1, generator=torch.Generator().manual_seed(0))
    ratio = (t / z).numpy()
    assert np.ptp(ratio) <= 1e-12 * abs(ratio.max())
    return float(np.median(ratio))


def _bound_of(fill, shape):
    """The bound b of a uniform fill, by least squares against 2u − 1 for the same generator
    state. float64 pairwise sums of N ≤ 2·10⁵ products: relative error ≲ 2·log2(N)·eps64 ≈
    4e-15, far inside the rel=1e-13 it is compared with."""
    t = torch.empty(shape)
    fill(t, torch.Generator().manual_seed(0))
    u = torch.empty(shape).uniform_(0, 1, generator=torch.Generator().manual_seed(0))
    s = (2 * u - 1).numpy()
    return float((t.numpy() * s).sum() / (s * s).sum())


@pytest.mark.parametrize("shape", SHAPES)
def test_fans_match_torch(shape):
    # kaiming with the linear gain 1 has std 1/√fan: read each fan back from torch
    fan_in = round(_std_of(lambda t, g: torch.nn.init.kaiming_normal_(t, mode="fan_in", nonlinearity="linear",
                                                                      generator=g), shape) ** -2)
    fan_out = round(_std_of(lambda t, g: torch.nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="linear",
                                                                       generator=g), shape) ** -2)
    assert compute_fans(shape) == (fan_in, fan_out)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 0.3, 2.5])
def test_every_scheme_torch_has(shape, gain):
    nn = torch.nn.init
    cases = {
        ("xavier-normal", None): lambda t, g: nn.xavier_normal_(t, gain=gain, generator=g),
        ("he-normal", "fan_in"): lambda t, g: nn.kaiming_normal_(t, mode="fan_in", generator=g),
        ("he-normal", "fan_out"): lambda t, g: nn.kaiming_normal_(t, mode="fan_out", generator=g),
        ("lecun-normal", "fan_in"): lambda t, g: nn.kaiming_normal_(t, nonlinearity="linear", generator=g),
        ("normal", None): lambda t, g: nn.normal_(t, std=1.7, generator=g),
    }
    for (name, mode), fill in cases.items():
        kwargs = {"mode": mode} if mode else {}
        our_gain = gain if name == "xavier-normal" else 1.0
        init = make_init(name, gain=our_gain, std=1.7, **kwargs)
        assert init.expected_std(shape) == pytest.approx(_std_of(fill, shape), rel=1e-13), name
    bounds = {
        "xavier-uniform": lambda t, g: nn.xavier_uniform_(t, gain=gain, generator=g),
        "he-uniform": lambda t, g: nn.kaiming_uniform_(t, nonlinearity="relu", generator=g),
        "lecun-uniform": lambda t, g: nn.kaiming_uniform_(t, nonlinearity="linear", generator=g),
        "uniform": lambda t, g: nn.uniform_(t, -0.8, 0.8, generator=g),
    }
    for name, fill in bounds.items():
        init = make_init(name, gain=gain if name == "xavier-uniform" else 1.0, limit=0.8)
        assert init.bound(shape) == pytest.approx(_bound_of(fill, shape), rel=1e-13), name


def test_zeros_and_constant_match_torch():
    t = torch.empty(4, 5)
    torch.nn.init.constant_(t, 0.3)
    np.testing.assert_array_equal(make_init("constant", value=0.3).sample((4, 5), np.random.default_rng(0),
                                                                          np.float64), t.numpy())
    torch.nn.init.zeros_(t)
    np.testing.assert_array_equal(make_init("zeros").sample((4, 5), np.random.default_rng(0), np.float64),
                                  t.numpy())


def test_identity_matches_torch_eye():
    for shape in [(5, 3), (3, 5), (4, 4)]:
        t = torch.empty(shape)
        torch.nn.init.eye_(t)
        np.testing.assert_array_equal(make_init("identity").sample(shape, np.random.default_rng(0), np.float64),
                                      t.numpy())


# -- every propagate statistic against torch autograd --------------------------------------

TORCH_ACTIVATIONS = {
    "linear": lambda h: h, "relu": torch.relu, "leaky-relu": lambda h: torch.nn.functional.leaky_relu(h, 0.01),
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "selu": torch.nn.functional.selu, "elu": torch.nn.functional.elu,
    "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu,
    "softplus": lambda h: torch.nn.functional.softplus(h, threshold=1e9),
}


def _torch_stats(stack, name, x, g):
    """The statistics of THEORY.md, written plainly in torch with autograd."""
    phi = TORCH_ACTIVATIONS[name]
    arch = stack.arch
    weights = [torch.tensor(w, requires_grad=True) for w in stack.weights]
    biases = [torch.tensor(b) for b in stack.biases]
    a = block = torch.tensor(x)
    preacts, outputs = [], []
    for index, (w, b) in enumerate(zip(weights, biases), start=1):
        if arch.opens_block(index):
            block = a
        h = a @ w.T + b
        h.retain_grad()
        preacts.append(h)
        n = torch.nn.functional.layer_norm(h, (h.shape[1],), eps=1e-5) if arch.norm == "layer" else h
        branch = phi(n)
        a = block + arch.residual_scale * branch if arch.closes_block(index) else branch
        outputs.append(a)
    (a * torch.tensor(g)).sum().backward()
    rows = []
    for w, h, out in zip(weights, preacts, outputs):
        centered = out - out.mean(dim=0)
        gram = centered @ centered.T if out.shape[0] <= out.shape[1] else centered.T @ centered
        unit = out / out.norm(dim=1, keepdim=True)
        total = unit.sum(dim=0)
        m = out.shape[0]
        rows.append({
            "weight_std": w.detach().std(unbiased=False).item(),
            "preact_mean": h.mean().item(), "preact_var": h.var(unbiased=False).item(),
            "act_mean": out.mean().item(), "act_var": out.var(unbiased=False).item(),
            "grad_var": h.grad.var(unbiased=False).item(), "weight_grad_var": w.grad.var(unbiased=False).item(),
            "effective_rank": (torch.trace(gram) ** 2 / (gram * gram).sum()).item(),
            "input_cosine": ((total @ total - m) / (m * (m - 1))).item(),
        })
    return rows


@pytest.mark.parametrize("name", list(TORCH_ACTIVATIONS))
@pytest.mark.parametrize("arch", [Architecture(), Architecture(norm="layer"), Architecture(residual_scale=0.6, block=2)],
                         ids=repr)
def test_propagate_statistics_match_torch_autograd(name, arch):
    act = get_activation(name)
    stack = build_stack(make_init("xavier-normal", gain=1.3), (24,) * 5, bias_std=0.1, seed=4, dtype="float64",
                        arch=arch)
    rng = np.random.default_rng(7)
    x, g = rng.standard_normal((40, 24)), rng.standard_normal((40, 24))
    layers, _, _ = measure(stack, act, x, g)
    # Both sides in float64 on 40×24 arrays: products differ in summation order by ≲ 24·eps64
    # relative and the means are pairwise sums (error ≲ log2(960)·eps64·mean|x| ≈ 1e-15·mean|x|),
    # so rel=1e-9 holds with room for the cancellation in near-zero means, and abs=1e-14 for
    # statistics that are 0 up to rounding (a LayerNorm output's mean)
    for ours, theirs in zip(layers, _torch_stats(stack, name, x, g)):
        for key, value in theirs.items():
            assert getattr(ours, key) == pytest.approx(value, rel=1e-9, abs=1e-14), (key, ours.layer)


def test_saturation_and_dead_units_match_torch():
    stack = build_stack(make_init("normal", std=0.5), (16, 16, 16), seed=1, dtype="float64")
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((30, 16)), rng.standard_normal((30, 16))
    # shares of 480 booleans: equal unless an activation lies within rounding (~1e-16) of a
    # threshold, which these fixed draws do not
    for name, flat in (("tanh", lambda a: a.abs() > 0.97), ("sigmoid", lambda a: (a < 0.03) | (a > 0.97))):
        layers, _, _ = measure(stack, get_activation(name), x, g)
        a = torch.tensor(x)
        for layer, w in zip(layers, stack.weights):
            a = TORCH_ACTIVATIONS[name](a @ torch.tensor(w).T)
            assert layer.saturated_frac == pytest.approx(flat(a).double().mean().item(), abs=1e-15)
    layers, _, _ = measure(stack, get_activation("relu"), x, g)
    a = torch.tensor(x)
    for layer, w in zip(layers, stack.weights):
        h = a @ torch.tensor(w).T
        assert layer.dead_frac == pytest.approx((h <= 0).all(dim=0).double().mean().item(), abs=1e-15)
        a = torch.relu(h)


def test_theory_gains_against_torch_table():
    from initcli.theory import gain

    for name, torch_name in (("relu", "relu"), ("tanh", "tanh"), ("selu", "selu"), ("sigmoid", "sigmoid")):
        assert gain(name).torch_gain == pytest.approx(torch.nn.init.calculate_gain(torch_name))
    assert math.isclose(gain("relu").forward_gain, torch.nn.init.calculate_gain("relu"), rel_tol=1e-12)
