"""The fast paths of issue 7 must give the same numbers as the plain ones."""

import csv
import io
import tracemalloc

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli.cli import app
from initcli.compare import compare
from initcli.propagation import estimate_bytes, propagate
from initcli.stats import exact_moments, moments
from initcli.threads import blas_threads_limited


@pytest.mark.parametrize("scheme,activation", [("he-normal", "relu"), ("xavier-normal", "tanh"),
                                               ("normal", "relu"), ("lecun-normal", "gelu"), ("zeros", "sigmoid")])
@pytest.mark.parametrize("depth", [1, 2, 5, 17])
def test_checkpoint_gives_identical_numbers(scheme, activation, depth):
    options = {"depth": depth, "width": 48, "batch": 24, "theory": False}
    plain = propagate(scheme, activation, **options)
    saved = propagate(scheme, activation, checkpoint=True, **options)
    assert repr(plain.layers) == repr(saved.layers)  # repr: nan compares equal to nan
    assert plain.forward_overflow_layer == saved.forward_overflow_layer


def test_checkpoint_memory_grows_like_the_square_root_of_depth():
    def peak(depth, checkpoint):
        tracemalloc.start()
        # one BLAS thread: 400 tiny products gain nothing from more, and on a busy machine a
        # multithreaded BLAS makes them ~10× slower; the memory measured is the same
        with blas_threads_limited(1):
            propagate(depth=depth, width=64, batch=128, theory=False, checkpoint=checkpoint)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    # the time goes into 400 layers under tracemalloc, not into the batch: a small batch keeps
    # the plain/checkpointed ratio (≈ 10 here) well above the 6 asserted
    width, batch = 64, 128
    weights = lambda depth: depth * width * width * 4  # noqa: E731 (kept by both)
    saved_peak = peak(400, True)
    plain = peak(400, False) - weights(400)
    saved = saved_peak - weights(400)
    # plain keeps 2·400 activation-sized arrays; checkpointing about 3·√400 = 60
    assert saved < plain / 6
    assert saved_peak <= estimate_bytes((width,) * 401, batch, np.dtype("float32"), checkpoint=True)


def test_jobs_give_byte_identical_csv():
    runner = CliRunner()
    args = ["compare", "--schemes", "zeros,normal,he-normal", "--activation", "relu,tanh", "--depth", "12",
            "--width", "64", "--batch", "64", "-f", "csv"]
    serial = runner.invoke(app, args + ["--jobs", "1"]).stdout
    parallel = runner.invoke(app, args + ["--jobs", "2"]).stdout
    assert serial == parallel
    assert len(list(csv.DictReader(io.StringIO(serial)))) == 6


def test_compare_checks_options_before_starting_processes():
    from initcli.errors import InitcliError

    with pytest.raises(InitcliError) as info:
        compare(["he-normal", "nope"], ["relu"], jobs=2, depth=2)
    assert info.value.option == "--scheme"


@pytest.mark.parametrize("values", [
    np.random.default_rng(0).standard_normal((64, 100)).astype(np.float32),
    np.full((10, 10), 0.5, dtype=np.float32),  # no spread: variance exactly 0
    (np.random.default_rng(1).standard_normal((50, 50)) * 1e-3 + 1e3).astype(np.float32),  # mean dwarfs spread
    (np.random.default_rng(2).standard_normal((20, 20)) * 1e25).astype(np.float32),  # float32 squares overflow
    np.random.default_rng(3).standard_normal(1000),
])
def test_fast_moments_match_the_exact_ones(values):
    mean, var = moments(values)
    exact_mean, exact_var = exact_moments(values)
    # The fast path sums each row in the array's dtype (BLAS, in an order of its choosing), then
    # the rows in float64: a row sum of L terms is off by at most γ_L·Σ|x|, γ_L = L·eps/2
    # (Higham, Accuracy and Stability §3.1). A near-zero mean can only be held to that, not to a
    # relative tolerance; the variance E[x²] − mean² to γ_L·(E[x²] + 2|mean|·E|x|).
    x = values.astype(np.float64)
    row = x.shape[-1]
    gamma = row * float(np.finfo(values.dtype).eps) / 2
    mean_abs = float(np.mean(np.abs(x)))
    assert abs(mean - exact_mean) <= gamma * mean_abs
    assert abs(var - exact_var) <= gamma * (float(np.mean(x * x)) + 2 * abs(exact_mean) * mean_abs)
