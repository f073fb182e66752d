"""Property-based tests: for any valid input, the guarantees hold."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initcli.activations import ACTIVATION_NAMES, get_activation
from initcli.engine import Architecture, backward, build_stack, forward
from initcli.errors import InitcliError
from initcli.propagation import propagate
from initcli.schemes import DISTRIBUTIONS, FAN_MODES, SCHEME_NAMES, compute_fans, get_scheme, make_init

# the schemes whose entries are i.i.d. normal or uniform draws of a formula's std: the sample std
# test below assumes exactly that (other kinds are deterministic, structured or truncated)
RANDOM_SCHEMES = [name for name in SCHEME_NAMES if get_scheme(name).kind in ("scaling", "fixed")]
shapes = st.lists(st.integers(1, 40), min_size=2, max_size=4).map(tuple)


@given(shape=shapes)
def test_fans_are_positive_integers(shape):
    fan_in, fan_out = compute_fans(shape)
    assert isinstance(fan_in, int) and isinstance(fan_out, int) and fan_in > 0 and fan_out > 0
    assert fan_in * shape[0] == fan_out * shape[1]  # both carry the same receptive field


@settings(max_examples=60, deadline=None)
@given(scheme=st.sampled_from(RANDOM_SCHEMES), mode=st.sampled_from(FAN_MODES),
       distribution=st.sampled_from(DISTRIBUTIONS), gain=st.floats(0.1, 5), seed=st.integers(0, 2**32 - 1),
       shape=st.tuples(st.integers(64, 256), st.integers(64, 256)), dtype=st.sampled_from([np.float32, np.float64]))
def test_sampled_std_matches_the_formula(scheme, mode, distribution, gain, seed, shape, dtype):
    init = make_init(scheme, mode=mode, distribution=distribution, gain=gain)
    w = init.sample(shape, np.random.default_rng(seed), dtype)
    assert w.dtype == dtype and w.shape == shape
    expected = init.expected_std(shape)
    kurtosis = 3.0 if init.distribution == "normal" else (1.8 if init.distribution == "uniform" else 2.4)
    # 6 standard errors of the sample std, from the distribution's kurtosis and the sample size
    tolerance = 6 * math.sqrt((kurtosis - 1) / (4 * w.size))
    assert abs(float(np.std(w, dtype=np.float64)) / expected - 1) < tolerance
    bound = init.bound(shape)
    if bound is not None:  # a float32 draw rounds by at most eps32/2 = 6e-8 relative
        assert np.abs(w).max() <= bound * (1 + 1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(SCHEME_NAMES), activation=st.sampled_from(ACTIVATION_NAMES),
       sizes=st.lists(st.integers(1, 24), min_size=2, max_size=7), batch=st.integers(1, 40),
       dtype=st.sampled_from(["float32", "float64"]), gain=st.floats(0, 30), bias_std=st.floats(0, 3),
       seed=st.integers(0, 1000))
def test_propagate_never_raises_and_reports_what_is_not_finite(scheme, activation, sizes, batch, dtype, gain,
                                                               bias_std, seed):
    try:
        result = propagate(scheme, activation, sizes=sizes, batch=batch, dtype=dtype, gain=gain, bias_std=bias_std,
                           seed=seed)
    except InitcliError as error:  # only the documented refusals
        assert scheme == "lsuv" and "lsuv" in str(error), error
        return
    assert len(result.layers) == len(sizes) - 1
    for layer in result.layers:
        for name in ("preact_var", "act_var", "grad_var", "weight_grad_var"):
            value = getattr(layer, name)
            if not math.isfinite(value):
                assert result.overflowed, (name, layer)
        for name in ("saturated_frac", "dead_frac"):
            assert 0 <= getattr(layer, name) <= 1
        assert math.isnan(layer.effective_rank) or layer.effective_rank >= 0
        assert math.isnan(layer.input_cosine) or -1 - 1e-9 <= layer.input_cosine <= 1 + 1e-9


@settings(max_examples=25, deadline=None)
@given(activation=st.sampled_from(ACTIVATION_NAMES), widths=st.lists(st.integers(2, 5), min_size=2, max_size=4),
       norm=st.sampled_from([None, "layer"]), seed=st.integers(0, 100))
def test_gradients_match_finite_differences(activation, widths, norm, seed):
    act = get_activation(activation)
    stack = build_stack(make_init("xavier-normal"), widths, bias_std=0.2, seed=seed, dtype="float64",
                        arch=Architecture(norm=norm))
    rng = np.random.default_rng(seed)
    x, g = rng.standard_normal((3, widths[0])), rng.standard_normal((3, widths[-1]))

    def loss():
        return float(np.sum(g * forward(stack, act, x).states[-1].act))

    grads = backward(stack, forward(stack, act, x), g)
    w = stack.weights[0]
    for index in [(0, 0), (w.shape[0] - 1, w.shape[1] - 1)]:
        saved = w[index]
        w[index] = saved + 1e-6
        up = loss()
        w[index] = saved - 1e-6
        down = loss()
        w[index] = saved
        numeric = (up - down) / 2e-6
        assert grads[0][0][index] == pytest.approx(numeric, rel=1e-4, abs=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(SCHEME_NAMES), activation=st.sampled_from(ACTIVATION_NAMES),
       depth=st.integers(1, 12), width=st.integers(1, 24), batch=st.integers(1, 24), gain=st.floats(0, 30),
       bias_std=st.floats(0, 3), residual=st.booleans(), norm=st.sampled_from([None, "layer"]),
       seed=st.integers(0, 1000))
def test_compare_always_gives_a_documented_verdict(scheme, activation, depth, width, batch, gain, bias_std,
                                                   residual, norm, seed):
    from initcli.compare import VERDICTS, compare

    try:
        result = compare([scheme], [activation], depth=depth, width=width, batch=batch, gain=gain,
                         bias_std=bias_std, residual=residual, residual_scale=0.5, norm=norm, seed=seed)
    except InitcliError as error:
        assert scheme == "lsuv" and "lsuv" in str(error), error
        return
    row = result.comparisons[0]
    assert row.verdict in VERDICTS and row.reason
