"""`train --arch conv|transformer` (`initcli.blocktraining`): gradients against finite
differences, the tasks, learning, determinism and the CLI's refusals."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli import blocktraining
from initcli.cli import app
from initcli.errors import InitcliError

ENV = {"COLUMNS": "200"}
EPS64 = np.finfo(np.float64).eps


def _network(kind, **options):
    run = blocktraining._prepare(kind, "xavier-normal", "tanh", dict(options, dtype="float64", batch=6), {})
    classes = 3
    rng = np.random.default_rng(0)
    if kind == "conv":
        data = blocktraining.make_waves(6, run.shape.spatial, run.shape.channels, 2, 0.5, rng)
        classes = 2
    else:
        data = blocktraining.make_first(6, run.shape.seq_len, run.shape.width, classes, 0.1, rng)
    network = blocktraining.build_network(kind, run.init, run.act, run, classes, seed=1)
    return network, data


@pytest.mark.parametrize(("kind", "options"), [
    ("conv", {"depth": 2, "channels": 3, "spatial": (9,), "residual": True}),
    ("conv", {"depth": 2, "channels": 2, "spatial": (9, 9), "padding": "zero"}),
    ("transformer", {"depth": 2, "width": 8, "heads": 2, "seq_len": 4, "mlp_ratio": 1.5}),
    ("transformer", {"depth": 2, "width": 8, "heads": 2, "seq_len": 4, "mlp_ratio": 0, "norm_position": "post",
                     "causal": True}),
])
def test_gradients_match_central_differences(kind, options):
    """Every parameter's gradient (pooling, final LayerNorm and read-out included) against
    (L(θ+h) − L(θ−h))/2h at a few entries of each parameter, float64. The error of a central
    difference is O(h²·L''') plus rounding O(eps·L/h): h = 1e-5 makes both ~1e-10."""
    network, data = _network(kind, **options)
    rows = np.arange(6)
    _, _, grads = blocktraining.gradients(network, data, rows)
    params = network.parameters
    assert len(grads) == len(params)
    rng = np.random.default_rng(3)
    h = 1e-5
    for param, grad in zip(params, grads):
        assert grad.shape == param.shape
        for index in [tuple(rng.integers(0, n) for n in param.shape) for _ in range(3)]:
            saved = param[index]
            param[index] = saved + h
            up = blocktraining.gradients(network, data, rows)[0]
            param[index] = saved - h
            down = blocktraining.gradients(network, data, rows)[0]
            param[index] = saved
            numeric = (up - down) / (2 * h)
            assert grad[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (param.shape, index)


def test_waves_task_classes_are_frequency_bands():
    rng = np.random.default_rng(0)
    task = blocktraining.make_waves(64, (32,), 2, 3, 0.0, rng)
    assert task.x.shape == (64, 32, 2) and set(task.y) <= {0, 1, 2}
    spectrum = np.abs(np.fft.rfft(task.x[..., 0], axis=1))
    cycles = spectrum.argmax(axis=1)  # the wave's frequency, in cycles across the input
    assert np.all((cycles == 2 * task.y + 1) | (cycles == 2 * task.y + 2))
    # noise-free waves have unit variance and channels that repeat the wave
    assert np.allclose(task.x[..., 0], task.x[..., 1])
    assert np.var(task.x) == pytest.approx(1, rel=4 * math.sqrt(2 / 64))
    with pytest.raises(InitcliError) as error:
        blocktraining.make_waves(4, (8,), 2, 2, 0.0, rng)  # 4 cycles do not fit under Nyquist on 8 positions
    assert error.value.param == "classes"


def test_first_task_labels_are_first_tokens():
    rng = np.random.default_rng(1)
    task = blocktraining.make_first(200, 5, 16, 4, 0.0, rng)
    assert task.x.shape == (200, 5, 16)
    # tokens at position 0 with the same label share their vector exactly (noise 0)
    for label in range(4):
        first = task.x[task.y == label, 0]
        assert np.allclose(first, first[0])
    assert len({tuple(np.round(v, 9)) for v in task.x[:, 0]}) == 4


def test_trained_networks_learn_from_a_good_init_and_not_from_zeros():
    """A transformer from Xavier names the first token within a few epochs; from zeros only the
    read-out learns (every branch's weights get no gradient), and it stays at what the mean
    of the tokens tells. A conv stack from He learns the wave's band."""
    result = blocktraining.train("transformer", ["zeros", "xavier-normal"], "relu", samples=128, epochs=20, batch=16,
                                 engine_options={"depth": 2, "width": 16, "seq_len": 4}, jobs=1)
    zeros, xavier = result.rows()
    assert xavier["final_accuracy"] >= 0.9 and xavier["epochs_to_target"] is not None
    assert zeros["epochs_to_target"] is None and zeros["final_accuracy"] < 0.9
    conv = blocktraining.train("conv", ["he-normal"], "relu", samples=128, epochs=15, batch=16,
                               engine_options={"depth": 2, "channels": 4, "spatial": (16,)}, jobs=1)
    assert conv.rows()[0]["final_accuracy"] >= 0.9


def test_results_do_not_depend_on_jobs():
    options = dict(samples=32, epochs=2, engine_options={"depth": 1, "width": 8, "seq_len": 4, "heads": 2})
    one = blocktraining.train("transformer", ["xavier-normal", "he-normal"], "relu", jobs=1, **options)
    two = blocktraining.train("transformer", ["xavier-normal", "he-normal"], "relu", jobs=2, **options)
    assert one.rows() == two.rows() and one.curve_rows() == two.curve_rows()


@pytest.mark.parametrize(("args", "param"), [
    (["--arch", "conv", "--task", "spiral"], "--task"),
    (["--arch", "transformer", "--task", "waves"], "--task"),
    (["--arch", "conv", "--width", "8"], "--width"),
    (["--arch", "transformer", "--sizes", "8,8"], "--sizes"),
    (["--arch", "conv", "--classes", "8"], "--classes"),
    (["--arch", "transformer", "--seq-len", "1"], "--seq-len"),
    (["--task", "first"], "--task"),
    (["--arch", "transformer", "--residual-init", "rezero"], "--residual-init"),
])
def test_cli_refuses_what_does_not_apply(args, param):
    result = CliRunner().invoke(app, ["train", *args, "--epochs", "1", "--format", "csv"], env=ENV)
    assert result.exit_code == 2, result.output
    assert param in result.stderr and "Traceback" not in result.output


def test_cli_trains_a_transformer_and_writes_the_train_columns():
    result = CliRunner().invoke(app, ["train", "--arch", "transformer", "--schemes", "xavier-normal", "--epochs", "2",
                                      "--samples", "16", "--depth", "1", "--width", "8", "--seq-len", "4",
                                      "--format", "json"], env=ENV)
    assert result.exit_code == 0, result.output
    import json

    doc = json.loads(result.stdout)
    assert doc["params"]["arch"] == "transformer" and doc["params"]["optimizer"] == "adam"
    assert doc["params"]["task"] == "first" and doc["params"]["lr"] == 0.001
    result = CliRunner().invoke(app, ["train", "--arch", "conv", "--schemes", "he-normal", "--epochs", "1",
                                      "--samples", "8", "--depth", "1", "--channels", "2", "--format", "csv"], env=ENV)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["scheme"] == "he-normal" and "final_accuracy" in rows[0]




@pytest.mark.parametrize("kind", ["conv", "transformer"])
def test_memory_refusal_names_trains_own_options(kind):
    """The evaluation's forward pass holds every sample: a run too large for memory is refused
    before any work, naming --samples (train's --batch is the mini-batch, not what is too big)."""
    result = CliRunner().invoke(app, ["train", "--arch", kind, "--samples", "10000000", "--format", "csv"], env=ENV)
    assert result.exit_code == 2, result.output
    assert "--samples" in result.stderr and "--batch" not in result.stderr
