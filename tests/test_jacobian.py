"""The Jacobian spectrum (initcli.jacobian) against torch autograd, the definitions of its
moments and the exact isometries; its input checks happen before anything is allocated."""

import math
import tracemalloc

import numpy as np
import pytest

from initcli.activations import get_activation
from initcli.engine import Architecture, build_stack
from initcli.errors import InitcliError
from initcli.jacobian import (
    JACOBIAN_COLUMNS,
    MAX_JACOBIAN_WIDTH,
    SPECTRUM_COLUMNS,
    VALUE_COLUMNS,
    estimate_jacobian_bytes,
    jacobian,
    jacobian_spectrum,
    prepare_jacobian,
)
from initcli.schemes import make_init
from initcli.threads import blas_threads

EPS64 = np.finfo(np.float64).eps


# -- against torch autograd ----------------------------------------------------------------

ARCHITECTURES = [Architecture(), Architecture(norm="layer"), Architecture(residual_scale=0.6, block=2),
                 Architecture(residual_scale=1.0, block=2, norm="layer")]


def _torch_network(stack, name):
    torch = pytest.importorskip("torch", reason="torch not installed (pip install 'initcli[torch]')")
    phi = {"tanh": torch.tanh, "relu": torch.relu, "gelu": torch.nn.functional.gelu}[name]
    arch = stack.arch
    weights = [torch.tensor(w, dtype=torch.float64) for w in stack.weights]
    biases = [torch.tensor(b, dtype=torch.float64) for b in stack.biases]

    def outputs(x):
        """a_1 … a_L for one input, written plainly."""
        a = block = x
        result = []
        for index, (w, b) in enumerate(zip(weights, biases), start=1):
            if arch.opens_block(index):
                block = a
            h = w @ a + b
            n = torch.nn.functional.layer_norm(h, (h.shape[0],), eps=1e-5) if arch.norm == "layer" else h
            a = block + arch.residual_scale * phi(n) if arch.closes_block(index) else phi(n)
            result.append(a)
        return tuple(result)

    return torch, outputs


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=repr)
@pytest.mark.parametrize("name", ["tanh", "gelu"])
def test_every_singular_value_matches_torch_autograd(arch, name):
    sizes = (6, 6, 6, 6, 6) if arch.residual else (6, 9, 7, 5)
    stack = build_stack(make_init("xavier-normal", gain=1.2), sizes, bias_std=0.2, seed=3, dtype="float64",
                        arch=arch)
    x = np.random.default_rng(4).standard_normal((3, sizes[0]))
    stats, values = jacobian_spectrum(stack, get_activation(name), x, spectrum=True)
    torch, outputs = _torch_network(stack, name)
    for i in range(len(x)):
        jacobians = torch.autograd.functional.jacobian(outputs, torch.tensor(x[i]))
        for layer, jac in enumerate(jacobians):
            want = torch.linalg.svdvals(jac).numpy()
            # both sides are float64: the Jacobians differ by a few ulps per layer and unit, and a
            # singular value moves by at most the perturbation's norm (Weyl): 1e-12·σ_max is ≥ 100×
            # depth·width·eps64·σ_max
            np.testing.assert_allclose(values[layer][i], want, rtol=0, atol=1e-12 * want[0])
    for layer, row in zip(stats, values):
        assert layer.sv_max == pytest.approx(row[:, 0].mean(), rel=1e-14)
        assert layer.sv_min == pytest.approx(row[:, -1].mean(), rel=1e-14)


def test_relu_jacobian_matches_torch_autograd():
    # relu'(0) = 0 as torch has it; random pre-activations are never exactly 0
    stack = build_stack(make_init("he-normal"), (8, 10, 9, 8), seed=5, dtype="float64")
    x = np.random.default_rng(6).standard_normal((2, 8))
    _, values = jacobian_spectrum(stack, get_activation("relu"), x, spectrum=True)
    torch, outputs = _torch_network(stack, "relu")
    for i in range(2):
        for layer, jac in enumerate(torch.autograd.functional.jacobian(outputs, torch.tensor(x[i]))):
            want = torch.linalg.svdvals(jac).numpy()
            np.testing.assert_allclose(values[layer][i], want, rtol=0, atol=1e-12 * want[0])


# -- the spectral moments and the value rows -------------------------------------------------


def test_spectrum_moments_are_their_definitions():
    result = jacobian("xavier-normal", "tanh", sizes=[12, 20, 16, 9], batch=16, inputs=5, spectrum=True,
                      dtype="float64")
    assert result.columns == SPECTRUM_COLUMNS
    assert list(result.rows()[0]) == list(SPECTRUM_COLUMNS)
    rows = result.value_rows()
    assert list(rows[0]) == list(VALUE_COLUMNS)
    # min(n_l, n_0) values per input and layer: 12, 12, 9
    assert len(rows) == 5 * (12 + 12 + 9)
    for layer in result.layers:
        sigma = np.array([r["singular_value"] for r in rows if r["layer"] == layer.layer])
        by_input = sigma.reshape(5, -1)
        assert np.all(np.diff(by_input, axis=1) <= 0)  # index 1 is the largest
        m1, m2 = np.mean(sigma**2), np.mean(sigma**4)
        # float64 means of ≤ 60 terms: a few ulps
        assert layer.sv_mean_sq == pytest.approx(m1, rel=1e-13)
        assert layer.sv_mean_4th == pytest.approx(m2, rel=1e-13)
        assert layer.sv_sq_var == pytest.approx(m2 - m1**2, rel=1e-10)  # subtraction loses up to m2/var ulps
        assert layer.sv_sq_var == pytest.approx(np.var(sigma**2), rel=1e-13)
        assert layer.sv_max == pytest.approx(by_input[:, 0].mean(), rel=1e-14)
        assert layer.sv_min == pytest.approx(by_input[:, -1].mean(), rel=1e-14)
        assert layer.sv_condition == pytest.approx(np.mean(by_input[:, 0] / by_input[:, -1]), rel=1e-13)


def test_without_spectrum_the_columns_are_the_summary():
    result = jacobian(depth=2, width=8, batch=8, inputs=2)
    assert result.columns == JACOBIAN_COLUMNS
    assert list(result.rows()[0]) == list(JACOBIAN_COLUMNS)
    assert result.value_rows() == [] and result.singular_values is None
    assert result.params["spectrum"] is False and result.params["inputs"] == 2


def test_orthogonal_linear_stack_is_an_exact_isometry():
    # each orthogonal W is orthogonal to ~n·eps64 and the product of L of them to ~L·n·eps64
    # (first order); the SVD adds ~n·eps64. Nothing statistical: every σ is 1.
    depth, width = 12, 32
    result = jacobian("orthogonal", "linear", depth=depth, width=width, batch=4, dtype="float64", spectrum=True)
    tolerance = 4 * (depth + 1) * width * EPS64
    for layer, values in zip(result.layers, result.singular_values):
        assert np.abs(values - 1).max() <= tolerance
        assert abs(layer.sv_condition - 1) <= 2 * tolerance
        assert layer.sv_sq_var <= (2 * tolerance) ** 2


def test_zero_residual_branches_are_the_identity():
    # ReZero/SkipInit: every block is the identity at init, so J = I exactly
    result = jacobian("he-normal", "relu", depth=6, width=16, batch=4, residual=True, residual_scale=0.0,
                      spectrum=True)
    for values in result.singular_values:
        np.testing.assert_allclose(values, 1.0, rtol=0, atol=16 * EPS64)


def test_overflow_gives_nan_statistics_not_warnings():
    # |σ| grows ~ 1e30·√8 a layer: past float64's range by layer 10
    result = jacobian("normal", "linear", std=1e30, depth=12, width=8, batch=4, spectrum=True)
    assert all(math.isfinite(layer.sv_max) for layer in result.layers[:5])
    last = result.layers[-1]
    assert all(math.isnan(getattr(last, name)) for name in SPECTRUM_COLUMNS[1:])
    assert np.isnan(result.singular_values[-1]).all()


# -- progress and threads ------------------------------------------------------------------


def test_progress_counts_inputs_times_depth_on_one_blas_thread():
    plan = prepare_jacobian(depth=5, width=16, batch=6)
    assert plan.steps == 6 * 5  # inputs default to min(8, batch)
    before = blas_threads()
    seen = []
    result = jacobian(depth=5, width=16, batch=6, progress=lambda n: seen.append((n, blas_threads())))
    assert sum(n for n, _ in seen) == plan.steps
    if before is not None:  # a BLAS whose threads can be read: pinned while working, restored after
        assert {threads for _, threads in seen} == {1}
        assert blas_threads() == before
    assert result.params["inputs"] == 6


# -- input checks, before any allocation ---------------------------------------------------


def test_inputs_default_to_the_batch_when_it_is_smaller():
    assert jacobian(depth=1, width=8, batch=4).params["inputs"] == 4
    assert jacobian(depth=1, width=8, batch=20).params["inputs"] == 8


@pytest.mark.parametrize("inputs", [0, -1, True, 2.5, 5])
def test_bad_inputs_name_the_option(inputs):
    with pytest.raises(InitcliError) as info:
        jacobian(depth=1, width=8, batch=4, inputs=inputs)
    assert info.value.option == "--inputs"


def test_too_wide_is_refused_before_building_the_stack():
    tracemalloc.start()
    try:
        with pytest.raises(InitcliError) as info:
            jacobian(depth=1, width=MAX_JACOBIAN_WIDTH + 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.option == "--width"
    assert peak < 1 << 20  # one 4097² float32 matrix alone would be 64 MiB
    with pytest.raises(InitcliError) as info:
        jacobian(sizes=[8, MAX_JACOBIAN_WIDTH + 1, 8])
    assert info.value.option == "--sizes"


def test_too_wide_weights_file_is_refused(tmp_path):
    from initcli.sampling import sample, save_npz

    path = str(tmp_path / "wide.npz")
    save_npz(sample("he-normal", sizes=[MAX_JACOBIAN_WIDTH + 1, 2]), path)
    with pytest.raises(InitcliError) as info:
        jacobian(weights=path, batch=2)
    assert info.value.option == "--weights"


def test_memory_refusal_names_the_jacobian_options():
    tracemalloc.start()
    try:
        with pytest.raises(InitcliError, match="--inputs") as info:
            # 4 Jacobians of 4096 × 10⁶ × 4096 float64: ~500 TiB
            jacobian(depth=1, width=MAX_JACOBIAN_WIDTH, batch=10**6, inputs=10**6)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "GiB" in str(info.value) and peak < 1 << 20


@pytest.mark.parametrize("options", [{"depth": 4, "width": 256}, {"depth": 3, "width": 384, "norm": "layer"},
                                     {"sizes": [64, 512, 512, 64], "residual": False}], ids=str)
def test_memory_estimate_covers_the_real_peak(options):
    tracemalloc.start()
    try:
        result = jacobian(inputs=8, spectrum=True, **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    p = result.params
    assert peak <= estimate_jacobian_bytes(p["sizes"], p["inputs"], p["batch"], np.dtype(p["dtype"]), spectrum=True)
