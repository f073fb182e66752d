import math

import numpy as np
import pytest

from initcli import propagate
from initcli.activations import ACTIVATION_NAMES, get_activation
from initcli.theory import (
    beside,
    critical,
    dphi_sq,
    fixed_point,
    gain,
    gauss_expect,
    gauss_expect_pair,
    mean_field,
    parts_ways,
    phase,
    phi_sq,
)

Q_VALUES = [1e-8, 1e-3, 0.5, 1.0, 7.0, 1e3, 1e7]


def normal_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2))


def hermite(fn, q, points=300):
    """Independent reference for smooth fn: Gauss–Hermite on the whole line."""
    z, w = np.polynomial.hermite_e.hermegauss(points)
    return float(np.sum(w / w.sum() * fn(math.sqrt(q) * z)))


# -- quadrature against closed forms --------------------------------------------------------


@pytest.mark.parametrize("q", Q_VALUES)
def test_relu_moments(q):
    relu = get_activation("relu")
    assert phi_sq(relu, q) == pytest.approx(q / 2, rel=1e-12)
    assert dphi_sq(relu, q) == pytest.approx(0.5, rel=1e-12)
    assert gauss_expect(relu.fn, q) == pytest.approx(math.sqrt(q / (2 * math.pi)), rel=1e-12)


@pytest.mark.parametrize("q", Q_VALUES)
@pytest.mark.parametrize("slope", [0.01, 0.3])
def test_leaky_relu_moments(q, slope):
    act = get_activation("leaky-relu", slope)
    assert phi_sq(act, q) == pytest.approx(q * (1 + slope**2) / 2, rel=1e-12)
    assert dphi_sq(act, q) == pytest.approx((1 + slope**2) / 2, rel=1e-12)


@pytest.mark.parametrize("q", [1e-4, 0.3, 1.0, 4.0, 30.0])
def test_elu_mean_closed_form(q):
    # E[elu(h)] = E[h; h>0] + E[e^h − 1; h<0] = √(q/2π) + e^{q/2}·Φ(−√q) − 1/2
    want = math.sqrt(q / (2 * math.pi)) + math.exp(q / 2) * normal_cdf(-math.sqrt(q)) - 0.5
    assert gauss_expect(get_activation("elu").fn, q) == pytest.approx(want, rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("q", [1e-3, 1.0, 9.0, 1e4])
def test_gelu_mean_closed_form(q):
    # Stein's lemma: E[h·Φ(h)] = q·E[φ(h)] = q/√(2π(1+q))
    want = q / math.sqrt(2 * math.pi * (1 + q))
    assert gauss_expect(get_activation("gelu").fn, q) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("q", Q_VALUES)
def test_sigmoid_mean_is_one_half(q):
    assert gauss_expect(get_activation("sigmoid").fn, q) == pytest.approx(0.5, rel=1e-13)


def test_selu_is_self_normalising():
    selu = get_activation("selu")
    assert gauss_expect(selu.fn, 1.0) == pytest.approx(0.0, abs=1e-8)
    assert phi_sq(selu, 1.0) == pytest.approx(1.0, rel=1e-8)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "silu", "softplus"])
@pytest.mark.parametrize("q", [0.1, 0.5, 1.0, 2.0])
def test_smooth_activations_agree_with_gauss_hermite(name, q):
    act = get_activation(name)
    assert phi_sq(act, q) == pytest.approx(hermite(lambda h: act.fn(h) ** 2, q), rel=1e-9)
    assert dphi_sq(act, q) == pytest.approx(hermite(lambda h: act.derivative(h, act.fn(h)) ** 2, q), rel=1e-9)


def test_tanh_at_huge_variance():
    # 1 − E[tanh²] = E[sech²(h)] ≈ ∫sech² · pdf(0) = 2/√(2πq) for q → ∞ (error O(q^-3/2))
    q = 1e8
    assert 1 - phi_sq(get_activation("tanh"), q) == pytest.approx(2 / math.sqrt(2 * math.pi * q), rel=1e-6)


@pytest.mark.parametrize("c", [-0.95, -0.4, 0.0, 0.3, 0.8, 0.999])
@pytest.mark.parametrize("q", [0.01, 1.0, 50.0])
def test_relu_pair_is_the_arc_cosine_kernel(c, q):
    # Cho & Saul 2009: E[relu(u1)relu(u2)] = q/(2π)·(sin θ + (π − θ)cos θ), θ = arccos c
    theta = math.acos(c)
    want = q / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * c)
    relu = get_activation("relu")
    assert gauss_expect_pair(relu.fn, relu.fn, q, c) == pytest.approx(want, rel=1e-10)


def test_pair_at_full_correlation_is_the_second_moment():
    tanh = get_activation("tanh")
    assert gauss_expect_pair(tanh.fn, tanh.fn, 0.7, 1.0) == pytest.approx(phi_sq(tanh, 0.7), rel=1e-12)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_every_activation_integrates(name):
    act = get_activation(name)
    for q in Q_VALUES:
        assert math.isfinite(phi_sq(act, q)) and math.isfinite(dphi_sq(act, q))


# -- the mean-field recursion ---------------------------------------------------------------


def test_he_relu_recursion_is_flat():
    layers = mean_field(get_activation("relu"), [2 / 100] * 6, [100] * 7, input_second_moment=1.5)
    for layer in layers:
        assert layer.preact_var == pytest.approx(3.0, rel=1e-12)
        assert layer.grad_var == pytest.approx(0.5, rel=1e-12)
        assert layer.chi == pytest.approx(1.0, rel=1e-12)


def test_linear_recursion_with_unequal_sizes_and_bias():
    sizes = [10, 40, 20, 5]
    weight_vars = [0.3 / 10, 0.5 / 40, 2.0 / 20]
    layers = mean_field(get_activation("linear"), weight_vars, sizes, bias_var=0.1, input_second_moment=2.0)
    q1 = 0.3 * 2.0 + 0.1
    q2 = 0.5 * q1 + 0.1
    q3 = 2.0 * q2 + 0.1
    assert [layer.preact_var for layer in layers] == pytest.approx([q1, q2, q3], rel=1e-12)
    # backward: Var(δ_l) = Var(δ_{l+1})·fan_out_{l+1}·Var(W_{l+1})
    g3 = 1.0
    g2 = g3 * 5 * weight_vars[2]
    g1 = g2 * 20 * weight_vars[1]
    assert [layer.grad_var for layer in layers] == pytest.approx([g1, g2, g3], rel=1e-12)


def test_propagate_theory_columns_match_closed_form():
    result = propagate("he-normal", "relu", depth=5, width=64, batch=32, input_std=2.0, bias_std=0.5)
    q = 2 * 4.0 + 0.25
    for row in result.rows():
        assert row["theory_preact_var"] == pytest.approx(q, rel=1e-12)
        q = q + 0.25  # q_l = (2/2)·q_{l-1} + σ_b²
    assert result.rows()[-1]["theory_grad_var"] == pytest.approx(0.5, rel=1e-12)


def test_propagate_follows_theory_on_wide_layers():
    result = propagate("xavier-normal", "tanh", depth=20, width=1024, batch=512, dtype="float64")
    for row in result.rows():
        assert row["preact_var"] == pytest.approx(row["theory_preact_var"], rel=3 * math.sqrt(2 / 1024))
        assert row["grad_var"] == pytest.approx(row["theory_grad_var"], rel=0.15)
        assert row["off_theory"] == ""


def test_constant_init_has_no_theory():
    row = propagate("constant", "tanh", depth=2, width=16, batch=8).rows()[0]
    assert row["theory_preact_var"] is None and row["chi"] is None


def test_parting_ways_is_flagged():
    relu = get_activation("relu")
    sizes = [256] * 5
    columns = beside(relu, [2 / 256] * 4, sizes, bias_var=0.0, input_second_moment=1.0,
                     measured_preact=[2.0, 2.1, 200.0, 1.9], measured_grad=[0.5, 0.5, 0.5, 1e-4])
    assert [c.off_theory for c in columns] == ["", "", "preact", "grad"]
    assert parts_ways(0.0, 1.0, 0.1) and not parts_ways(0.0, 0.0, 0.1)
    assert not parts_ways(math.inf, 1.0, 0.1)  # overflow is reported on its own


# -- gains ----------------------------------------------------------------------------------


def test_relu_gains_are_root_two():
    g = gain("relu")
    assert g.forward_gain == pytest.approx(math.sqrt(2), rel=1e-12)
    assert g.backward_gain == pytest.approx(math.sqrt(2), rel=1e-12)
    assert g.torch_gain == math.sqrt(2)


def test_selu_forward_gain_is_one():
    assert gain("selu").forward_gain == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "silu", "softplus"])
def test_smooth_gains_against_gauss_hermite(name):
    act = get_activation(name)
    g = gain(act)
    assert g.forward_gain == pytest.approx(1 / math.sqrt(hermite(lambda h: act.fn(h) ** 2, 1.0)), rel=1e-9)
    assert g.backward_gain == pytest.approx(
        1 / math.sqrt(hermite(lambda h: act.derivative(h, act.fn(h)) ** 2, 1.0)), rel=1e-9)


def test_gain_keeps_variance_in_a_real_stack():
    # LeCun scaled by the forward gain keeps q = 1 through a wide tanh stack, for real
    # (inputs of std 1/g so that q_1 = g²·E[x²] = 1 too)
    g = gain("tanh").forward_gain
    layers = propagate("lecun-normal", "tanh", gain=g, input_std=1 / g, depth=4, width=1024, batch=512,
                       dtype="float64").layers
    for layer in layers:
        assert layer.preact_var == pytest.approx(1.0, rel=4 * math.sqrt(2 / 1024))


# -- the edge of chaos ----------------------------------------------------------------------


def test_critical_points_with_zero_bias():
    assert critical("relu")[0] == pytest.approx(math.sqrt(2), rel=1e-9)
    assert critical("linear")[0] == pytest.approx(1.0, rel=1e-9)
    assert critical("tanh")[0] == pytest.approx(1.0, rel=1e-9)


def test_tanh_with_bias_is_critical_by_an_independent_check():
    sigma_b = 0.05
    sigma_w, phases = critical("tanh", sigma_b)
    # iterate the length map with Gauss–Hermite (tanh is smooth) to q*, then χ = 1 there
    q = 1.0
    for _ in range(2000):
        q = sigma_w**2 * hermite(lambda h: np.tanh(h) ** 2, q) + sigma_b**2
    chi = sigma_w**2 * hermite(lambda h: 1 / np.cosh(h) ** 4, q)
    assert chi == pytest.approx(1.0, abs=1e-6)
    edge = next(p for p in phases if p.phase == "critical")
    assert edge.q_star == pytest.approx(q, rel=1e-6)
    assert [p.phase for p in phases] == ["ordered"] * 4 + ["critical"] + ["chaotic"] * 4


def test_depth_scales_in_the_ordered_phase():
    p = phase(get_activation("tanh"), 0.9, 0.0)
    assert p.q_star == 0 and p.chi == pytest.approx(0.81, rel=1e-9)
    assert p.xi_c == pytest.approx(-1 / math.log(0.81), rel=1e-9)
    assert p.max_depth == pytest.approx(6 * p.xi_c)


def test_chaotic_correlation_fixed_point_by_independent_quadrature():
    sigma_w, sigma_b = 1.5, 0.05
    p = phase(get_activation("tanh"), sigma_w, sigma_b)
    assert p.phase == "chaotic" and 0 <= p.c_star < 1
    z, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    c = p.c_star
    u1 = math.sqrt(p.q_star) * z[:, None]
    u2 = math.sqrt(p.q_star) * (c * z[:, None] + math.sqrt(1 - c * c) * z[None, :])
    mapped = (sigma_w**2 * np.sum(w[:, None] * w[None, :] * np.tanh(u1) * np.tanh(u2)) + sigma_b**2) / p.q_star
    assert mapped == pytest.approx(c, abs=1e-6)


def test_fixed_point_extremes():
    relu = get_activation("relu")
    assert fixed_point(relu, 1.0, 0.0) == 0.0  # q halves each layer
    assert fixed_point(relu, 2.0, 0.1) == math.inf  # q doubles each layer
    assert fixed_point(relu, 1.0, 0.3) == pytest.approx(0.09 / 0.5, rel=1e-9)  # q = q/2 + σ_b²
