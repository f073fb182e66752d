import math

import numpy as np
import pytest
from finite_differences import numeric_gradient

from initcli.activations import ACTIVATION_NAMES, get_activation
from initcli.errors import InitcliError
from initcli.propagation import (
    LAYER_COLUMNS,
    backward,
    build_stack,
    check_memory,
    estimate_bytes,
    forward,
    propagate,
)
from initcli.schemes import make_init
from initcli.stats import effective_rank, mean_input_cosine


def gauss_expect(fn, q, points=201):
    """E[fn(√q z)], z ~ N(0,1), by Gauss–Hermite quadrature (for smooth fn)."""
    z, w = np.polynomial.hermite_e.hermegauss(points)
    return float(np.sum(w / w.sum() * fn(math.sqrt(q) * z)))


def test_columns_in_the_documented_order():
    assert LAYER_COLUMNS == ("layer", "fan_in", "fan_out", "weight_std", "preact_mean", "preact_var", "act_mean",
                             "act_var", "grad_var", "weight_grad_var", "saturated_frac", "dead_frac",
                             "effective_rank", "input_cosine")


# -- the backward pass against finite differences -------------------------------------------


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_backward_matches_finite_differences(name):
    act = get_activation(name)
    sizes = (3, 5, 4, 2)
    stack = build_stack(make_init("xavier-normal"), sizes, bias_std=0.3, seed=3, dtype="float64")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, sizes[0]))
    g = rng.standard_normal((6, sizes[-1]))

    def loss(weights, biases):
        a = x
        for w, b in zip(weights, biases):
            a = act.fn(a @ w.T + b)
        return float(np.sum(g * a))

    grads = backward(stack, forward(stack, act, x), g)
    for layer, (w, b) in enumerate(zip(stack.weights, stack.biases)):
        for target, analytic in ((w, grads[layer][0]), (b, grads[layer][1])):
            numeric = numeric_gradient(lambda: loss(stack.weights, stack.biases), target)
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


# -- statistics against brute-force definitions ---------------------------------------------


def test_effective_rank_is_the_participation_ratio():
    rng = np.random.default_rng(0)
    for shape in [(40, 10), (10, 40), (64, 64)]:
        a = rng.standard_normal(shape) @ np.diag(np.linspace(0.1, 3, shape[1]))
        c = np.cov(a, rowvar=False)
        want = np.trace(c) ** 2 / np.trace(c @ c)
        assert effective_rank(a) == pytest.approx(want, rel=1e-10)


def test_effective_rank_of_identical_units_and_of_no_variation():
    rng = np.random.default_rng(0)
    column = rng.standard_normal((50, 1))
    assert effective_rank(np.repeat(column, 30, axis=1)) == pytest.approx(1.0, rel=1e-12)
    assert effective_rank(np.full((50, 30), 0.5)) == 0.0
    assert effective_rank(np.repeat(column, 30, axis=1) * 1e300) == pytest.approx(1.0, rel=1e-12)


def test_input_cosine_is_the_mean_pairwise_cosine():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20, 7)) + 0.5
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    pairs = [unit[i] @ unit[j] for i in range(20) for j in range(20) if i != j]
    assert mean_input_cosine(a) == pytest.approx(np.mean(pairs), rel=1e-12)
    assert mean_input_cosine(np.zeros((5, 3))) != mean_input_cosine(np.zeros((5, 3)))  # nan: no directions
    assert mean_input_cosine(np.ones((5, 3))) == pytest.approx(1.0)


# -- propagate against theory (THEORY.md) ---------------------------------------------------


def test_he_relu_first_layer_variance_is_exact():
    # q_1 = σ_w²·E[x²] = 2·input_std²; sd of the estimate ≈ √(2(1/n + 1/b)/n) (weights and inputs)
    n, b, input_std = 1024, 512, 1.5
    for seed in range(3):
        layer = propagate("he-normal", "relu", depth=1, width=n, batch=b, input_std=input_std, seed=seed,
                          dtype="float64").layers[0]
        tolerance = 6 * math.sqrt(2 * (1 / n + 1 / b) / n)
        assert layer.preact_var / (2 * input_std**2) == pytest.approx(1, abs=tolerance)
        # relu of a symmetric Gaussian keeps half the second moment: E[relu(h)²] = q/2
        assert (layer.act_var + layer.act_mean**2) / layer.preact_var == pytest.approx(0.5, abs=tolerance)
        assert layer.act_mean == pytest.approx(math.sqrt(layer.preact_var / (2 * math.pi)), rel=5 * tolerance)


def test_he_relu_keeps_variance_flat():
    # Both bounds below hold for any batch, even one input (they are the worst case of a
    # rank-one batch), so a small batch keeps the test's power and costs little: the time goes
    # into drawing the 4 × 20 weight matrices.
    n, depth, seeds = 1024, 20, 4
    ratios, grad_ratios = [], []
    for seed in range(seeds):
        # float32: its rounding (≤ n·eps32 ≈ 1e-4 relative a layer) is far inside these bounds
        layers = propagate("he-normal", "relu", depth=depth, width=n, batch=32, seed=seed, theory=False).layers
        # every step applies the map q_l = σ_w²·E[a²_{l-1}] with σ_w² = 2; given the previous
        # layer the estimate's relative sd is at most √(2/n) (a rank-one second moment): 5 sd
        for below, above in zip(layers, layers[1:]):
            second_moment = below.act_var + below.act_mean**2
            assert above.preact_var / (2 * second_moment) == pytest.approx(1, abs=5 * math.sqrt(2 / n))
        ratios.append(layers[-1].preact_var / layers[0].preact_var)
        grad_ratios.append(layers[0].grad_var / layers[-1].grad_var)
    # E[q_L/q_1] = 1; its sd at finite width ≈ √(exp(5L/n) − 1) for one input (Hanin & Rolnick
    # 2018: Var log‖a_L‖² ≈ 5L/n for ReLU), less for a batch; per seed, so 4 sd of the mean
    spread = math.sqrt(math.expm1(5 * depth / n)) / math.sqrt(seeds)
    assert np.mean(ratios) == pytest.approx(1, abs=4 * spread)
    assert np.mean(grad_ratios) == pytest.approx(1, abs=4 * spread)


def test_relu_last_layer_gradient():
    # δ_L = g ⊙ relu'(h_L): Var = E[g²]·P(h > 0) = 1/2. Given the layer's input, units are
    # independent; in the worst case every input of a unit shares its sign, so the share of
    # positive h has sd ≤ 1/(2√n); g² adds √(Var(g²·1[h>0])/(n·b)) = √(1.25/(n·b)).
    n, b = 2048, 64
    layer = propagate("he-normal", "relu", depth=3, width=n, batch=b, dtype="float64", theory=False).layers[-1]
    sd = math.sqrt(1 / (4 * n) + 1.25 / (n * b))
    assert layer.grad_var == pytest.approx(0.5, abs=4.4 * sd)  # 0.05


def test_xavier_tanh_follows_the_mean_field_map():
    # Each layer's map is off by a relative sd ≈ √(2/(n·r)), r the effective rank of the
    # batch's activations (≤ batch); tanh's map contracts relative deviations, so over 30
    # layers the drift stays below √(30·2/(n·r)): ≈ 0.02 at batch 128 (r ≈ 100; sd 0.018 at the
    # last layer over 6 other seeds), against which 3√(2/n) = 0.13 is > 5 sd.
    n = 1024
    for seed in range(2):
        # float32: its rounding (≤ n·eps32 ≈ 1e-4 relative a layer) is far inside the bound
        layers = propagate("xavier-normal", "tanh", depth=30, width=n, batch=128, seed=seed, theory=False).layers
        q = 1.0  # σ_w² = 1 on square layers, E[x²] = 1
        for layer in layers:
            assert layer.preact_var == pytest.approx(q, rel=3 * math.sqrt(2 / n))
            q = gauss_expect(lambda h: np.tanh(h) ** 2, q)
        assert layers[-1].preact_var < 0.2 * layers[0].preact_var  # tanh compresses slowly with depth


def test_linear_stack_scales_geometrically():
    # q_l = σ_w² q_{l-1}: gain 1.1 on LeCun gives a factor 1.21 a layer; given the layer below,
    # the ratio's relative sd is at most √(2/n) whatever the batch (rank-one worst case): 5 sd
    # (float32 rounding, ≤ n·eps32 ≈ 1e-4 relative a layer, is far inside that)
    layers = propagate("lecun-normal", "linear", gain=1.1, depth=10, width=1024, batch=32, theory=False).layers
    for below, above in zip(layers, layers[1:]):
        assert above.preact_var / below.preact_var == pytest.approx(1.21, rel=5 * math.sqrt(2 / 1024))


def test_zeros_relu_has_no_gradient_anywhere():
    result = propagate("zeros", "relu", depth=8, width=64, batch=32)
    for layer in result.layers:
        assert layer.act_var == 0 and layer.act_mean == 0
        assert layer.grad_var == 0 and layer.weight_grad_var == 0
        assert layer.dead_frac == 1.0
        assert layer.effective_rank == 0.0


def test_zeros_tanh_has_no_weight_gradient_anywhere():
    # tanh'(0) = 1, so the top layer's δ is the cotangent itself, but every a_{l-1} is 0:
    # ∂L/∂W_l = δ_lᵀ a_{l-1} = 0, and δ W = 0 below the top
    layers = propagate("zeros", "tanh", depth=6, width=64, batch=32).layers
    for layer in layers:
        assert layer.act_var == 0 and layer.weight_grad_var == 0
    for layer in layers[:-1]:
        assert layer.grad_var == 0


def test_zeros_sigmoid_only_the_last_layer_gets_a_gradient():
    layers = propagate("zeros", "sigmoid", depth=6, width=256, batch=512, dtype="float64").layers
    for layer in layers:
        assert layer.act_mean == 0.5 and layer.act_var == 0
        assert layer.effective_rank == 0.0 and layer.input_cosine == pytest.approx(1.0)
    for layer in layers[:-1]:
        assert layer.grad_var == 0 and layer.weight_grad_var == 0
    # (exact in float32 too: 0.5, its norm √256·0.5 = 8 and every sum of 0.5/8 are powers of two)
    # δ_L = g·σ'(0) = g/4: Var = 1/16, sd of the estimate √(2/N) relative, N = 512·256
    assert layers[-1].grad_var == pytest.approx(1 / 16, rel=6 * math.sqrt(2 / (512 * 256)))
    assert layers[-1].weight_grad_var > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear"])
def test_constant_init_gives_effective_rank_one(activation, dtype):
    # Exactly, every unit computes the same function: the centered activations C are rank one
    # and (tr G)²/‖G‖²_F = 1 for their Gram matrix G. In floating point, two effects:
    # - G is formed in `dtype` by a reduction over n = max(width, inputs) = 128 terms: each entry
    #   is off by at most γ_n·Σ|c||c| with γ_n ≈ n·eps/2 (Higham, Accuracy and Stability §3.1),
    #   which moves the ratio by at most 4γ_n at first order (its gradient at a rank-one G is
    #   2(E_tr − uᵀEu)/tr G, each part bounded by γ_n·tr G). Summation order is BLAS's choice
    #   and changes with the machine and thread count: 0.9999983 in float32 has been seen.
    # - BLAS may sum different output columns in different orders, so the "identical" units
    #   differ by up to fan_in·eps·|h|; against the activations' spread across inputs (tiny in
    #   deep sigmoid layers, which sit near 0.7) this adds at most 2·(that ratio)², and only
    #   upwards (a PSD Gram matrix has ratio ≥ 1).
    eps = np.finfo(dtype).eps
    width, batch = 128, 64
    for layer in propagate("constant", activation, value=0.01, depth=5, width=width, batch=batch,
                           dtype=dtype).layers:
        gram_rounding = 4 * max(width, batch) * eps  # 4γ_n, doubled for the centering and the float64 sums
        scale = math.sqrt(layer.preact_var + layer.preact_mean**2)  # |φ'| ≤ 1 for all four
        units_differ = 2 * (width * eps * scale) ** 2 / layer.act_var
        assert 1 - gram_rounding <= layer.effective_rank <= 1 + gram_rounding + units_differ


def test_standard_normal_tanh_saturates():
    # Given a layer's input, its units are independent; if every input of a unit had the same
    # |h| (the worst case) the share saturated would have sd √(p(1−p)/n) ≤ 0.0048 at p ≈ 0.95:
    # 0.02 is 4 sd of that, whatever the batch
    n = 2048
    for layer in propagate("normal", "tanh", depth=5, width=n, batch=64, theory=False).layers:
        # P(|tanh h| > 0.97) for h ~ N(0, q), with q the measured pre-activation variance
        threshold = math.atanh(0.97)
        predicted = math.erfc(threshold / math.sqrt(2 * layer.preact_var))
        assert layer.saturated_frac == pytest.approx(predicted, abs=0.02)
        assert layer.saturated_frac > 0.9


def test_standard_normal_relu_explodes_by_fan_in_over_two():
    # given the layer below, the ratio's relative sd is at most √(2/n) = 0.0625: 0.3 is ~5 sd
    n = 512
    layers = propagate("normal", "relu", depth=4, width=n, batch=256, dtype="float64").layers
    for below, above in zip(layers, layers[1:]):
        assert above.preact_var / below.preact_var == pytest.approx(n / 2, rel=0.3)


def test_overflow_is_reported_not_raised():
    result = propagate("normal", "relu", depth=50, width=256, batch=64)
    assert result.forward_overflow_layer is not None
    first = result.forward_overflow_layer
    assert math.isfinite(result.layers[first - 2].preact_var)
    assert not math.isfinite(result.layers[first - 1].preact_var)
    # gradients past an overflow are not a clean zero
    assert not math.isfinite(result.layers[-1].grad_var)


def test_dead_units_are_counted():
    # two nearly orthogonal inputs give each unit two nearly independent symmetric
    # pre-activations: P(both ≤ 0) = 1/4; binomial sd over 2000 units ≈ 0.01
    result = propagate("he-normal", "relu", depth=1, width=2000, batch=2, dtype="float64")
    assert result.layers[0].dead_frac == pytest.approx(0.25, abs=0.06)


def test_float32_is_the_default_and_float64_agrees():
    # The same draws in both dtypes. Random-signed rounding leaves each float32 entry off by
    # ~√fan_in·eps32 = 1e-6 relative a layer (Higham & Mary 2019's probabilistic bound): ×4
    # layers ×2 for a square gives 8e-6 < 1e-5 even before the variance averages 4096 entries;
    # the gradient goes through the 4 layers twice (forward, back): 1.6e-5 < 1e-4.
    a = propagate("xavier-normal", "tanh", depth=4, width=64, batch=64)
    b = propagate("xavier-normal", "tanh", depth=4, width=64, batch=64, dtype="float64")
    assert a.params["dtype"] == "float32"
    for la, lb in zip(a.layers, b.layers):
        assert la.preact_var == pytest.approx(lb.preact_var, rel=1e-5)
        assert la.grad_var == pytest.approx(lb.grad_var, rel=1e-4)


def test_same_seed_same_numbers_different_seed_different():
    a = propagate(depth=3, width=32, batch=16, seed=1)
    b = propagate(depth=3, width=32, batch=16, seed=1)
    c = propagate(depth=3, width=32, batch=16, seed=2)
    assert a.layers == b.layers
    assert a.layers != c.layers


def test_heterogeneous_sizes():
    result = propagate("he-normal", "relu", sizes=[784, 256, 128, 10], batch=64)
    assert [(layer.fan_in, layer.fan_out) for layer in result.layers] == [(784, 256), (256, 128), (128, 10)]


@pytest.mark.parametrize("kwargs,option", [
    ({"depth": 0}, "--depth"), ({"width": -3}, "--width"), ({"batch": 0}, "--batch"),
    ({"sizes": [10]}, "--sizes"), ({"sizes": [10, 0]}, "--sizes"), ({"bias_std": -1.0}, "--bias-std"),
    ({"input_std": math.inf}, "--input-std"), ({"dtype": "float16"}, "--dtype"), ({"seed": -1}, "--seed"),
    ({"sizes": [4, 4], "depth": 3}, "--sizes"),
])
def test_bad_input_names_its_option(kwargs, option):
    with pytest.raises(InitcliError) as info:
        propagate(**kwargs)
    assert info.value.option == option


def test_memory_guard_refuses_before_allocating():
    needed = estimate_bytes((100_000,) * 101, 512, np.dtype("float32"))
    assert needed > 2**40
    with pytest.raises(InitcliError, match="GiB"):
        check_memory(needed, available=24 * 2**30)
    with pytest.raises(InitcliError, match="GiB"):
        propagate(depth=100, width=100_000)


def test_memory_estimate_covers_the_real_peak():
    import tracemalloc

    sizes, batch = (512,) * 9, 256
    tracemalloc.start()
    propagate(sizes=list(sizes), batch=batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= estimate_bytes(sizes, batch, np.dtype("float32"))
