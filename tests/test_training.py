import csv
import io
import math

import numpy as np
import pytest
from finite_differences import numeric_gradient
from typer.testing import CliRunner

from initcli.activations import get_activation
from initcli.cli import app
from initcli.engine import Architecture
from initcli.errors import InitcliError
from initcli.schemes import make_init
from initcli.training import TASKS, _evaluate, _loss_and_grad, build_network, gradients, make_task, train


def majority(task, seed=0, samples=512):
    from initcli.engine import seed_streams

    data = make_task(task, samples, rng=seed_streams(seed)["inputs"])
    return np.bincount(data.y).max() / len(data.y)


@pytest.mark.parametrize("task", ["moons", "spiral"])
def test_he_and_xavier_reach_the_target_with_the_defaults(task):
    result = train(["he-normal", "xavier-normal"], "relu", task=task)
    for row in result.rows():
        assert row["epochs_to_target"] is not None and row["final_accuracy"] >= 0.9, row
        assert not row["diverged"]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_zeros_never_leaves_chance(activation):
    for task in ("moons", "spiral"):
        row = train(["zeros"], activation, task=task, epochs=100).rows()[0]
        assert row["best_accuracy"] <= majority(task) + 1e-9
        assert row["epochs_to_target"] is None


def test_constant_init_stays_symmetric():
    row = train(["constant"], "tanh", task="moons", epochs=100).rows()[0]
    assert row["final_effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert row["epochs_to_target"] is None


def test_constant_hidden_units_remain_identical_after_updates():
    data = make_task("moons", 64, rng=np.random.default_rng(0))
    network = build_network(make_init("constant", value=0.3), get_activation("tanh"), data, [16, 16], seed=0,
                            dtype="float64")
    params = network.parameters
    for _ in range(20):
        _, _, grads = gradients(network, data, np.arange(64))
        for p, g in zip(params, grads):
            p -= 0.5 * g
    for stack, _ in network.stages[:-1]:
        for w in stack.weights:
            assert np.ptp(w, axis=0).max() < 1e-12  # every row (unit) the same


def test_standard_normal_on_a_deep_stack_is_slower_or_diverges():
    rows = {r["scheme"]: r for r in train(["normal", "he-normal"], "relu", task="spiral", depth=10).rows()}
    he, normal = rows["he-normal"], rows["normal"]
    assert normal["diverged"] or normal["epochs_to_target"] is None or (
        normal["epochs_to_target"] > he["epochs_to_target"])


@pytest.mark.parametrize("task", TASKS)
def test_every_task_trains_with_adam(task):
    row = train(["xavier-normal"], "tanh", task=task, optimizer="adam", lr=0.01, epochs=150).rows()[0]
    assert row["best_accuracy"] > 0.8, row


def _numeric_gradients(network, data, rows):
    return [numeric_gradient(lambda: _loss(network, data, rows), p) for p in network.parameters]


def _loss(network, data, rows):
    from initcli.training import _forward

    _, logits = _forward(network, data.x[rows])
    return _loss_and_grad(data, logits, rows)[0]


@pytest.mark.parametrize("task", ["spiral", "regression"])
@pytest.mark.parametrize("arch", [Architecture(), Architecture(norm="layer"),
                                  Architecture(residual_scale=0.5, block=1)], ids=repr)
def test_training_gradients_match_finite_differences(task, arch):
    data = make_task(task, 12, rng=np.random.default_rng(1))
    network = build_network(make_init("xavier-normal"), get_activation("tanh"), data, [5, 5, 5], seed=3,
                            dtype="float64", arch=arch)
    rows = np.arange(12)
    _, _, analytic = gradients(network, data, rows)
    for a, n in zip(analytic, _numeric_gradients(network, data, rows)):
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-8)


def test_same_seed_same_result_and_jobs_do_not_matter():
    options = {"task": "moons", "epochs": 20, "depth": 2, "width": 16}
    serial = train(["he-normal", "xavier-normal"], "relu", jobs=1, **options)
    again = train(["he-normal", "xavier-normal"], "relu", jobs=1, **options)
    parallel = train(["he-normal", "xavier-normal"], "relu", jobs=2, **options)
    assert serial.rows() == again.rows() == parallel.rows()
    assert serial.curve_rows() == parallel.curve_rows()


def test_curves_have_a_row_per_epoch():
    result = train(["he-normal", "zeros"], "relu", task="xor", epochs=7)
    rows = result.curve_rows()
    assert len(rows) == 14 and rows[0]["epoch"] == 1 and rows[-1]["scheme"] == "zeros"


def test_full_batch_and_evaluation_agree():
    data = make_task("circles", 64, rng=np.random.default_rng(2))
    network = build_network(make_init("he-normal"), get_activation("relu"), data, [8], seed=0, dtype="float64")
    loss, score, _ = gradients(network, data, np.arange(64))
    evaluated = _evaluate(network, data)
    assert loss == pytest.approx(evaluated[0]) and score == pytest.approx(evaluated[1])


@pytest.mark.parametrize("kwargs,option", [
    ({"task": "nope"}, "--task"), ({"lr": 0.0}, "--lr"), ({"lr": -1.0}, "--lr"), ({"lr": math.nan}, "--lr"),
    ({"epochs": 0}, "--epochs"), ({"classes": 1}, "--classes"), ({"task": "moons", "classes": 3}, "--classes"),
    ({"optimizer": "rmsprop"}, "--optimizer"), ({"target": 1.5}, "--target"), ({"batch": 0}, "--batch"),
    ({"sizes": []}, "--sizes"), ({"residual": True, "depth": 1}, "--residual"), ({"samples": 0}, "--samples"),
])
def test_bad_input(kwargs, option):
    with pytest.raises(InitcliError) as info:
        train(["he-normal"], "relu", **kwargs)
    assert info.value.option == option


def test_cli_train():
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--task", "xor", "--schemes", "zeros,he", "--epochs", "30", "-f", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["scheme"] for r in rows] == ["zeros", "he-normal"]
    assert list(rows[0]) == ["scheme", "activation", "final_loss", "final_accuracy", "best_accuracy",
                             "epochs_to_target", "diverged", "final_effective_rank"]
    assert rows[0]["epochs_to_target"] == ""  # never reached
    result = runner.invoke(app, ["train", "--task", "xor", "--schemes", "he", "--epochs", "3", "--curves", "-f", "csv"])
    assert list(csv.DictReader(io.StringIO(result.stdout)))[2]["epoch"] == "3"
    for bad in (["train", "--task", "nope"], ["train", "--lr", "0"], ["train", "--epochs", "0"],
                ["train", "--classes", "1"]):
        failed = runner.invoke(app, bad)
        assert failed.exit_code == 2 and "Traceback" not in failed.output
