import math

import numpy as np
import pytest

from initcli.activations import ACTIVATION_NAMES, erf, get_activation, norm_cdf, sigmoid, softplus
from initcli.errors import InitcliError

# Independent scalar references, written from the textbook definitions with math's functions.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
REFERENCE = {
    "linear": lambda x: x,
    "relu": lambda x: max(x, 0.0),
    "leaky-relu": lambda x: x if x > 0 else 0.01 * x,
    "tanh": math.tanh,
    "sigmoid": lambda x: 1 / (1 + math.exp(-x)),
    "selu": lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * math.expm1(x)),
    "elu": lambda x: x if x > 0 else math.expm1(x),
    "gelu": lambda x: 0.5 * x * math.erfc(-x / math.sqrt(2)),  # erfc form: no cancellation for x < 0
    "silu": lambda x: x / (1 + math.exp(-x)),
    "softplus": lambda x: math.log1p(math.exp(x)),
}


def test_every_activation_has_a_reference():
    assert set(REFERENCE) == set(ACTIVATION_NAMES)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_function_matches_reference(name):
    x = np.linspace(-8, 8, 2001)
    got = get_activation(name).fn(x)
    want = np.array([REFERENCE[name](v) for v in x])
    # both sides are a few float64 operations (≲ 10 roundings of eps64/2 each, ~1e-15):
    # rtol is ~450·eps64; atol covers values that round to ~0 differently (gelu far left)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_derivative_matches_central_difference(name, dtype):
    act = get_activation(name)
    # keep clear of the kink at 0, where the one-sided slopes differ
    x = np.concatenate([np.linspace(-6, -0.05, 300), np.linspace(0.05, 6, 300)])
    step = 1e-6
    numeric = (act.fn(x + step) - act.fn(x - step)) / (2 * step)
    x_typed = x.astype(dtype)
    analytic = act.derivative(x_typed, act.fn(x_typed))
    assert analytic.dtype == dtype
    # the central difference (in float64) errs by h²·|φ‴|/6 ≈ 1e-12 plus eps64·|φ|/h ≈ 1.3e-9
    # (|φ| ≤ 6); float32 derivatives round ~10 times (eps32 = 1.2e-7 each) and 1 − tanh² or
    # s(1 − s) cancel to an absolute eps32: 1e-7 is ~75× the first, 1e-5 ~80·eps32
    tol = 1e-7 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(analytic, numeric, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_inputs_are_finite_and_silent(name, dtype):
    # pytest turns RuntimeWarning into an error (pyproject), so an overflow warning fails here
    act = get_activation(name)
    x = np.array([-1e4, -1000, -100, 0, 100, 1000, 1e4], dtype=dtype)
    y = act.fn(x)
    d = act.derivative(x, y)
    assert y.dtype == dtype and d.dtype == dtype
    assert np.isfinite(y).all() and np.isfinite(d).all()


def test_stable_limits():
    assert sigmoid(np.array([-1000.0]))[0] == 0.0
    assert sigmoid(np.array([1000.0]))[0] == 1.0
    assert softplus(np.array([1000.0]))[0] == 1000.0
    assert softplus(np.array([-1000.0]))[0] == 0.0


def test_erf_against_math():
    x = np.linspace(-10, 10, 40001)
    want = np.array([math.erf(v) for v in x])
    # the Chebyshev fits interpolate math.erf/erfc to ~1e-15 (their design target); |erf| ≤ 1,
    # so an absolute bound of ~100·eps64 holds everywhere
    np.testing.assert_allclose(erf(x), want, rtol=0, atol=2e-14)


def test_norm_cdf_tail_is_relatively_accurate():
    # the left tail is what GELU needs for large negative inputs
    x = -np.linspace(0, 35, 7001)
    want = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    # erfc's fit is relative to its asymptote, so the relative error stays ~1e-15 down the
    # tail; e^{−z²} carries z²·eps64 ≈ 600·eps64 ≈ 1.4e-13 at z = 35/√2
    np.testing.assert_allclose(norm_cdf(x), want, rtol=1e-12)


def test_torch_gain_table_matches_torch():
    torch = pytest.importorskip("torch", reason="torch not installed (pip install 'initcli[torch]')")
    for name, torch_name in [("linear", "linear"), ("sigmoid", "sigmoid"), ("tanh", "tanh"), ("relu", "relu"),
                             ("selu", "selu")]:
        assert get_activation(name).torch_gain == torch.nn.init.calculate_gain(torch_name)
    for slope in (0.01, 0.2, 1.0):
        # the same √(2/(1+a²)) in float64, possibly in another order: a few eps64 (2.2e-16)
        assert get_activation("leaky-relu", slope).torch_gain == pytest.approx(
            torch.nn.init.calculate_gain("leaky_relu", slope), rel=8 * np.finfo(np.float64).eps)
    for name in ("elu", "gelu", "silu", "softplus"):
        assert get_activation(name).torch_gain is None


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_matches_torch_functional(name):
    torch = pytest.importorskip("torch", reason="torch not installed (pip install 'initcli[torch]')")
    F = torch.nn.functional
    fn = {"linear": lambda t: t, "relu": F.relu, "leaky-relu": lambda t: F.leaky_relu(t, 0.01), "tanh": torch.tanh,
          "sigmoid": torch.sigmoid, "selu": F.selu, "elu": F.elu, "gelu": F.gelu, "silu": F.silu,
          "softplus": lambda t: F.softplus(t, threshold=1e9)}[name]
    x = np.linspace(-30, 30, 6001)
    # float64 on both sides, a few roundings each (rtol ~450·eps64). Absolute slack: torch
    # forms gelu as x·(1 + erf(x/√2))/2, which cancels for x << 0 (1 + erf rounds to 0 or a
    # few eps64 there, while ours keeps Φ(x) ≈ 1e-16 relative): |gelu| < 1e-15 on that side
    np.testing.assert_allclose(get_activation(name).fn(x), fn(torch.from_numpy(x)).numpy(), rtol=1e-12, atol=1e-15)


def test_unknown_activation_suggests():
    with pytest.raises(InitcliError) as info:
        get_activation("tanhh")
    assert info.value.option == "--activation"
    assert "tanh" in str(info.value)


@pytest.mark.parametrize("slope", [1e160, -1000.5, math.inf, math.nan, True, "0.2"])
def test_negative_slope_out_of_range_is_refused(slope):
    # `--negative-slope 1e160` raised OverflowError (34, 'Numerical result out of range')
    with pytest.raises(InitcliError) as info:
        get_activation("leaky-relu", slope)
    assert info.value.param == "negative_slope" and "1000" in info.value.message


@pytest.mark.parametrize("slope", [-1000.0, 0.0, 1000.0])
def test_negative_slope_range_is_usable(slope):
    act = get_activation("leaky-relu", slope)
    assert act.torch_gain == pytest.approx(math.sqrt(2 / (1 + slope**2)), rel=8 * np.finfo(np.float64).eps)


def test_aliases():
    assert get_activation("swish").name == "silu"
    assert get_activation("leaky_relu").name == "leaky-relu"


def test_gelu_in_one_pass_is_bit_identical_to_fn_then_derivative():
    """`Activation.apply` shares GELU's Φ between φ and φ': the same bytes, in both dtypes and
    across block boundaries (100,003 entries: three blocks and a partial one)."""
    import numpy as np

    from initcli.activations import get_activation

    gelu = get_activation("gelu")
    for dtype in (np.float32, np.float64):
        x = (np.random.default_rng(0).standard_normal(100_003) * 5).astype(dtype)
        act, deriv = gelu.apply(x)
        assert act.dtype == deriv.dtype == dtype
        assert np.array_equal(act, gelu.fn(x)) and np.array_equal(deriv, gelu.derivative(x, act))


def test_float32_gelu_and_derivative_keep_float32_accuracy_down_the_left_tail():
    """float32 GELU is computed in float32 (x·Φ(x) with Φ(−|x|) = e^{−x²/2}·R(|x|)); it must stay
    within a few float32 roundings of the exact values from math.erfc, relatively, down to
    x = −14, where Φ(x) ≈ 8e-45: the 1 + erf(x/√2) form would give 0 from x ≈ −5.5 on."""
    gelu = get_activation("gelu")
    rng = np.random.default_rng(1)
    x = np.concatenate([np.linspace(-14, 14, 140_001), -np.logspace(-7, math.log10(14), 20_001),
                        rng.standard_normal(20_000) * 3]).astype(np.float32)
    act, deriv = gelu.apply(x)
    assert act.dtype == deriv.dtype == np.float32
    exact = x.astype(np.float64)  # every float32 is a float64: the references see the same inputs
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in exact])
    pdf = np.exp(-0.5 * exact * exact) / math.sqrt(2 * math.pi)
    eps = float(np.finfo(np.float32).eps)
    # Roundings: e^{−x²/2} is two float32 exps and a product (x² split so that its rounding does
    # not grow with x²: ≤ 3 eps), R(|x|) its fit (4e-8, a third of eps) and a degree-9 Horner
    # scheme in t ∈ (0, 1] (≤ 2 eps), then two or three products and a difference: 8 eps
    # bounds x·Φ(x) relatively; φ'(x) = Φ(x) + x·φ(x) passes through 0 near x = −0.75, so its
    # error is bounded relative to the size of what it adds, Φ(x) + |x|·φ(x). Below float32's
    # normal range (x < −13) values are multiples of 2^−149, and |x|·Φ(−|x|) multiplies the
    # spacing of Φ's subnormals by up to 14: 16·2^−149 absolute.
    rtol, atol = 8 * eps, 16 * 2.0**-149
    want_act = exact * cdf
    want_deriv = cdf + exact * pdf
    act_error = np.abs(act - want_act) / (rtol * np.abs(want_act) + atol)
    deriv_error = np.abs(deriv - want_deriv) / (rtol * (cdf + np.abs(exact) * pdf) + atol)
    assert act_error.max() <= 1, f"gelu at x = {x[act_error.argmax()]}: {act_error.max():.2f} × the bound"
    assert deriv_error.max() <= 1, f"gelu' at x = {x[deriv_error.argmax()]}: {deriv_error.max():.2f} × the bound"
    # the far left tail relatively, where 1 + erf cancels: Φ(−10) = 7.6e-24
    tail = (exact <= -10) & (np.abs(want_act) > 1e-36)
    assert tail.sum() > 1000
    assert np.max(np.abs(act[tail] / want_act[tail] - 1)) <= rtol
    assert np.max(np.abs(deriv[tail] / want_deriv[tail] - 1)) <= rtol


def test_float32_gelu_of_non_finite_and_huge_inputs_is_x_times_phi():
    """The float32 path gives what x·Φ(x) and Φ(x) + x·φ(x) give in float64: gelu(+inf) = inf,
    gelu(−inf) = nan (−inf·0), nan stays nan, and values near float32's largest are exact."""
    gelu = get_activation("gelu")
    x = np.array([np.inf, -np.inf, np.nan, 3e38, -3e38, 1e20, -1e20, 0.0, -0.0, 1.0], dtype=np.float32)
    act, deriv = gelu.apply(x)
    want_act, want_deriv = gelu.apply(x.astype(np.float64))
    np.testing.assert_array_equal(act, want_act.astype(np.float32))
    np.testing.assert_allclose(deriv, want_deriv.astype(np.float32), rtol=8 * np.finfo(np.float32).eps)
    assert np.isnan(deriv[:3]).all()
