import math
from functools import cache

import numpy as np
import pytest

from initcli import propagate
from initcli.activations import ACTIVATION_NAMES, get_activation
from initcli.engine import Architecture
from initcli.errors import InitcliError
from initcli.theory import (
    BIAS_STD_MAX,
    PHASES,
    beside,
    correlation_map,
    critical,
    critical_sigma_w,
    critical_steps,
    critical_summary,
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

EPS64 = float(np.finfo(np.float64).eps)  # 2.2e-16
EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7

Q_VALUES = [1e-8, 1e-3, 0.5, 1.0, 7.0, 1e3, 1e7]


def normal_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2))


@cache
def hermite_rule(points):
    z, w = np.polynomial.hermite_e.hermegauss(points)
    return z, w / w.sum()


def hermite(fn, q, points=300):
    """Independent reference for smooth fn: Gauss–Hermite on the whole line. For f analytic in
    the strip |Im z| < d it converges like e^{−d·√(2N)}; tanh's poles at h = ±iπ/2 (sigmoid,
    silu, softplus: ±iπ; gelu is entire) give d = π/(2√q) ≥ 1.1 for q ≤ 2, so at N = 300 the
    reference is good to about e^{−27} ≈ 2e-12 relative."""
    z, w = hermite_rule(points)
    return float(np.sum(w * fn(math.sqrt(q) * z)))


# Tolerances on the quadrature: initcli's panels (24 Gauss–Legendre nodes, exact on polynomials
# of degree 47, the Gaussian tail cut at 12 sd where its mass is 4e-33) integrate these functions
# to about 1e-15; a few hundred nodes are summed, so rounding adds ~300·eps64 ≈ 7e-14 at most.
# QUAD (1e-12) is that with a margin; REF (1e-9) adds the Hermite reference's own error above.
QUAD = 1e-12
REF = 1e-9


# -- quadrature against closed forms --------------------------------------------------------


@pytest.mark.parametrize("q", Q_VALUES)
def test_relu_moments(q):
    relu = get_activation("relu")
    assert phi_sq(relu, q) == pytest.approx(q / 2, rel=QUAD)
    assert dphi_sq(relu, q) == pytest.approx(0.5, rel=QUAD)
    assert gauss_expect(relu.fn, q) == pytest.approx(math.sqrt(q / (2 * math.pi)), rel=QUAD)


@pytest.mark.parametrize("q", Q_VALUES)
@pytest.mark.parametrize("slope", [0.01, 0.3])
def test_leaky_relu_moments(q, slope):
    act = get_activation("leaky-relu", slope)
    assert phi_sq(act, q) == pytest.approx(q * (1 + slope**2) / 2, rel=QUAD)
    assert dphi_sq(act, q) == pytest.approx((1 + slope**2) / 2, rel=QUAD)


@pytest.mark.parametrize("q", [1e-4, 0.3, 1.0, 4.0, 30.0])
def test_elu_mean_closed_form(q):
    # E[elu(h)] = E[h; h>0] + E[e^h − 1; h<0] = √(q/2π) + e^{q/2}·Φ(−√q) − 1/2
    want = math.sqrt(q / (2 * math.pi)) + math.exp(q / 2) * normal_cdf(-math.sqrt(q)) - 0.5
    # the closed form cancels (e^{q/2}Φ(−√q) against 1/2) as q → 0: its terms are ~1/2, so
    # the reference itself is only good to ~eps64·(1/2)/|want| relative, hence the abs part
    assert gauss_expect(get_activation("elu").fn, q) == pytest.approx(want, rel=QUAD, abs=8 * EPS64)


@pytest.mark.parametrize("q", [1e-3, 1.0, 9.0, 1e4])
def test_gelu_mean_closed_form(q):
    # Stein's lemma: E[h·Φ(h)] = q·E[φ(h)] = q/√(2π(1+q))
    want = q / math.sqrt(2 * math.pi * (1 + q))
    assert gauss_expect(get_activation("gelu").fn, q) == pytest.approx(want, rel=QUAD)


@pytest.mark.parametrize("q", Q_VALUES)
def test_sigmoid_mean_is_one_half(q):
    assert gauss_expect(get_activation("sigmoid").fn, q) == pytest.approx(0.5, rel=QUAD)


def test_selu_is_self_normalising():
    # Klambauer et al.'s α and λ solve mean 0, variance 1 to 30 digits; rounded to float64
    # they are off by eps64, so only the quadrature's error remains
    selu = get_activation("selu")
    assert gauss_expect(selu.fn, 1.0) == pytest.approx(0.0, abs=QUAD)
    assert phi_sq(selu, 1.0) == pytest.approx(1.0, rel=QUAD)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "silu", "softplus"])
@pytest.mark.parametrize("q", [0.1, 0.5, 1.0, 2.0])
def test_smooth_activations_agree_with_gauss_hermite(name, q):
    act = get_activation(name)
    assert phi_sq(act, q) == pytest.approx(hermite(lambda h: act.fn(h) ** 2, q), rel=REF)
    assert dphi_sq(act, q) == pytest.approx(hermite(lambda h: act.derivative(h, act.fn(h)) ** 2, q), rel=REF)


def test_tanh_at_huge_variance():
    # 1 − E[tanh²] = E[sech²(h)] ≈ ∫sech² · pdf(0) = 2/√(2πq) for q → ∞; the next term of the
    # expansion of the pdf is O(1/q) relative (1e-8 here), and 1 − E[tanh²] ≈ 8e-5 loses
    # eps64/8e-5 ≈ 3e-12 to cancellation: 100/q bounds both
    q = 1e8
    assert 1 - phi_sq(get_activation("tanh"), q) == pytest.approx(2 / math.sqrt(2 * math.pi * q), rel=100 / q)


@pytest.mark.parametrize("c", [-0.95, -0.4, 0.0, 0.3, 0.8, 0.999])
@pytest.mark.parametrize("q", [0.01, 1.0, 50.0])
def test_relu_pair_is_the_arc_cosine_kernel(c, q):
    # Cho & Saul 2009: E[relu(u1)relu(u2)] = q/(2π)·(sin θ + (π − θ)cos θ), θ = arccos c
    theta = math.acos(c)
    want = q / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * c)
    relu = get_activation("relu")
    assert gauss_expect_pair(relu.fn, relu.fn, q, c) == pytest.approx(want, rel=QUAD)


def test_pair_at_full_correlation_is_the_second_moment():
    tanh = get_activation("tanh")
    assert gauss_expect_pair(tanh.fn, tanh.fn, 0.7, 1.0) == pytest.approx(phi_sq(tanh, 0.7), rel=QUAD)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_every_activation_integrates(name):
    act = get_activation(name)
    for q in Q_VALUES:
        assert math.isfinite(phi_sq(act, q)) and math.isfinite(dphi_sq(act, q))


# -- the mean-field recursion ---------------------------------------------------------------
# Each layer adds one quadrature's error (~1e-15) to the previous: a few layers stay within QUAD.


def test_he_relu_recursion_is_flat():
    layers = mean_field(get_activation("relu"), [2 / 100] * 6, [100] * 7, input_second_moment=1.5)
    for layer in layers:
        assert layer.preact_var == pytest.approx(3.0, rel=QUAD)
        assert layer.grad_var == pytest.approx(0.5, rel=QUAD)
        assert layer.chi == pytest.approx(1.0, rel=QUAD)


def test_linear_recursion_with_unequal_sizes_and_bias():
    sizes = [10, 40, 20, 5]
    weight_vars = [0.3 / 10, 0.5 / 40, 2.0 / 20]
    layers = mean_field(get_activation("linear"), weight_vars, sizes, bias_var=0.1, input_second_moment=2.0)
    q1 = 0.3 * 2.0 + 0.1
    q2 = 0.5 * q1 + 0.1
    q3 = 2.0 * q2 + 0.1
    assert [layer.preact_var for layer in layers] == pytest.approx([q1, q2, q3], rel=QUAD)
    # backward: Var(δ_l) = Var(δ_{l+1})·fan_out_{l+1}·Var(W_{l+1})
    g3 = 1.0
    g2 = g3 * 5 * weight_vars[2]
    g1 = g2 * 20 * weight_vars[1]
    assert [layer.grad_var for layer in layers] == pytest.approx([g1, g2, g3], rel=QUAD)


def test_propagate_theory_columns_match_closed_form():
    result = propagate("he-normal", "relu", depth=5, width=64, batch=32, input_std=2.0, bias_std=0.5)
    q = 2 * 4.0 + 0.25
    for row in result.rows():
        assert row["theory_preact_var"] == pytest.approx(q, rel=QUAD)
        q = q + 0.25  # q_l = (2/2)·q_{l-1} + σ_b²
    assert result.rows()[-1]["theory_grad_var"] == pytest.approx(0.5, rel=QUAD)


def unit_sampling_sd(rows, width, batch):
    """Upper bound on the sd of log(measured/theory) for each layer's pre-activation variance.

    Given layer l−1's activations A (batch × n), a layer's measured variance is the mean over
    its n units of w_jᵀSw_j, S = AᵀA/batch, with w_j i.i.d. Gaussian: relative variance
    2·tr(S²)/(tr S)²/n, and tr(S²)/(tr S)² ≈ 1/r + c² with r the batch's participation ratio
    (the effective_rank column) and c its mean cosine (input_cosine). The inputs are i.i.d.
    Gaussian: r = n·batch/(n + batch), c = 0 (Marchenko–Pastur). The variance map of tanh has
    slope < 1, so earlier layers' errors reach layer l at most undamped: their variances add.
    """
    total, sds = 0.0, []
    spread, cosine = width * batch / (width + batch), 0.0
    for row in rows:
        total += 2 * (1 / spread + cosine**2) / width
        sds.append(math.sqrt(total))
        spread, cosine = row["effective_rank"], row["input_cosine"]
    return sds


def test_propagate_follows_theory_on_wide_layers():
    width, batch = 512, 64
    result = propagate("xavier-normal", "tanh", depth=20, width=width, batch=batch, dtype="float64")
    rows = result.rows()
    for row, sd in zip(rows, unit_sampling_sd(rows, width, batch)):
        assert abs(math.log(row["preact_var"] / row["theory_preact_var"])) < 4 * sd
        # gradients: within 3 of theory's own finite-width spreads (Hanin & Rolnick 2018)
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
    # a ratio that overflows or underflows float64 is still a comparison, not an error
    assert parts_ways(1e-300, 1e300, 0.1) and parts_ways(np.float64(1e300), 1e-300, 0.1)


# -- overflow is a result -------------------------------------------------------------------

ABSURD_Q = [0.0, 1e-300, 1e300, 1e308, math.inf]


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_moments_at_absurd_variances_are_values_not_errors(name):
    # pytest turns RuntimeWarning into an error, so a warning fails here as an exception would
    act = get_activation(name)
    for q in ABSURD_Q:
        assert phi_sq(act, q) >= 0 and dphi_sq(act, q) >= 0, (name, q)  # nan fails too
        mean = gauss_expect(act.fn, q)  # E[φ] may be (−∞ + ∞)/2 = nan at q = ∞ (linear)
        assert not math.isnan(mean) or q == math.inf
    assert math.isnan(phi_sq(act, math.nan))


def test_limits_at_infinite_variance():
    # all the mass goes to ±∞: E[f] = (f(−∞) + f(+∞))/2
    relu, tanh, gelu, sigmoid = (get_activation(n) for n in ("relu", "tanh", "gelu", "sigmoid"))
    assert phi_sq(relu, math.inf) == math.inf and dphi_sq(relu, math.inf) == 0.5
    assert phi_sq(tanh, math.inf) == 1.0 and dphi_sq(tanh, math.inf) == 0.0
    assert phi_sq(sigmoid, math.inf) == 0.5
    assert phi_sq(gelu, math.inf) == math.inf and dphi_sq(gelu, math.inf) == 0.5  # gelu(−∞) is 0·∞


@pytest.mark.parametrize("q", [1e-300, 1e300, 1e308])
def test_relu_moments_at_the_edges_of_float64(q):
    # E[relu(h)²] = q/2 stays finite up to float64's max: only a true overflow gives inf
    relu = get_activation("relu")
    assert phi_sq(relu, q) == pytest.approx(q / 2, rel=QUAD)
    assert dphi_sq(relu, q) == pytest.approx(0.5, rel=QUAD)


@pytest.mark.parametrize("weight_var", [1e300, 1e308, math.inf, 0.0, 1e-300])
@pytest.mark.parametrize("arch", [Architecture(), Architecture(norm="layer"),
                                  Architecture(residual_scale=1e308, block=2)], ids=["plain", "layer", "residual"])
def test_mean_field_at_absurd_variances(weight_var, arch):
    # `propagate --scheme normal --depth 150` or `--gain 1e100`: variances leave float64's
    # range mid-stack; theory's columns then hold inf/nan like the measurement's, never raise
    sizes = [4] * 5
    for name in ("relu", "tanh", "gelu"):
        act = get_activation(name)
        layers = mean_field(act, [np.float64(weight_var)] * 4, sizes, bias_var=1e300, arch=arch)
        assert len(layers) == 4
        columns = beside(act, [weight_var] * 4, sizes, bias_var=0.0, input_second_moment=1e308, arch=arch,
                         measured_preact=[math.inf, 1e308, 0.0, math.nan], measured_grad=[1e-300, 1e300, 0.0, 1.0])
        assert len(columns) == 4


def test_overflowing_relu_stack_is_inf_then_stays_inf():
    relu = get_activation("relu")
    layers = mean_field(relu, [1e200] * 4, [1] * 5)  # q multiplies by 1e200/2 a layer
    assert layers[0].preact_var == pytest.approx(1e200, rel=QUAD)
    assert [layer.preact_var for layer in layers[2:]] == [math.inf, math.inf]
    assert all(layer.chi == pytest.approx(0.5e200, rel=QUAD) for layer in layers)  # E[relu'²] = 1/2 at any q


def test_layer_norm_sees_unit_variance_after_overflow():
    # LN divides by the layer's own scale, so an overflowed q gives q̃ = q/(q + ε) = 1, not ∞/∞
    tanh = get_activation("tanh")
    layers = mean_field(tanh, [1e308, 0.01, 0.01], [4] * 4, input_second_moment=1e10, arch=Architecture(norm="layer"))
    assert layers[0].preact_var == math.inf
    assert layers[1].preact_var == pytest.approx(0.04 * phi_sq(tanh, 1.0), rel=QUAD)
    assert layers[0].grad_var == 0.0  # LN's backward divides by q + ε


# -- gains ----------------------------------------------------------------------------------


def test_relu_gains_are_root_two():
    g = gain("relu")
    assert g.forward_gain == pytest.approx(math.sqrt(2), rel=QUAD)
    assert g.backward_gain == pytest.approx(math.sqrt(2), rel=QUAD)
    assert g.torch_gain == math.sqrt(2)


def test_selu_forward_gain_is_one():
    assert gain("selu").forward_gain == pytest.approx(1.0, abs=QUAD)  # see test_selu_is_self_normalising


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "silu", "softplus"])
def test_smooth_gains_against_gauss_hermite(name):
    act = get_activation(name)
    g = gain(act)
    assert g.forward_gain == pytest.approx(1 / math.sqrt(hermite(lambda h: act.fn(h) ** 2, 1.0)), rel=REF)
    assert g.backward_gain == pytest.approx(
        1 / math.sqrt(hermite(lambda h: act.derivative(h, act.fn(h)) ** 2, 1.0)), rel=REF)


def test_gain_keeps_variance_in_a_real_stack():
    # LeCun scaled by the forward gain keeps q = 1 through a wide tanh stack, for real
    # (inputs of std 1/g so that q_1 = g²·E[x²] = 1 too)
    g = gain("tanh").forward_gain
    width, batch = 1024, 128
    rows = propagate("lecun-normal", "tanh", gain=g, input_std=1 / g, depth=4, width=width, batch=batch,
                     dtype="float64").rows()
    for row, sd in zip(rows, unit_sampling_sd(rows, width, batch)):
        assert abs(math.log(row["preact_var"])) < 4 * sd


@pytest.mark.parametrize("slope", [1e160, -1e4, math.inf])
def test_absurd_negative_slope_is_refused_by_name(slope):
    for call in (lambda: gain("leaky-relu", slope), lambda: critical("leaky-relu", negative_slope=slope)):
        with pytest.raises(InitcliError) as info:
            call()
        assert info.value.param == "negative_slope" and "1000" in info.value.message


# -- the edge of chaos ----------------------------------------------------------------------


def test_critical_points_with_zero_bias():
    # bisection in log σ_w to 1e-12 relative; χ is σ_w²/2 (relu), σ_w² (linear, tanh at q* = 0)
    assert critical("relu")[0] == pytest.approx(math.sqrt(2), rel=1e-9)
    assert critical("linear")[0] == pytest.approx(1.0, rel=1e-9)
    assert critical("tanh")[0] == pytest.approx(1.0, rel=1e-9)


def test_tanh_with_bias_is_critical_by_an_independent_check():
    sigma_b = 0.05
    sigma_w, phases = critical("tanh", sigma_b)
    # iterate the length map with Gauss–Hermite (tanh is smooth) to q*, then χ = 1 there;
    # the map contracts by e every ξ_q ≈ 4 layers, so 300 layers reach q* to rounding
    q = 1.0
    for _ in range(300):
        q = sigma_w**2 * hermite(lambda h: np.tanh(h) ** 2, q) + sigma_b**2
    chi = sigma_w**2 * hermite(lambda h: 1 / np.cosh(h) ** 4, q)
    # σ_w is bisected to 1e-12 and q* to 1e-13; χ's slope in σ_w is 2/σ_w, in q* O(1)
    assert chi == pytest.approx(1.0, abs=1e-9)
    edge = next(p for p in phases if p.phase == "critical")
    # q* − fixed point of the gap tolerance 1e-12·q divided by 1 − slope (≈ 0.2 at ξ_q ≈ 4)
    assert edge.q_star == pytest.approx(q, rel=1e-9)
    assert [p.phase for p in phases] == ["ordered"] * 4 + ["critical"] + ["chaotic"] * 4


def test_depth_scales_in_the_ordered_phase():
    # Schoenholz et al. 2017: with a finite q* the correlation map's slope at c* = 1 is χ₁
    p = phase(get_activation("tanh"), 0.9, 0.05)
    assert 0 < p.q_star < 1 and p.phase == "ordered" and p.c_star == 1.0
    assert p.xi_c == pytest.approx(-1 / math.log(p.chi), rel=QUAD)
    assert p.max_depth == pytest.approx(6 * p.xi_c)


def test_chaotic_correlation_fixed_point_by_independent_quadrature():
    sigma_w, sigma_b = 1.5, 0.05
    p = phase(get_activation("tanh"), sigma_w, sigma_b)
    assert p.phase == "chaotic" and 0 <= p.c_star < 1
    z, w = hermite_rule(120)
    c = p.c_star
    u1 = math.sqrt(p.q_star) * z[:, None]
    u2 = math.sqrt(p.q_star) * (c * z[:, None] + math.sqrt(1 - c * c) * z[None, :])
    mapped = (sigma_w**2 * np.sum(w[:, None] * w[None, :] * np.tanh(u1) * np.tanh(u2)) + sigma_b**2) / p.q_star
    # c* is found to 1e-12 (regula falsi); 120² Hermite nodes on tanh at q* ≈ 1 are good to ~1e-9
    assert mapped == pytest.approx(c, abs=1e-8)


def test_fixed_point_extremes():
    relu = get_activation("relu")
    assert fixed_point(relu, 1.0, 0.0) == 0.0  # q halves each layer
    assert fixed_point(relu, 2.0, 0.1) == math.inf  # q doubles each layer
    assert fixed_point(relu, 1.0, 0.3) == pytest.approx(0.09 / 0.5, rel=1e-9)  # q = q/2 + σ_b²
    # a bias far below the 1e-12 scan still makes q* = σ_b²/(1 − σ_w²/2) finite, not 0
    assert fixed_point(relu, 1.0, 1e-9) == pytest.approx(1e-18 / 0.5, rel=1e-9, abs=0)


# -- where q* is 0 or ∞: no depth scale for correlations ------------------------------------


def arc_cosine(c):
    """Cho & Saul 2009: the ReLU correlation map (degree-1 arc-cosine kernel, normalised)."""
    return (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi


@pytest.mark.parametrize("c", [-0.9, 0.0, 0.3, 0.7, 0.99])
def test_relu_correlation_map_is_the_arc_cosine_kernel_at_any_sigma_w(c):
    relu = get_activation("relu")
    for sigma_w, q in [(0.8, 1.0), (1.0, 1e-6), (1.6, 1e6)]:
        assert correlation_map(relu, sigma_w, 0.0, q, c) == pytest.approx(arc_cosine(c), rel=QUAD)


@pytest.mark.parametrize("name", ["relu", "leaky-relu", "linear"])
def test_no_finite_fixed_point_means_no_correlation_depth_scale(name):
    # `critical --activation relu` gave ξ_c = 2.24 and called rows "chaotic" whose own c* was 1
    sigma_star, phases = critical(name)
    assert [p.phase for p in phases] == ["vanishing"] * 4 + ["critical"] + ["exploding"] * 4
    for p in phases:
        assert p.xi_c == math.inf and p.max_depth == math.inf
        assert p.q_star in (0.0, math.inf) or p.phase == "critical"
        # relu's arc-cosine map pulls c to 1 (polynomially); linear never moves it
        assert (math.isnan(p.c_star) if name == "linear" else p.c_star == 1.0)
        # the gradient still changes by χ a layer: that depth scale stays finite off the edge
        if p.phase != "critical":
            assert p.xi_grad == pytest.approx(1 / abs(math.log(p.chi)), rel=QUAD)


def test_tanh_without_bias_below_the_edge_freezes_correlations():
    # q* = 0: tanh is linear on the scale √q_l → 0, so c stops moving (it is not pulled to 1
    # with ξ_c = −1/ln χ, as the old answer had it). Iterate the exact (q, c) maps with an
    # independent Gauss–Hermite rule: q dies by 0.81 a layer, c settles away from 1.
    sigma_w = 0.9
    p = phase(get_activation("tanh"), sigma_w, 0.0)
    assert p.phase == "vanishing" and p.xi_c == math.inf and math.isnan(p.c_star)
    assert p.xi_q == pytest.approx(-1 / math.log(sigma_w**2), rel=1e-9)  # q_{l+1} ≈ σ_w²·q_l near 0
    z, w = hermite_rule(80)
    q, c = 1.0, 0.5
    history = []
    for _ in range(60):
        u1 = math.sqrt(q) * z[:, None]
        u2 = math.sqrt(q) * (c * z[:, None] + math.sqrt(1 - c * c) * z[None, :])
        covariance = sigma_w**2 * np.sum(w[:, None] * w[None, :] * np.tanh(u1) * np.tanh(u2))
        q = sigma_w**2 * np.sum(w * np.tanh(math.sqrt(q) * z) ** 2)
        c = covariance / q
        history.append(c)
    # after 60 layers q ~ 0.81^60 ≈ 3e-6 and each further layer moves c by O(q): frozen
    assert abs(history[-1] - history[-11]) < 1e-4 and history[-1] < 0.5


def test_relu_with_bias_has_a_finite_fixed_point_below_the_edge():
    # σ_b > 0, σ_w² < 2: q* = σ_b²/(1 − σ_w²/2) is finite, the phase is ordered and ξ_c = −1/ln χ
    sigma_b = 0.1
    sigma_star, phases = critical("relu", sigma_b)
    assert sigma_star == pytest.approx(math.sqrt(2), rel=1e-9)
    assert [p.phase for p in phases] == ["ordered"] * 4 + ["critical"] + ["exploding"] * 4
    for p in phases[:4]:
        assert p.q_star == pytest.approx(sigma_b**2 / (1 - p.sigma_w**2 / 2), rel=1e-9)
        assert p.chi == pytest.approx(p.sigma_w**2 / 2, rel=QUAD)
        assert p.xi_c == pytest.approx(-1 / math.log(p.chi), rel=1e-9) and p.c_star == 1.0
    for p in phases[5:]:
        assert p.q_star == math.inf and p.xi_c == math.inf


def test_relu_input_cosine_does_not_depend_on_the_gain():
    # Measured: ReLU is positively homogeneous, so with σ_b = 0 a gain only rescales every
    # layer and the cosines are equal up to rounding — which theory must say (ξ_c = inf,
    # no phase boundary in c). The weights are drawn in float32, so they differ from exactly
    # proportional by a relative eps32/2 each; the cosines inherit about that much per layer,
    # twice (numerator, norms): 16·depth·eps32 bounds it with room.
    depth = 8
    runs = [propagate("he-normal", "relu", gain=g, depth=depth, width=256, batch=32, dtype="float64", seed=3,
                      theory=False) for g in (0.8, 1.0)]
    ordered, edge = ([layer.input_cosine for layer in run.layers] for run in runs)
    assert ordered == pytest.approx(edge, abs=16 * depth * EPS32)
    relu = get_activation("relu")
    assert phase(relu, 0.8 * math.sqrt(2), 0.0).xi_c == phase(relu, math.sqrt(2), 0.0).xi_c == math.inf


def relu_cosine_se(c, n, points=160):
    """sd of the cosine of n i.i.d. draws of (relu(u1), relu(u2)), corr(u1, u2) = c, by the
    delta method: Var(Σxy/√(Σx²Σy²)) ≈ E[(xy − f·(x² + y²)/2)²]/(n·E[x²]²), f = E[xy]/E[x²]."""
    z, w = hermite_rule(points)
    x = np.maximum(z[:, None], 0)
    y = np.maximum(c * z[:, None] + math.sqrt(1 - c * c) * z[None, :], 0)
    weights = w[:, None] * w[None, :]
    second = np.sum(weights * x * x)
    f = np.sum(weights * x * y) / second
    return math.sqrt(np.sum(weights * (x * y - f * (x * x + y * y) / 2) ** 2) / n) / second


def test_relu_correlation_map_matches_measured_cosines_layer_by_layer():
    # Given layer l's activations, layer l+1's pre-activations over its n units are n i.i.d.
    # bivariate normals with correlation exactly cos(a, a'), so the next input_cosine is the
    # arc-cosine map of the last one plus the sampling error of n draws (relu_cosine_se; the
    # mean over pairs has at most a single pair's sd). Averaging f over pairs whose cosines
    # spread by ≲ (1 + l)/n (the inputs' 1/n, plus ≤ 1/n a layer: n·se² ≤ 1 for relu) adds
    # at most f''·spread/2, f'' = 1/(π√(1−c²)). Layers are independent, so the mean residual
    # has sd ≤ max se/√(layers): that check would catch a map off by more than ~0.03.
    width, batch, depth = 1024, 32, 10
    cosines = [layer.input_cosine for layer in propagate("he-normal", "relu", depth=depth, width=width, batch=batch,
                                                         dtype="float64", seed=5, theory=False).layers]
    relu = get_activation("relu")
    previous, residuals, ses = 0.0, [], []  # the inputs: i.i.d. Gaussian, mean cosine 0
    for layer, measured in enumerate(cosines):
        predicted = correlation_map(relu, math.sqrt(2), 0.0, 1.0, previous)
        assert predicted == pytest.approx(arc_cosine(previous), rel=QUAD)
        se = relu_cosine_se(previous, width)
        jensen = (1 + layer) / width / (2 * math.pi * math.sqrt(1 - previous**2))
        assert abs(measured - predicted) < 4 * se + jensen, layer
        residuals.append(measured - predicted)
        ses.append(se)
        previous = measured
    assert abs(np.mean(residuals)) < 4 * max(ses) / math.sqrt(depth) + jensen


def test_critical_reports_progress_and_its_total():
    steps = []
    critical("relu", progress=steps.append)
    assert sum(steps) == critical_steps() == len(steps)


def test_summary_says_what_the_regime_is():
    relu_line = critical_summary("relu", 0.0, *critical("relu"))
    assert "critical σ_w = 1.41421" in relu_line and "xi_c = inf" in relu_line and "q* = 0 below" in relu_line
    sigma_w, phases = critical("tanh", 0.05)
    tanh_line = critical_summary("tanh", 0.05, sigma_w, phases)
    assert "q* = 0.1537" in tanh_line and "xi_c = inf" not in tanh_line
    assert all(p.phase in PHASES for p in phases)


@pytest.mark.parametrize("bias_std", [1e308, 1e10, BIAS_STD_MAX * 1.01, -1.0, math.inf, math.nan])
def test_bias_std_out_of_range_is_blamed_on_bias_std(bias_std):
    # `critical --bias-std 1e10` blamed --activation; 1e308 raised OverflowError
    with pytest.raises(InitcliError) as info:
        critical("tanh", bias_std)
    assert info.value.param == "bias_std" and f"{BIAS_STD_MAX:g}" in info.value.message


def test_the_accepted_ranges_have_a_critical_point():
    # sigmoid's σ_w* grows fastest with σ_b (≈ 3.9√σ_b); leaky-relu's shrinks with the slope
    assert critical_sigma_w(get_activation("sigmoid"), BIAS_STD_MAX) < 1e3
    for slope in (1000.0, -1000.0):
        assert critical_sigma_w(get_activation("leaky-relu", slope), 0.0) == pytest.approx(
            math.sqrt(2 / (1 + slope**2)), rel=1e-9)
