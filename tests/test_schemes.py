import math

import numpy as np
import pytest

from initcli.errors import InitcliError
from initcli.schemes import (
    SCHEME_NAMES,
    TRUNCATED_NORMAL_STD,
    Init,
    compute_fans,
    get_scheme,
    ignored_options,
    init_from_params,
    make_init,
)

SHAPES = [(256, 784), (10, 256), (64, 3, 7, 7), (128, 64, 3, 3), (7, 300), (300, 7)]


def formula_std(name, fan_in, fan_out, *, gain=1.0, slope=None):
    """The papers' formulas, written out by hand (THEORY.md)."""
    he_scale = 2 / (1 + slope**2) if slope is not None else 2.0
    return gain * {
        "xavier-normal": math.sqrt(2 / (fan_in + fan_out)),
        "xavier-uniform": math.sqrt(2 / (fan_in + fan_out)),
        "he-normal": math.sqrt(he_scale / fan_in),
        "he-uniform": math.sqrt(he_scale / fan_in),
        "lecun-normal": math.sqrt(1 / fan_in),
        "lecun-uniform": math.sqrt(1 / fan_in),
        "torch-default": 1 / math.sqrt(fan_in) / math.sqrt(3),
    }[name]


def test_fans_of_conv_and_linear_shapes():
    assert compute_fans((256, 784)) == (784, 256)
    assert compute_fans((64, 3, 7, 7)) == (3 * 49, 64 * 49)
    assert compute_fans((8, 4, 3, 5, 2)) == (4 * 30, 8 * 30)


@pytest.mark.parametrize("shape", [(5,), ()])
def test_rank_below_two_is_refused(shape):
    with pytest.raises(InitcliError) as info:
        compute_fans(shape)
    assert info.value.option == "--shape"


@pytest.mark.parametrize("name", ["xavier-normal", "xavier-uniform", "he-normal", "he-uniform", "lecun-normal",
                                  "lecun-uniform", "torch-default"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 0.5, 5 / 3])
def test_expected_std_is_the_formula(name, shape, gain):
    fan_in, fan_out = compute_fans(shape)
    # two float64 evaluations of one formula in different orders: a few ulps (2.2e-16) apart
    assert make_init(name, gain=gain).expected_std(shape) == pytest.approx(
        formula_std(name, fan_in, fan_out, gain=gain), rel=1e-14)


def test_he_with_leaky_relu_uses_the_slope():
    init = make_init("he-normal", activation="leaky-relu", negative_slope=0.2)
    assert init.expected_std((10, 100)) == pytest.approx(math.sqrt(2 / (1.04 * 100)), rel=1e-14)
    # the slope only matters with leaky-relu
    assert make_init("he-normal", activation="tanh", negative_slope=0.2).expected_std((10, 100)) == pytest.approx(
        math.sqrt(2 / 100), rel=1e-14)


def test_mode_override():
    fan_in, fan_out = 784, 256
    assert make_init("he-normal", mode="fan_out").expected_std((fan_out, fan_in)) == pytest.approx(
        math.sqrt(2 / fan_out), rel=1e-14)
    assert make_init("xavier-normal", mode="fan-in").expected_std((fan_out, fan_in)) == pytest.approx(
        math.sqrt(1 / fan_in), rel=1e-14)


def test_bounds():
    shape = (256, 784)
    assert make_init("xavier-uniform").bound(shape) == pytest.approx(math.sqrt(6 / (784 + 256)), rel=1e-14)
    assert make_init("torch-default").bound(shape) == pytest.approx(1 / math.sqrt(784), rel=1e-14)
    assert make_init("he-normal", distribution="truncated-normal").bound(shape) == pytest.approx(
        2 * math.sqrt(2 / 784) / TRUNCATED_NORMAL_STD, rel=1e-14)
    assert make_init("he-normal").bound(shape) is None


def test_truncated_normal_constant():
    # the std of N(0,1) conditioned on (-2, 2): 1 - 2·2·φ(2)/(2Φ(2) - 1)
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    assert pytest.approx(math.sqrt(1 - 4 * phi2 / mass), rel=1e-15) == TRUNCATED_NORMAL_STD


def _kurtosis(distribution):
    return {"normal": 3.0, "uniform": 1.8, "truncated-normal": None}[distribution]


@pytest.mark.parametrize("name", ["xavier-normal", "xavier-uniform", "he-normal", "he-uniform", "lecun-normal",
                                  "lecun-uniform", "torch-default", "normal", "uniform"])
@pytest.mark.parametrize("distribution", [None, "truncated-normal"])
def test_empirical_std_within_sampling_error(name, distribution):
    shape = (512, 1024)
    init = make_init(name, distribution=distribution)
    w = init.sample(shape, np.random.default_rng(1), np.float64)
    n = w.size
    expected = init.expected_std(shape)
    # sd of the sample std ≈ σ·√((κ-1)/(4n)), κ the kurtosis, measured here from the draw itself
    kurtosis = np.mean(w**4) / np.mean(w**2) ** 2
    tolerance = 5 * math.sqrt((kurtosis - 1) / (4 * n))
    assert abs(w.std() / expected - 1) < tolerance
    assert abs(w.mean()) < 5 * expected / math.sqrt(n)
    bound = init.bound(shape)
    if bound is not None:
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.99 * bound  # the draw reaches its support
    # the sample kurtosis has sd √(v/n) by the delta method: v = 24 for a normal, 1.32 for a
    # uniform ((μ8 − μ4²)/μ2⁴ − 4μ4(μ6 − μ2μ4)/μ2⁵ + 4μ4²(μ4 − μ2²)/μ2⁶ with μk = 1/(k+1));
    # 6 sd: 0.0097 and 0.041 at n = 524288
    if init.distribution == "uniform":
        assert kurtosis == pytest.approx(1.8, abs=6 * math.sqrt(1.32 / n))
    elif init.distribution == "normal":
        assert kurtosis == pytest.approx(3.0, abs=6 * math.sqrt(24 / n))


def test_zeros_and_constant():
    rng = np.random.default_rng(0)
    assert not make_init("zeros").sample((4, 5), rng).any()
    w = make_init("constant", value=0.25, gain=2.0).sample((4, 5), rng)
    assert (w == 0.5).all()


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (50, 50), (16, 8, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_orthogonal(shape, gain):
    init = make_init("orthogonal", gain=gain)
    w = init.sample(shape, np.random.default_rng(0), np.float64)
    rows = shape[0]
    flat = w.reshape(rows, -1)
    small = min(flat.shape)
    gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    # Householder QR is orthogonal to O(n·eps64) (Higham, Accuracy and Stability, §19.3); the
    # Gram product adds n roundings: 100·n·eps leaves room for the constants, ≈ 3e-12 here
    tolerance = 100 * max(flat.shape) * np.finfo(np.float64).eps * gain**2
    np.testing.assert_allclose(gram, gain**2 * np.eye(small), atol=tolerance)
    assert math.sqrt(np.mean(w**2)) == pytest.approx(init.expected_std(shape), rel=tolerance)


def test_same_seed_same_weights_and_different_seed_different():
    init = make_init("he-normal")
    a = init.sample((30, 40), np.random.default_rng(7))
    b = init.sample((30, 40), np.random.default_rng(7))
    c = init.sample((30, 40), np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("alias,name", [("xavier", "xavier-normal"), ("glorot", "xavier-normal"),
                                        ("glorot-normal", "xavier-normal"), ("glorot-uniform", "xavier-uniform"),
                                        ("he", "he-normal"), ("kaiming", "he-normal"),
                                        ("kaiming-normal", "he-normal"), ("kaiming-uniform", "he-uniform"),
                                        ("lecun", "lecun-normal"), ("Kaiming_Uniform", "he-uniform")])
def test_aliases(alias, name):
    assert get_scheme(alias).name == name


def test_every_scheme_resolves_and_samples():
    for name in SCHEME_NAMES:
        w = make_init(name).sample((8, 16), np.random.default_rng(0))
        assert w.shape == (8, 16) and w.dtype == np.float32


@pytest.mark.parametrize("kwargs,option", [
    ({"scheme": "xavir"}, "--scheme"), ({"gain": -1.0}, "--gain"), ({"gain": math.nan}, "--gain"),
    ({"std": math.inf}, "--std"), ({"mode": "fan_sideways"}, "--mode"),
    ({"distribution": "cauchy"}, "--distribution"), ({"activation": "rellu"}, "--activation"),
])
def test_bad_arguments_name_their_option(kwargs, option):
    scheme = kwargs.pop("scheme", "he-normal")
    with pytest.raises(InitcliError) as info:
        make_init(scheme, **kwargs)
    assert info.value.option == option


def test_unknown_scheme_suggests_nearest():
    with pytest.raises(InitcliError, match="xavier"):
        get_scheme("xavir")


# -- torch.nn.init as the reference ---------------------------------------------------------


def _torch():
    return pytest.importorskip("torch", reason="torch not installed (pip install 'initcli[torch]')")


def _torch_std_of(fill, shape):
    """The std torch uses, read back exactly: torch's CPU normal_(0, s) is s·z for the z that
    normal_(0, 1) draws from the same generator state, so s = fill / z elementwise."""
    torch = _torch()
    t = torch.empty(shape, dtype=torch.float64)
    fill(t, torch.Generator().manual_seed(0))
    z = torch.empty(shape, dtype=torch.float64).normal_(0, 1, generator=torch.Generator().manual_seed(0))
    ratio = (t / z).numpy()
    # s·z/z in float64: each ratio is s within 2 roundings (≈ 4.4e-16); 1e-12 also absorbs z ≈ 0
    assert ratio.max() - ratio.min() <= 1e-12 * abs(ratio.max())
    return float(np.median(ratio))


def _torch_bound_of(fill, shape):
    """The limit torch uses: uniform_(-b, b) is (2u - 1)·b for the u of uniform_(0, 1)."""
    torch = _torch()
    t = torch.empty(shape, dtype=torch.float64)
    fill(t, torch.Generator().manual_seed(0))
    u = torch.empty(shape, dtype=torch.float64).uniform_(0, 1, generator=torch.Generator().manual_seed(0))
    s = (2 * u - 1).numpy()
    bound = float((t.numpy() * s).sum() / (s * s).sum())
    np.testing.assert_allclose(t.numpy(), bound * s, atol=1e-14)  # |t| ≤ 1: float64 rounding, ~1e-16
    return bound


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 0.7, 5 / 3])
def test_xavier_matches_torch(shape, gain):
    init = _torch().nn.init
    std = _torch_std_of(lambda t, g: init.xavier_normal_(t, gain=gain, generator=g), shape)
    # torch's Python float64 formula against ours, read back through s·z/z: a few ulps apart
    assert make_init("xavier-normal", gain=gain).expected_std(shape) == pytest.approx(std, rel=1e-13)
    bound = _torch_bound_of(lambda t, g: init.xavier_uniform_(t, gain=gain, generator=g), shape)
    assert make_init("xavier-uniform", gain=gain).bound(shape) == pytest.approx(bound, rel=1e-13)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2])
def test_kaiming_matches_torch(shape, mode, slope):
    init = _torch().nn.init
    std = _torch_std_of(lambda t, g: init.kaiming_normal_(t, a=slope, mode=mode, nonlinearity="leaky_relu",
                                                          generator=g), shape)
    ours = make_init("he-normal", mode=mode, activation="leaky-relu", negative_slope=slope)
    assert ours.expected_std(shape) == pytest.approx(std, rel=1e-13)
    bound = _torch_bound_of(lambda t, g: init.kaiming_uniform_(t, a=slope, mode=mode, nonlinearity="leaky_relu",
                                                               generator=g), shape)
    ours = make_init("he-uniform", mode=mode, activation="leaky-relu", negative_slope=slope)
    assert ours.bound(shape) == pytest.approx(bound, rel=1e-13)


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_kaiming_and_lecun_match_torch(shape):
    init = _torch().nn.init
    std = _torch_std_of(lambda t, g: init.kaiming_normal_(t, nonlinearity="relu", generator=g), shape)
    assert make_init("he-normal").expected_std(shape) == pytest.approx(std, rel=1e-13)
    # LeCun normal is kaiming with the linear gain 1
    std = _torch_std_of(lambda t, g: init.kaiming_normal_(t, nonlinearity="linear", generator=g), shape)
    assert make_init("lecun-normal").expected_std(shape) == pytest.approx(std, rel=1e-13)


@pytest.mark.parametrize("fan_in,fan_out", [(784, 256), (3, 5), (1000, 10)])
def test_torch_default_matches_nn_linear(fan_in, fan_out):
    torch = _torch()
    torch.manual_seed(0)
    layer = torch.nn.Linear(fan_in, fan_out, dtype=torch.float64)
    torch.manual_seed(0)
    u = torch.empty(fan_out, fan_in, dtype=torch.float64).uniform_(0, 1)
    s = (2 * u - 1).numpy()
    w = layer.weight.detach().numpy()
    bound = float((w * s).sum() / (s * s).sum())
    np.testing.assert_allclose(w, bound * s, atol=1e-14)
    assert make_init("torch-default").bound((fan_out, fan_in)) == pytest.approx(bound, rel=1e-13)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (16, 8, 3, 3)])
def test_orthogonal_scale_matches_torch(shape):
    torch = _torch()
    t = torch.empty(shape, dtype=torch.float64)
    torch.nn.init.orthogonal_(t, gain=1.5)
    rms = float(t.pow(2).mean().sqrt())
    # Σ of min(r, c) unit norms in float64: n·eps64 ≈ 1e-13 at most here
    assert make_init("orthogonal", gain=1.5).expected_std(shape) == pytest.approx(rms, rel=1e-12)


# -- issue 11: ones, the peers' missing schemes and parameters, fan axes, absurd values ---------

# float32 rounds to within half an ulp: 2⁻²⁴ relative (eps32 = 2⁻²³ = 1.19e-7)
HALF_ULP32 = 2.0**-24


def _se_std(w):
    """Standard error of the sample std of w, relative: √((κ − 1)/(4n)) with κ the sample's kurtosis."""
    w = np.asarray(w, dtype=np.float64).ravel()
    c = w - w.mean()
    kurtosis = np.mean(c**4) / np.mean(c**2) ** 2
    return math.sqrt((kurtosis - 1) / (4 * w.size))


def _assert_moments(w, mean, std, sigmas=6):
    """Sample mean and std within `sigmas` standard errors of the expected ones (σ/√n for the
    mean, σ·√((κ−1)/4n) for the std): 6 standard errors fail by chance about once in 10⁹."""
    w64 = np.asarray(w, dtype=np.float64).ravel()
    assert abs(w64.mean() - mean) <= sigmas * std / math.sqrt(w64.size), (w64.mean(), mean)
    assert abs(w64.std() / std - 1) <= sigmas * _se_std(w64), (w64.std(), std)


def test_ones_is_one_and_gain_multiplies():
    rng = np.random.default_rng(0)
    assert (make_init("ones").sample((3, 4), rng) == 1).all()
    assert (make_init("ones", gain=2.5).sample((3, 4), rng) == 2.5).all()
    assert make_init("ones").expected_mean() == 1.0 and make_init("ones").expected_std((3, 4)) == 0.0
    assert "--value" in ignored_options("ones", value=0.3)
    torch = _torch()
    t = torch.nn.init.ones_(torch.empty(3, 4, dtype=torch.float64))
    np.testing.assert_array_equal(make_init("ones").sample((3, 4), rng, np.float64), t.numpy())


def test_normal_with_a_mean_matches_torch():
    torch = _torch()
    shape, mean, std = (256, 512), -0.75, 0.4
    # torch's CPU normal_(m, s) is m + s·z for the z of normal_(0, 1) at the same generator state
    t = torch.empty(shape, dtype=torch.float64).normal_(mean, std, generator=torch.Generator().manual_seed(0))
    z = torch.empty(shape, dtype=torch.float64).normal_(0, 1, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(t.numpy(), mean + std * z.numpy(), rtol=1e-15, atol=1e-15)
    init = make_init("normal", mean=mean, std=std, gain=2.0)
    assert init.expected_mean() == 2 * mean and init.expected_std(shape) == 2 * std
    _assert_moments(init.sample(shape, np.random.default_rng(3)), 2 * mean, 2 * std)


@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-3.0, 0.5), (2.0, 2.5)])
def test_uniform_with_low_and_high_matches_torch(low, high):
    torch = _torch()
    shape = (256, 512)
    t = torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=torch.Generator().manual_seed(0))
    u = torch.empty(shape, dtype=torch.float64).uniform_(0, 1, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(t.numpy(), low + (high - low) * u.numpy(), rtol=1e-14, atol=1e-14)  # U(a, b)
    init = make_init("uniform", low=low, high=high)
    assert init.expected_mean() == pytest.approx((low + high) / 2, rel=1e-15, abs=1e-15)
    assert init.expected_std(shape) == pytest.approx((high - low) / math.sqrt(12), rel=1e-15)
    assert init.bound(shape) == max(abs(low), abs(high))
    w = init.sample(shape, np.random.default_rng(4))
    # float32 rounding of the centre and half-width: within half an ulp of the bounds
    assert w.min() >= np.float32(low) and w.max() <= np.float32(high)
    _assert_moments(w, (low + high) / 2, (high - low) / math.sqrt(12))


def test_uniform_low_alone_is_torch_default_and_limit_conflicts():
    init = make_init("uniform", low=0.0)  # high defaults to +1: torch's uniform_() is U(0, 1)
    assert init.expected_mean() == 0.5 and init.bound((4, 4)) == 1.0
    assert init.params()["low"] == 0.0 and init.params()["high"] == 1.0
    assert "limit" in make_init("uniform", limit=2.0).params()
    for kwargs, option in [({"low": 0.0, "limit": 2.0}, "--limit"), ({"low": 1.0, "high": 1.0}, "--high"),
                           ({"low": 2.0}, "--low"), ({"high": -3.0}, "--high")]:
        with pytest.raises(InitcliError) as info:
            make_init("uniform", **kwargs)
        assert info.value.option == option, kwargs


def _truncated_moments(mean, std, a, b):
    """Mean and std of N(mean, std²) restricted to [a, b], closed form (Johnson et al. 1994)."""
    alpha, beta = (a - mean) / std, (b - mean) / std
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    mass = 0.5 * (math.erf(beta / math.sqrt(2)) - math.erf(alpha / math.sqrt(2)))
    m = (phi(alpha) - phi(beta)) / mass
    var = 1 + (alpha * phi(alpha) - beta * phi(beta)) / mass - m * m
    return mean + std * m, std * math.sqrt(var)


TRUNCATIONS = [(0.0, 1.0, -2.0, 2.0), (0.5, 0.2, 0.0, 1.0), (3.0, 1.0, -2.0, 2.0), (0.0, 1.0, -0.1, 0.1),
               (0.0, 0.02, -2.0, 2.0), (1.0, 2.0, 0.0, 5.0)]


@pytest.mark.parametrize("mean,std,a,b", TRUNCATIONS)
def test_trunc_normal_moments_are_the_closed_form(mean, std, a, b):
    init = make_init("trunc-normal", mean=mean, std=std, low=a, high=b)
    expected_mean, expected_std = _truncated_moments(mean, std, a, b)
    # quadrature against the closed form, both float64: agreement to ~1e-12 of the std (the
    # closed form itself loses a few digits to cancellation in 1 + … − m²)
    assert init.expected_mean() == pytest.approx(expected_mean, abs=1e-12 * std)
    assert init.expected_std((8, 8)) == pytest.approx(expected_std, rel=1e-11)
    assert init.bound((8, 8)) == max(abs(a), abs(b))


@pytest.mark.parametrize("mean,std,a,b", TRUNCATIONS)
def test_trunc_normal_samples_match_torch(mean, std, a, b):
    torch = _torch()
    shape = (64, 256)  # 16384 draws: torch's rejection loop is slow where the mass is small
    t = torch.nn.init.trunc_normal_(torch.empty(shape, dtype=torch.float64), mean=mean, std=std, a=a, b=b,
                                    generator=torch.Generator().manual_seed(0)).numpy()
    init = make_init("trunc-normal", mean=mean, std=std, low=a, high=b, gain=1.0)
    expected_mean, expected_std = init.expected_mean(), init.expected_std(shape)
    _assert_moments(t, expected_mean, expected_std)  # torch's draws have our moments
    w = init.sample(shape, np.random.default_rng(5))
    _assert_moments(w, expected_mean, expected_std)
    assert w.min() >= np.float32(a) and w.max() <= np.float32(b)


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, 5.0, 1e30), (0.0, 1.0, -1e30, -6.0), (1e30, 1.0, -2.0, 2.0),
                                          (0.0, 1e-300, -2.0, 2.0), (0.0, 1e30, -2.0, 2.0)])
def test_trunc_normal_far_tails_never_hang_or_overflow(mean, std, a, b):
    # torch's trunc_normal_ would loop for ever on the first two (a uniform proposal on [5, 1e30])
    init = make_init("trunc-normal", mean=mean, std=std, low=a, high=b)
    w = init.sample((64, 64), np.random.default_rng(0), np.float64)
    assert np.isfinite(w).all() and w.min() >= a and w.max() <= b
    m, s = init.expected_mean(), init.expected_std((64, 64))
    if a == 5.0:  # one-sided tail: mean φ(5)/Q(5), in float64 with erfc
        q = 0.5 * math.erfc(5 / math.sqrt(2))
        assert m == pytest.approx(math.exp(-12.5) / math.sqrt(2 * math.pi) / q, rel=1e-10)
        _assert_moments(w, m, s)
    if std == 1e30:  # far wider than [a, b]: the uniform on [-2, 2]
        assert s == pytest.approx(4 / math.sqrt(12), rel=1e-12)
    if mean == 1e30:  # pinned at the upper cut-off, spread 1/κ = 1e-30
        assert m == 2.0 and s == pytest.approx(1e-30, rel=1e-6)


@pytest.mark.parametrize("rows,cols,sparsity", [(10, 7, 0.3), (100, 50, 0.1), (64, 64, 0.9), (5, 3, 0.0),
                                                (6, 4, 1.0)])
def test_sparse_matches_torch_structure(rows, cols, sparsity):
    torch = _torch()
    zeros = math.ceil(sparsity * rows)  # torch's count, float quirks included (0.3·10 → 4)
    t = torch.nn.init.sparse_(torch.empty(rows, cols, dtype=torch.float64), sparsity, std=0.5).numpy()
    w = make_init("sparse", sparsity=sparsity, std=0.5).sample((rows, cols), np.random.default_rng(1), np.float64)
    np.testing.assert_array_equal((w == 0).sum(axis=0), (t == 0).sum(axis=0))
    assert ((w == 0).sum(axis=0) == min(zeros, rows)).all()
    init = make_init("sparse", sparsity=sparsity, std=0.5)
    assert init.expected_std((rows, cols)) == pytest.approx(0.5 * math.sqrt((rows - min(zeros, rows)) / rows),
                                                            rel=1e-15)


def test_sparse_moments_and_default_std():
    shape = (400, 300)
    init = make_init("sparse", sparsity=0.25)
    assert init.std == 0.01  # torch's default
    w = init.sample(shape, np.random.default_rng(2), np.float64)
    _assert_moments(w, 0.0, init.expected_std(shape))
    with pytest.raises(InitcliError) as info:
        init.sample((4, 3, 3), np.random.default_rng(0))
    assert info.value.option == "--shape"


@pytest.mark.parametrize("shape", [(6, 4, 3), (8, 8, 3, 3), (4, 6, 3, 5), (6, 3, 3, 3, 3), (9, 3, 2, 4)])
@pytest.mark.parametrize("groups", [1, 3])
def test_dirac_is_torchs(shape, groups):
    torch = _torch()
    if shape[0] % groups:
        with pytest.raises(InitcliError) as info:
            make_init("dirac", groups=groups).sample(shape, np.random.default_rng(0))
        assert info.value.option == "--groups"
        return
    t = torch.nn.init.dirac_(torch.empty(shape, dtype=torch.float64), groups=groups).numpy()
    init = make_init("dirac", groups=groups, gain=1.0)
    w = init.sample(shape, np.random.default_rng(0), np.float64)
    np.testing.assert_array_equal(w, t)
    assert init.expected_std(shape) == pytest.approx(w.std(), rel=1e-12)  # both float64, exact 0/1 entries
    assert init.expected_mean(shape) == pytest.approx(w.mean(), rel=1e-12)
    np.testing.assert_array_equal(make_init("dirac", groups=groups, gain=2.0).sample(shape, None, np.float64), 2 * t)


def test_dirac_on_a_matrix_is_eye():
    torch = _torch()
    t = torch.nn.init.eye_(torch.empty(5, 7, dtype=torch.float64)).numpy()
    np.testing.assert_array_equal(make_init("dirac").sample((5, 7), None, np.float64), t)


def test_identity_expected_std_is_the_measured_std():
    # a fraction p of ones has std √(p(1-p)); the old formula gave the root mean square √p
    for shape in [(8, 16), (5, 5), (30, 3)]:
        init = make_init("identity")
        w = init.sample(shape, None, np.float64)
        assert init.expected_std(shape) == pytest.approx(w.std(), rel=1e-12)


@pytest.mark.parametrize("shape,axes,fans", [
    ((3, 3, 16, 32), {"in_axis": -2, "out_axis": -1}, (16 * 9, 32 * 9)),  # JAX/Flax HWIO conv kernel
    ((16, 32), {"in_axis": 0, "out_axis": 1}, (16, 32)),  # JAX dense (in, out)
    ((4, 8, 16), {"in_axis": 1, "out_axis": 2, "batch_axis": 0}, (8, 16)),  # a batch of matrices
    ((4, 8, 16, 5), {"in_axis": (1, 3), "out_axis": 2}, (8 * 5 * 4, 16 * 4)),
    ((64, 3, 7, 7), {}, (3 * 49, 64 * 49)),  # the defaults are torch's layout
])
def test_fan_axes_follow_jax(shape, axes, fans):
    # jax.nn.initializers.variance_scaling: fan = ∏ axis sizes · (numel / (in · out · batch))
    assert compute_fans(shape, **axes) == fans
    init = make_init("lecun-normal", **axes)
    assert init.expected_std(shape) == pytest.approx(1 / math.sqrt(fans[0]), rel=1e-15)
    assert init.fans(shape) == fans


@pytest.mark.parametrize("axes,option", [({"in_axis": 4}, "--in-axis"), ({"out_axis": -5}, "--out-axis"),
                                         ({"in_axis": 0}, "--in-axis"), ({"batch_axis": 1}, "--batch-axis"),
                                         ({"in_axis": "x"}, "--in-axis"), ({"in_axis": ()}, "--in-axis")])
def test_bad_fan_axes_name_their_option(axes, option):
    with pytest.raises(InitcliError) as info:
        make_init("he-normal", **axes).expected_std((4, 3, 2, 2))
    assert info.value.option == option


@pytest.mark.parametrize("name", ["zeros", "ones", "constant", "normal", "uniform", "trunc-normal"])
def test_one_dimensional_shapes_for_schemes_without_fans(name):
    init = make_init(name)
    w = init.sample((1000,), np.random.default_rng(0))
    assert w.shape == (1000,)
    assert init.expected_std((1000,)) >= 0


@pytest.mark.parametrize("name", ["he-normal", "xavier-uniform", "orthogonal", "sparse", "dirac", "identity",
                                  "lsuv", "delta-orthogonal", "torch-default"])
def test_one_dimensional_shapes_are_refused_for_fan_schemes(name):
    with pytest.raises(InitcliError) as info:
        make_init(name).sample((10,), np.random.default_rng(0))
    assert info.value.option == "--shape" and "1-D" in str(info.value)


@pytest.mark.parametrize("scheme,kwargs,option", [
    ("he-normal", {"gain": 1e155}, "--gain"), ("he-normal", {"gain": 1e39}, "--gain"),
    ("normal", {"std": 1e308}, "--std"), ("normal", {"std": 1e39}, "--std"), ("normal", {"mean": 1e39}, "--mean"),
    ("uniform", {"limit": 1e308}, "--limit"), ("uniform", {"limit": 1e39}, "--limit"),
    ("uniform", {"high": 1e39}, "--high"), ("constant", {"value": 1e308}, "--value"),
    ("constant", {"value": -1e39}, "--value"), ("sparse", {"std": 1e39}, "--std"),
    ("trunc-normal", {"low": -1e39}, "--low"), ("orthogonal", {"gain": 1e39}, "--gain"),
    ("normal", {"std": 10**400}, "--std"), ("xavier-normal", {"gain": 5e37}, "--gain"),
])
def test_weights_beyond_float32_are_refused_up_front(scheme, kwargs, option):
    with pytest.raises(InitcliError) as info:
        make_init(scheme, **kwargs)
    assert info.value.option == option
    assert "3.4e+38" in str(info.value) or "finite" in str(info.value)


@pytest.mark.parametrize("scheme,kwargs", [
    ("he-normal", {"gain": 2.8e37}), ("normal", {"std": 3.9e37}), ("uniform", {"limit": 3.4e38}),
    ("uniform", {"low": -3.4e38, "high": 3.4e38}), ("constant", {"value": 3.4e38}),
    ("trunc-normal", {"low": -3.4e38, "high": 3.4e38, "std": 1e38}), ("normal", {"std": 1e-300}),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_largest_accepted_values_draw_finite_weights_without_warnings(scheme, kwargs, dtype):
    # pytest turns RuntimeWarnings (overflow in cast, in square…) into errors
    init = make_init(scheme, **kwargs)
    shape = (1, 64)  # fan_in 64 ≥ 1: the bound make_init checks holds for every shape
    w = init.sample(shape, np.random.default_rng(0), dtype)
    assert np.isfinite(w).all()
    bound = init.bound(shape)
    if bound is not None:
        assert np.abs(w).max() <= bound * (1 + HALF_ULP32)  # rounding to float32 may round up
    assert math.isfinite(init.expected_std(shape))
    density = init.density(shape)
    if density is not None:
        for x in (0.0, float(w.ravel()[0]), 1.0, -1e30):
            assert density(x) >= 0


def test_huge_negative_slope_gives_a_tiny_he_std_not_an_overflow():
    init = Init(get_scheme("he-normal"), activation="leaky-relu", negative_slope=1e160)
    # √(2/((1+a²)·n)) = √(2/n)/√(1+a²) without forming a² (1e320 overflows float64)
    assert init.expected_std((10, 100)) == pytest.approx(math.sqrt(2 / 100) / 1e160, rel=1e-15)
    assert init.scale == pytest.approx(2e-320, rel=1e-2)  # a subnormal, coarsely rounded


def test_tiny_std_density_is_safe():
    init = make_init("normal", std=1e-300)
    density = init.density((4, 4))
    assert density(0.0) == pytest.approx(1 / (1e-300 * math.sqrt(2 * math.pi)), rel=1e-12)
    assert density(1.0) == 0.0 and density(-1e30) == 0.0
    assert make_init("trunc-normal", std=1e-300).density((4, 4))(1e-300) > 0


def test_uniform_at_float32s_edge_does_not_overflow():
    # the old U(-L, L) = u·2L − L formed 2L, inf beyond 1.7e38
    w = make_init("uniform", limit=3e38).sample((64, 64), np.random.default_rng(0))
    assert np.isfinite(w).all() and np.abs(w).max() <= np.float32(3e38)


def test_ignored_options_for_the_new_parameters():
    assert ignored_options("he-normal", mean=1.0, std=2.0, in_axis=0) == ["--mean", "--std"]
    assert ignored_options("normal", mean=1.0, low=0.0, sparsity=0.5) == ["--low", "--sparsity"]
    assert ignored_options("uniform", low=0.0, high=2.0, mean=1.0) == ["--mean"]
    assert ignored_options("trunc-normal", low=0.0, high=2.0, mean=1.0, limit=3.0) == ["--limit"]
    assert ignored_options("sparse", sparsity=0.5, std=0.1, groups=2) == ["--groups"]
    assert ignored_options("dirac", groups=2, mode="fan_in", distribution="uniform") == ["--mode", "--distribution"]
    assert ignored_options("xavier", mode="fan_in", batch_axis=0) == []


def test_every_new_scheme_is_documented():
    for name in ("ones", "trunc-normal", "sparse", "dirac"):
        scheme = get_scheme(name)
        assert scheme.formula and scheme.designed_for and scheme.reference, name


@pytest.mark.parametrize("name,kwargs", [("normal", {"mean": 0.5, "std": 0.2}), ("uniform", {"low": 0.0}),
                                         ("uniform", {"limit": 3.0}), ("trunc-normal", {"high": 1.0, "std": 0.5}),
                                         ("sparse", {"sparsity": 0.3}), ("dirac", {"groups": 2}),
                                         ("he-normal", {"in_axis": 0, "out_axis": 1}), ("ones", {"gain": 2.0})])
def test_params_rebuild_the_same_init(name, kwargs):
    init = make_init(name, **kwargs)
    again = init_from_params(init.params())
    assert again.params() == init.params()
    shape = (4, 6) if name == "sparse" else (4, 6, 3)  # sparse is 2-D only
    assert again.expected_std(shape) == init.expected_std(shape) and again.bound(shape) == init.bound(shape)
    rng = np.random.default_rng
    np.testing.assert_array_equal(again.sample(shape, rng(0)), init.sample(shape, rng(0)))


# -- orthogonal per tap -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 16, 3, 3), (12, 5, 3), (5, 12, 2, 3), (8, 8, 3, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, 1.7])
def test_orthogonal_per_tap_has_every_tap_orthogonal(shape, gain):
    init = make_init("orthogonal-per-tap", gain=gain)
    w = init.sample(shape, np.random.default_rng(0), np.float64)
    assert w.shape == shape
    taps = math.prod(shape[2:])
    small = min(shape[:2])
    # as test_orthogonal: Householder QR orthogonal to O(n·eps64), the Gram product adds n roundings
    tolerance = 100 * max(shape[:2]) * np.finfo(np.float64).eps * gain**2
    for tap in np.ndindex(*shape[2:]):
        q = w[(slice(None), slice(None)) + tap]
        gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
        np.testing.assert_allclose(gram, gain**2 / taps * np.eye(small), rtol=0, atol=tolerance / taps)
    # the taps are independent draws, not one matrix repeated
    first, last = (w.reshape(shape[0], shape[1], taps)[:, :, i] for i in (0, -1))
    assert not np.allclose(first, last)
    # the mean square is exact, not statistical: each tap's min(out, in) rows or columns have
    # norm gain/√taps, so Σw² = gain²·min(out, in) and E[w²] = gain²/(max(out, in)·taps)
    assert math.sqrt(np.mean(w**2)) == pytest.approx(init.expected_std(shape), rel=tolerance)
    # σ_w² = fan_in·Var(W) = gain²·in/max(out, in): gain² for a square C→C kernel
    fan_in = shape[1] * taps
    assert fan_in * init.expected_std(shape) ** 2 == pytest.approx(gain**2 * shape[1] / max(shape[:2]), rel=1e-14)


def test_orthogonal_per_tap_std_within_sampling_error_in_float32():
    shape = (32, 32, 3, 3)
    init = make_init("orthogonal-per-tap", gain=2.0)
    w = init.sample(shape, np.random.default_rng(3))
    assert w.dtype == np.float32
    n = w.size
    expected = init.expected_std(shape)
    # the entries' rms is exact up to float32 rounding; the sample std subtracts the mean², whose
    # size is Var/n, and rounding adds ~eps32: 3/√n bounds the mean's share with a wide margin
    assert float(w.std()) == pytest.approx(expected, rel=3 / math.sqrt(n) + 10 * float(np.finfo(np.float32).eps))
    assert abs(float(w.mean())) < 4 * expected / math.sqrt(n)
    assert init.bound(shape) == pytest.approx(2.0 / 3.0) and np.abs(w).max() <= init.bound(shape) * (1 + 1e-6)


def test_orthogonal_per_tap_on_a_matrix_is_orthogonal():
    # a 2-D shape is a kernel with one tap: the same draw as `orthogonal` from the same stream
    for shape in ((8, 5), (5, 8), (6, 6)):
        a = make_init("orthogonal", gain=1.5).sample(shape, np.random.default_rng(4))
        b = make_init("orthogonal-per-tap", gain=1.5).sample(shape, np.random.default_rng(4))
        np.testing.assert_array_equal(a, b)


def test_orthogonal_per_tap_is_listed_and_documented():
    from initcli.schemes import scheme_table

    assert "orthogonal-per-tap" in SCHEME_NAMES and get_scheme("per-tap-orthogonal").name == "orthogonal-per-tap"
    row = next(r for r in scheme_table() if r["name"] == "orthogonal-per-tap")
    assert row["formula"] and row["designed_for"] and row["reference"]
    assert ignored_options("orthogonal-per-tap", mode="fan_in") == ["--mode"]
    init = make_init("orthogonal-per-tap", gain=1.2)
    again = init_from_params(init.params())
    rng = np.random.default_rng
    np.testing.assert_array_equal(again.sample((4, 4, 3), rng(0)), init.sample((4, 4, 3), rng(0)))
    with pytest.raises(InitcliError) as info:
        init.sample((10,), rng(0))
    assert info.value.option == "--shape"


def test_cli_samples_orthogonal_per_tap():
    import csv
    import io

    from typer.testing import CliRunner

    from initcli.cli import app

    result = CliRunner().invoke(app, ["sample", "--scheme", "orthogonal-per-tap", "--shape", "16,16,3,3",
                                      "--format", "csv"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    row = next(csv.DictReader(io.StringIO(result.stdout)))
    assert (row["fan_in"], row["fan_out"]) == ("144", "144")
    assert float(row["expected_std"]) == pytest.approx(1 / 12)  # 1/√(16·9)
    assert float(row["std"]) == pytest.approx(1 / 12, rel=3 / math.sqrt(16 * 16 * 9) + 1e-6)


# -- scheme kinds: one object per kind holds its formula, density, sampler and iid flag -----------

def _kind_init(kind_name, **options):
    """An Init of the first preset of this kind (resolved by make_init, as every caller does)."""
    from initcli.schemes import SCHEMES

    preset = next(s for s in SCHEMES if s.kind == kind_name)
    return make_init(preset, **options)


def test_every_preset_has_a_registered_kind():
    from initcli.schemes import KINDS, SCHEMES

    assert {s.kind for s in SCHEMES} == set(KINDS)


def _kinds():
    from initcli.schemes import KINDS

    return sorted(KINDS)


@pytest.mark.parametrize("kind_name", _kinds())
def test_kind_provides_formula_density_sampler_and_iid(kind_name):
    """Each kind's sampler draws what its formula says, its density integrates to the drawn
    (nonzero) fraction, and `iid` is false exactly for the kinds whose draw ignores the seed."""
    from initcli.schemes import KINDS, SchemeKind

    kind = KINDS[kind_name]
    assert isinstance(kind, SchemeKind) and kind.name == kind_name and isinstance(kind.iid, bool)
    for method in ("std", "mean", "bound", "largest_weight", "density", "sample", "params"):
        assert callable(getattr(kind, method)), method
    shape = (256, 128)
    init = _kind_init(kind_name)
    assert init.scheme_kind is kind and init.iid is kind.iid
    std, mean = init.expected_std(shape), init.expected_mean(shape)
    weights = init.sample(shape, np.random.default_rng(1), dtype=np.float64)
    other = init.sample(shape, np.random.default_rng(2), dtype=np.float64)
    assert weights.shape == shape
    # deterministic weights (mean-field theory does not apply) ⇔ the draw ignores the seed
    assert np.array_equal(weights, other) == (not kind.iid)
    n = weights.size
    if kind.iid:
        # a sample std's relative error is √((κ − 1)/(4n)); κ ≤ 4 here (sparse's zeros: 3/0.9)
        assert np.std(weights) == pytest.approx(std, rel=6 * math.sqrt(3 / (4 * n)))
        assert np.mean(weights) == pytest.approx(mean, abs=6 * std / math.sqrt(n))
    else:  # a fixed pattern: the formula is the population's std and mean exactly
        assert np.std(weights) == pytest.approx(std, rel=1e-9, abs=1e-12)
        assert np.mean(weights) == pytest.approx(mean, rel=1e-9, abs=1e-12)
    bound = init.bound(shape)
    if bound is not None:
        assert np.max(np.abs(weights)) <= bound * (1 + 1e-6)
    assert np.max(np.abs(weights)) <= init.largest_weight() * (1 + 1e-6)
    pdf = init.density(shape)
    if pdf is not None:
        grid = np.linspace(mean - 12 * std, mean + 12 * std, 40001)
        values = np.array([pdf(w) for w in grid])
        assert np.all(values >= 0)
        # trapezoid rule: a uniform's two jumps cost at most a step each
        integral = float(np.sum((values[1:] + values[:-1]) / 2) * (grid[1] - grid[0]))
        assert integral == pytest.approx(np.count_nonzero(weights) / n, abs=2e-3)
    assert init.params()["scheme"] == init.name


def test_a_new_kind_works_through_init_without_editing_it():
    """A Laplace kind registered here: Init's formula, density, sampler and params use it."""
    from dataclasses import dataclass

    from initcli.schemes import KINDS, Scheme, SchemeKind, register_kind

    @dataclass(frozen=True)
    class LaplaceKind(SchemeKind):
        """Laplace(0, b) with b = gain/√(2·fan_in): Var = 2b² = gain²/fan_in."""

        def std(self, init, shape):
            return init.gain / math.sqrt(init.fans(shape)[0])

        def bound(self, init, shape):
            return None

        def largest_weight(self, init):
            return init.gain * 40  # |x|/b ≤ 53·ln 2 for float64 uniforms: 37/√2 ≈ 26 stds

        def density(self, init, shape):
            b = self.std(init, shape) / math.sqrt(2)
            return lambda w: math.exp(-abs(w) / b) / (2 * b)

        def sample(self, init, shape, rng, dtype):
            return rng.laplace(0.0, self.std(init, shape) / math.sqrt(2), size=shape).astype(dtype)

        def params(self, init):
            return {"family": "laplace"}

    register_kind(LaplaceKind("laplace"))
    try:
        with pytest.raises(ValueError):
            register_kind(LaplaceKind("laplace"))
        init = make_init(Scheme("laplace", "laplace"), gain=2.0)
        shape = (300, 400)
        assert init.iid and init.expected_std(shape) == pytest.approx(2 / 20)
        assert init.expected_mean(shape) == 0.0 and init.bound(shape) is None
        weights = init.sample(shape, np.random.default_rng(0))
        assert weights.dtype == np.float32 and weights.shape == shape
        n = weights.size
        # Laplace: kurtosis 6, so the sample std's relative error is √(5/(4n))
        assert np.std(weights) == pytest.approx(0.1, rel=6 * math.sqrt(5 / (4 * n)))
        assert init.density(shape)(0.0) == pytest.approx(1 / (2 * 0.1 / math.sqrt(2)))
        assert init.params()["family"] == "laplace" and init.params()["scheme"] == "laplace"
        with pytest.raises(InitcliError):
            init.sample((10,), np.random.default_rng(0))  # needs fans, as every kind by default
        # not a variance-scaling kind, and takes no distribution: --mode and --distribution leave it alone
        other = make_init(Scheme("laplace", "laplace"), mode="fan_out", distribution="uniform")
        assert (other.mode, other.distribution) == ("fan_in", "normal")
    finally:
        KINDS.pop("laplace", None)
    assert "laplace" not in KINDS


@pytest.mark.parametrize("scheme", ["zeros", "constant", "identity", "dirac", "he-normal", "orthogonal"])
def test_theory_is_blank_exactly_for_the_kinds_mean_field_does_not_cover(scheme):
    """One `iid` flag decides, in every engine: deterministic weights (zeros, constant,
    identity, dirac) have no mean-field columns; before it, dirac on an MLP and zeros on a conv
    got a prediction (dirac's flagged off theory: its std is not an ensemble's)."""
    from initcli import conv
    from initcli.propagation import propagate

    deterministic = not make_init(scheme).iid
    assert deterministic == (scheme in ("zeros", "constant", "identity", "dirac"))
    row = propagate(scheme, "tanh", depth=2, width=16, batch=8).rows()[0]
    assert (row["theory_preact_var"] is None) == deterministic
    if scheme != "identity":  # identity draws 2-D matrices only
        conv_rows = conv.propagate(scheme, "tanh", depth=2, channels=4, spatial=6, batch=2,
                                   padding="circular").rows()
        assert (conv_rows[0]["theory_preact_var"] is None) == deterministic
