import math

import numpy as np
import pytest

from initcli.errors import InitcliError
from initcli.schemes import SCHEME_NAMES, TRUNCATED_NORMAL_STD, compute_fans, get_scheme, make_init

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
    if init.distribution == "uniform":
        assert kurtosis == pytest.approx(1.8, abs=0.02)
    elif init.distribution == "normal":
        assert kurtosis == pytest.approx(3.0, abs=0.05)


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
    np.testing.assert_allclose(gram, gain**2 * np.eye(small), atol=1e-12)
    assert math.sqrt(np.mean(w**2)) == pytest.approx(init.expected_std(shape), rel=1e-12)


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
    return pytest.importorskip("torch", reason="torch not installed (pip install 'initcli[reference]')")


def _torch_std_of(fill, shape):
    """The std torch uses, read back exactly: torch's CPU normal_(0, s) is s·z for the z that
    normal_(0, 1) draws from the same generator state, so s = fill / z elementwise."""
    torch = _torch()
    t = torch.empty(shape, dtype=torch.float64)
    fill(t, torch.Generator().manual_seed(0))
    z = torch.empty(shape, dtype=torch.float64).normal_(0, 1, generator=torch.Generator().manual_seed(0))
    ratio = (t / z).numpy()
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
    np.testing.assert_allclose(t.numpy(), bound * s, atol=1e-14)
    return bound


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 0.7, 5 / 3])
def test_xavier_matches_torch(shape, gain):
    init = _torch().nn.init
    std = _torch_std_of(lambda t, g: init.xavier_normal_(t, gain=gain, generator=g), shape)
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
    assert make_init("orthogonal", gain=1.5).expected_std(shape) == pytest.approx(rms, rel=1e-12)
