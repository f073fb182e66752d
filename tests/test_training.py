import csv
import io
import json
import math

import numpy as np
import pytest
from finite_differences import numeric_gradient
from typer.testing import CliRunner

from initcli.activations import get_activation
from initcli.cli import app
from initcli.engine import Architecture, seed_streams
from initcli.errors import InitcliError
from initcli.schemes import make_init
from initcli.threads import blas_threads, blas_threads_limited, set_blas_threads
from initcli.training import (
    MAX_NOISE,
    TASKS,
    _evaluate,
    _forward,
    build_network,
    gradients,
    loss_and_grad,
    make_task,
    train,
    train_one,
)

EPS64 = np.finfo(np.float64).eps

# He and Xavier reach 0.9 within ~22 epochs on moons and spiral (default network, lr, batch; measured
# 12–22), so 60 epochs leave a margin of about 3× for another machine's rounding.
EPOCHS_TO_LEARN = 60


def majority(task, seed=0, samples=512):
    data = make_task(task, samples, rng=seed_streams(seed)["inputs"])
    return np.bincount(data.y).max() / len(data.y)


@pytest.mark.parametrize("task", ["moons", "spiral"])
def test_he_and_xavier_reach_the_target_with_the_defaults(task):
    result = train(["he-normal", "xavier-normal"], "relu", task=task, epochs=EPOCHS_TO_LEARN)
    for row in result.rows():
        assert row["epochs_to_target"] is not None and row["final_accuracy"] >= 0.9, row
        assert not row["diverged"]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_zeros_never_leaves_chance(activation):
    for task in ("moons", "spiral"):
        row = train(["zeros"], activation, task=task, epochs=50).rows()[0]
        # all-zero weights: the logits are the read-out bias alone, the same for every input, so
        # the best the net can do is predict one class. Accuracy and majority are both k/512,
        # each one correctly rounded division of integers: compared exactly.
        assert row["best_accuracy"] <= majority(task)
        assert row["epochs_to_target"] is None


def test_constant_init_stays_symmetric():
    # float64 so that rounding cannot start to separate the units: with units equal up to a
    # relative δ the participation ratio is 1 + O(δ²), and the ratio itself is computed to about
    # 512 samples × eps ≈ 1e-13. 1e-9 is far above both and far below any real separation
    # (δ ≥ 1e-4 would already show).
    row = train(["constant"], "tanh", task="moons", epochs=30, dtype="float64").rows()[0]
    assert row["final_effective_rank"] == pytest.approx(1.0, abs=1e-9)
    assert row["epochs_to_target"] is None


def test_constant_hidden_units_remain_identical_after_updates():
    steps, samples = 20, 64
    data = make_task("moons", samples, rng=np.random.default_rng(0))
    network = build_network(make_init("constant", value=0.3), get_activation("tanh"), data, [16, 16], seed=0,
                            dtype="float64")
    params = network.parameters
    for _ in range(steps):
        _, _, grads = gradients(network, data, np.arange(samples))
        for p, g in zip(params, grads):
            p -= 0.5 * g
    for stack, _ in network.stages[:-1]:
        for w in stack.weights:
            # the units' columns get the same arithmetic; if BLAS orders a sum differently per
            # column, each step adds at most a reduction's rounding (samples × eps relative), and
            # the steps add up
            tol = steps * samples * EPS64 * max(1.0, float(np.abs(w).max()))
            assert np.ptp(w, axis=0).max() <= tol  # stored (units, inputs): every unit's row the same


def test_standard_normal_on_a_deep_stack_is_slower_or_diverges():
    rows = {r["scheme"]: r for r in train(["normal", "he-normal"], "relu", task="spiral", depth=10,
                                          epochs=EPOCHS_TO_LEARN).rows()}
    he, normal = rows["he-normal"], rows["normal"]
    assert he["epochs_to_target"] is not None
    assert normal["diverged"] or normal["epochs_to_target"] is None or (
        normal["epochs_to_target"] > he["epochs_to_target"])


@pytest.mark.parametrize("task", TASKS)
def test_every_task_trains_with_adam(task):
    # measured: every task passes 0.9 (accuracy, or R² for regression) by epoch 14
    result = train(["xavier-normal"], "tanh", task=task, optimizer="adam", lr=0.01, epochs=50)
    metric = "r2" if task == "regression" else "accuracy"
    assert result.metric == result.params["metric"] == metric
    row = result.rows()[0]
    assert row[f"best_{metric}"] > 0.8, row


def test_regression_names_its_score_r2():
    result = train(["xavier-normal", "zeros"], "tanh", task="regression", epochs=3)
    assert result.columns == ("scheme", "activation", "final_loss", "final_r2", "best_r2", "epochs_to_target",
                              "diverged", "final_effective_rank")
    assert result.curve_columns == ("scheme", "epoch", "loss", "r2")
    assert all(list(row) == list(result.columns) for row in result.rows())
    assert all(list(row) == list(result.curve_columns) for row in result.curve_rows())
    assert result.rows()[1]["epochs_to_target"] is None  # never: None, rendered by the writers
    classification = train(["zeros"], "relu", task="xor", epochs=2)
    assert classification.columns[3:5] == ("final_accuracy", "best_accuracy")
    assert classification.curve_columns[-1] == "accuracy" and classification.params["metric"] == "accuracy"


def _loss(network, data, rows):
    _, logits = _forward(network, data.x[rows])
    return loss_and_grad(data, logits, rows)[0]


@pytest.mark.parametrize("task", ["spiral", "regression"])
@pytest.mark.parametrize("arch", [Architecture(), Architecture(norm="layer"),
                                  Architecture(residual_scale=0.5, block=1)], ids=repr)
def test_training_gradients_match_finite_differences(task, arch):
    data = make_task(task, 12, rng=np.random.default_rng(1))
    network = build_network(make_init("xavier-normal"), get_activation("tanh"), data, [5, 5, 5], seed=3,
                            dtype="float64", arch=arch)
    rows = np.arange(12)
    _, _, analytic = gradients(network, data, rows)
    numeric = [numeric_gradient(lambda: _loss(network, data, rows), p) for p in network.parameters]
    # central differences with step h = 1e-6 in float64: truncation h²/6·f''' ≈ 2e-13 and
    # rounding eps·|loss|/h ≈ 2e-10 for a loss of order 1, so atol 1e-8 leaves a 50× margin
    for a, n in zip(analytic, numeric):
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-8)


def test_same_seed_same_result_and_jobs_do_not_matter():
    options = {"task": "moons", "epochs": 20, "depth": 2, "width": 16}
    serial = train(["he-normal", "xavier-normal"], "relu", jobs=1, **options)
    again = train(["he-normal", "xavier-normal"], "relu", jobs=1, **options)
    steps = []
    parallel = train(["he-normal", "xavier-normal"], "relu", jobs=2, progress=steps.append, **options)
    assert serial.rows() == again.rows() == parallel.rows()
    assert serial.curve_rows() == parallel.curve_rows()
    # the workers report every epoch, not one lump per scheme once it is done
    assert sum(steps) == 2 * options["epochs"] and max(steps) < options["epochs"]


def _train_one_kwargs(**changes):
    kwargs = dict(scheme="he-normal", activation="relu", task="spiral", samples=256, classes=None, noise=None,
                  hidden_widths=(256, 256), optimizer="sgd", lr=0.05, epochs=3, batch=128, target=0.9, seed=0,
                  dtype="float32", init_options={})
    kwargs.update(changes)
    return kwargs


def test_train_one_reports_every_epoch():
    steps = []
    train_one(**_train_one_kwargs(hidden_widths=(8,), epochs=5), progress=steps.append)
    assert steps == [1] * 5
    steps.clear()  # a diverged run reports its remaining epochs at once
    train_one(**_train_one_kwargs(hidden_widths=(8,), epochs=5, lr=1e30), progress=steps.append)
    assert sum(steps) == 5 and steps[0] == 1


@pytest.mark.skipif(blas_threads() is None, reason="no BLAS whose thread count initcli can set")
def test_train_one_runs_on_one_blas_thread_whatever_the_caller_set():
    seen, saved = [], blas_threads()
    try:
        set_blas_threads(2)
        train_one(**_train_one_kwargs(hidden_widths=(8,), epochs=2), progress=lambda _: seen.append(blas_threads()))
    finally:
        set_blas_threads(saved)
    assert seen == [1, 1]


def test_train_one_gives_the_same_bytes_on_one_and_two_blas_threads():
    # realistic size: 256-wide layers, mini-batches of 128, where a multithreaded BLAS splits products
    results, saved = [], blas_threads()
    try:
        for threads in (1, 2):
            set_blas_threads(threads)
            results.append(train_one(**_train_one_kwargs()))
    finally:
        if saved is not None:
            set_blas_threads(saved)
    one, two = results
    assert one.curve == two.curve
    assert one.row.final_effective_rank == two.row.final_effective_rank
    with blas_threads_limited(1):  # and a caller's own pinning changes nothing either
        assert train_one(**_train_one_kwargs()).curve == one.curve


def test_curves_have_a_row_per_epoch():
    result = train(["he-normal", "zeros"], "relu", task="xor", epochs=7)
    rows = result.curve_rows()
    assert len(rows) == 14 and rows[0]["epoch"] == 1 and rows[-1]["scheme"] == "zeros"


def test_full_batch_and_evaluation_agree():
    data = make_task("circles", 64, rng=np.random.default_rng(2))
    network = build_network(make_init("he-normal"), get_activation("relu"), data, [8], seed=0, dtype="float64")
    loss, score, _ = gradients(network, data, np.arange(64))
    evaluated = _evaluate(network, data)
    # the same rows through the same operations: equal to the bit
    assert (loss, score) == evaluated[:2]


def test_a_batch_beyond_the_samples_is_full_batch_and_recorded_as_used():
    options = {"task": "xor", "samples": 40, "epochs": 3, "depth": 1, "width": 8}
    large = train(["he-normal"], "relu", batch=1000, **options)
    full = train(["he-normal"], "relu", batch=None, **options)
    assert large.rows() == full.rows() and large.curve_rows() == full.curve_rows()
    assert large.params["batch"] == full.params["batch"] == 40


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_huge_learning_rate_is_reported_as_divergence_without_warnings(optimizer, dtype):
    # the weights overflow at the first step; the scores of a nan network are nan, not the
    # share of class 0 that argmax over nan logits would count (0.4375 before)
    row = train(["he-normal"], "relu", task="moons", samples=64, epochs=3, depth=2, width=8, lr=1e308,
                optimizer=optimizer, dtype=dtype).rows()[0]
    assert row["diverged"] and math.isnan(row["final_loss"])
    assert math.isnan(row["final_accuracy"]) and math.isnan(row["best_accuracy"])
    assert row["epochs_to_target"] is None


def test_nan_logits_score_nan():
    data = make_task("moons", 4, rng=np.random.default_rng(0))
    _, accuracy, _ = loss_and_grad(data, np.full((4, 2), np.nan), np.arange(4))
    assert math.isnan(accuracy)


@pytest.mark.parametrize("task", TASKS)
def test_the_largest_noise_trains_without_warnings(task):
    # MAX_NOISE = 2**52: the bound where float64 keeps no trace of the unit-scale task; below it
    # generating and standardising the data stays far inside float64's range. A regression on
    # targets of 1e15 may well diverge: that is its result.
    data = make_task(task, 16, noise=MAX_NOISE, rng=np.random.default_rng(0))
    assert np.isfinite(data.x).all()
    train(["he-normal"], "relu", task=task, samples=16, noise=MAX_NOISE, epochs=2, depth=1, width=4)


@pytest.mark.parametrize("task", TASKS)
def test_two_samples_are_enough(task):
    classes = 2 if task == "spiral" else None
    data = make_task(task, 2, classes=classes, rng=np.random.default_rng(0))
    assert np.isfinite(data.x).all()
    train(["he-normal"], "relu", task=task, samples=2, classes=classes, epochs=2, depth=1, width=4)


@pytest.mark.parametrize("dtype,name", [("FLOAT32", "float32"), (" Float64 ", "float64")])
def test_dtype_is_case_insensitive(dtype, name):
    assert train(["he-normal"], "relu", task="xor", samples=16, epochs=1, depth=1, width=4,
                 dtype=dtype).params["dtype"] == name


@pytest.mark.parametrize("kwargs,option", [
    ({"task": "nope"}, "--task"), ({"lr": 0.0}, "--lr"), ({"lr": -1.0}, "--lr"), ({"lr": math.nan}, "--lr"),
    ({"lr": math.inf}, "--lr"), ({"lr": True}, "--lr"), ({"lr": 10**400}, "--lr"),
    ({"epochs": 0}, "--epochs"), ({"epochs": 10**8}, "--epochs"),
    ({"classes": 1}, "--classes"), ({"task": "moons", "classes": 3}, "--classes"), ({"classes": True}, "--classes"),
    ({"optimizer": "rmsprop"}, "--optimizer"),
    ({"target": 1.5}, "--target"), ({"target": 0.0}, "--target"), ({"target": -0.5}, "--target"),
    ({"target": math.nan}, "--target"), ({"target": True}, "--target"),
    ({"batch": 0}, "--batch"), ({"sizes": []}, "--sizes"), ({"residual": True, "depth": 1}, "--residual"),
    ({"samples": 0}, "--samples"), ({"samples": 1}, "--samples"), ({"samples": 1, "task": "regression"}, "--samples"),
    ({"samples": 4, "task": "spiral", "classes": 5}, "--samples"),
    ({"noise": -1.0}, "--noise"), ({"noise": math.inf}, "--noise"), ({"noise": 1e200}, "--noise"),
    ({"noise": 2 * MAX_NOISE}, "--noise"), ({"dtype": "float16"}, "--dtype"),
])
def test_bad_input(kwargs, option):
    with pytest.raises(InitcliError) as info:
        train(["he-normal"], "relu", **kwargs)
    assert info.value.option == option
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("samples,classes", [(1, None), (3, 4)])
def test_make_task_refuses_too_few_samples(samples, classes):
    with pytest.raises(InitcliError) as info:
        make_task("spiral", samples, classes=classes, rng=np.random.default_rng(0))
    assert info.value.option == "--samples"


def test_cli_train():
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--task", "xor", "--schemes", "zeros,he", "--epochs", "30", "-f", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["scheme"] for r in rows] == ["zeros", "he-normal"]
    assert list(rows[0]) == ["scheme", "activation", "final_loss", "final_accuracy", "best_accuracy",
                             "epochs_to_target", "diverged", "final_effective_rank"]
    assert rows[0]["epochs_to_target"] == ""  # never reached
    result = runner.invoke(app, ["train", "--task", "regression", "--schemes", "he", "--epochs", "3", "--curves",
                                 "--lr", "0.01", "-f", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["params"]["metric"] == "r2" and document["rows"][2]["epoch"] == 3 and "r2" in document["rows"][2]
    for bad in (["train", "--task", "nope"], ["train", "--lr", "0"], ["train", "--epochs", "0"],
                ["train", "--classes", "1"], ["train", "--samples", "1"], ["train", "--noise", "1e200"]):
        failed = runner.invoke(app, bad)
        assert failed.exit_code == 2 and "Traceback" not in failed.output and "Warning" not in failed.output
