"""Reliability: fuzzed command lines, determinism, safe files and Ctrl-C (issue 8)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from initcli.cli import app
from initcli.propagation import propagate

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
SMALL = ["--depth", "2", "--width", "8", "--batch", "4"]


def run(*args):
    return CliRunner().invoke(app, list(args), env=ENV)


# -- fuzzing the command line ---------------------------------------------------------------

MALFORMED = ["", " ", "nan", "-nan", "inf", "-inf", "1e999", "-0", "-0.0", "99999999999999999999999", "１２",
             "ünïcödé", "3,", ",3", "3,,4", "0x10", "1_000", "\x00", "-1", "2.5", "1e-400", "NaN"]
OPTIONS = {  # option: values that are valid
    "--depth": ["1", "3"], "--width": ["4", "16"], "--batch": ["1", "5"], "--gain": ["0", "1.5"],
    "--std": ["0.1", "2"], "--limit": ["0.5"], "--value": ["-0.3", "0.2"], "--bias-std": ["0", "0.1"],
    "--input-std": ["0", "1"], "--seed": ["0", "7"], "--scheme": ["xavier", "he-uniform", "lsuv", "zeros"],
    "--activation": ["tanh", "gelu", "leaky_relu"], "--mode": ["fan_out", "fan-avg"],
    "--distribution": ["uniform", "truncated-normal"], "--dtype": ["float64"], "--negative-slope": ["0.2"],
    "--format": ["csv", "json"], "--residual-scale": ["0.5"], "--norm": ["layer", "none"],
}


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_fuzzed_propagate_never_prints_a_traceback(data):
    chosen = data.draw(st.lists(st.sampled_from(sorted(OPTIONS)), min_size=1, max_size=5, unique=True))
    args, malformed = ["propagate", "--depth", "2", "--width", "8", "--batch", "4"], None
    for option in chosen:
        if data.draw(st.booleans(), label=f"malform {option}") and option not in ("--format",):
            value = data.draw(st.sampled_from(MALFORMED), label=option)
            malformed = malformed or (option, value)
        else:
            value = data.draw(st.sampled_from(OPTIONS[option]), label=option)
        args += [option, value]
    result = run(*args)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2), (args, result.output)
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("initcli: error:"), (args, result.stderr)
        assert any(option in lines[0] for option in OPTIONS) or "GiB" in lines[0] or "--scheme" in lines[0], lines
    else:
        assert result.stdout.strip()


@pytest.mark.parametrize("value", MALFORMED)
@pytest.mark.parametrize("option", ["--depth", "--gain", "--sizes", "--seed"])
def test_each_malformed_value(option, value):
    result = run("propagate", *(["--batch", "4"] if option == "--sizes" else SMALL), option, value, "-f", "csv")
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2)
    if result.exit_code == 2:
        assert option in result.stderr, result.stderr


def test_valid_odd_values_are_accepted():
    assert run("propagate", *SMALL, "--gain", "-0", "-f", "csv").exit_code == 0  # negative zero is zero
    assert run("propagate", *SMALL, "--seed", "99999999999999999999", "-f", "csv").exit_code == 0


# -- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["propagate", "--depth", "6", "--width", "32", "--batch", "32", "-f", "csv"],
    ["sample", "--sizes", "40,30,20", "-f", "csv"],
    ["compare", "--schemes", "he,xavier,lsuv", "--activation", "relu,tanh", "--depth", "4", "--width", "32",
     "--batch", "32", "-f", "csv"],
    ["train", "--schemes", "he,xavier", "--task", "moons", "--epochs", "10", "-f", "csv"],
    ["jacobian", "--depth", "3", "--width", "16", "-f", "csv"],
])
def test_same_seed_same_bytes_other_seed_other_numbers(command):
    first, second = run(*command, "--seed", "3").stdout, run(*command, "--seed", "3").stdout
    assert first == second and first
    assert run(*command, "--seed", "4").stdout != first
    if command[0] in ("compare", "train"):
        assert run(*command, "--seed", "3", "--jobs", "2").stdout == first


def test_seed_covers_weights_inputs_and_cotangent_separately():
    # a larger batch changes neither the weights nor the first inputs' draw
    a = propagate(depth=2, width=16, batch=8, seed=1, theory=False)
    b = propagate(depth=2, width=16, batch=16, seed=1, theory=False)
    assert [layer.weight_std for layer in a.layers] == [layer.weight_std for layer in b.layers]
    # a deeper stack keeps the first layers' weights
    c = propagate(depth=4, width=16, batch=8, seed=1, theory=False)
    assert a.layers[0].weight_std == c.layers[0].weight_std


# -- files ----------------------------------------------------------------------------------


def test_weights_file_round_trip(tmp_path):
    target = tmp_path / "w.npz"
    assert run("sample", "--sizes", "32,24,16", "--seed", "9", "--bias-std", "0.2", "--save", str(target)).exit_code == 0
    loaded = propagate(weights=str(target), seed=2, bias_std=0.2, theory=False)
    sampled = propagate(sizes=[32, 24, 16], seed=9, bias_std=0.2, theory=False)
    assert [layer.weight_std for layer in loaded.layers] == [layer.weight_std for layer in sampled.layers]
    result = run("propagate", "--weights", str(target), "-f", "json")
    document = json.loads(result.stdout)
    assert document["params"]["weights"] == str(target) and document["params"]["saved_seed"] == 9
    assert document["params"]["sizes"] == [32, 24, 16]


def _bad_files(tmp_path):
    good = tmp_path / "good.npz"
    run("sample", "--sizes", "6,5,4", "--save", str(good))
    with np.load(good, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    cases = {}

    def write(name, **changes):
        path = tmp_path / name
        np.savez(path, **{**arrays, **changes})
        cases[name] = path

    (tmp_path / "text.npz").write_text("hello")
    cases["text.npz"] = tmp_path / "text.npz"
    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[:200])
    cases["truncated.npz"] = tmp_path / "truncated.npz"
    write("shape.npz", weight_2=np.ones((4, 7), np.float32))
    write("bias.npz", bias_1=np.ones(3, np.float32))
    write("ints.npz", weight_1=np.ones((5, 6), np.int64))
    write("nan.npz", weight_1=np.full((5, 6), np.nan, np.float32))
    write("meta.npz", metadata=np.array(json.dumps({"layout": "torch", "sizes": [6, 5, 9]})))
    write("nometa.npz", metadata=np.array("not json"))
    np.savez(tmp_path / "pickle.npz", weight_1=np.array([object()], dtype=object), bias_1=np.zeros(1),
             metadata=np.array("{}"))
    cases["pickle.npz"] = tmp_path / "pickle.npz"
    cases["missing.npz"] = tmp_path / "missing.npz"
    cases["folder"] = tmp_path
    return cases


def test_corrupt_or_mismatched_weight_files_are_refused(tmp_path):
    for name, path in _bad_files(tmp_path).items():
        result = run("propagate", "--weights", str(path))
        assert result.exit_code == 2, (name, result.output)
        assert "--weights" in result.stderr and "Traceback" not in result.output, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unwritable_and_existing_targets(tmp_path):
    missing_folder = tmp_path / "nope" / "w.npz"
    result = run("sample", "--save", str(missing_folder))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = run("propagate", *SMALL, "--save-plot", str(tmp_path / "nope" / "p.svg"))
    assert result.exit_code in (0, 2)  # matplotlib may be absent: either way, no traceback
    assert "Traceback" not in result.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("sample", "--save", str(blocker / "w.npz"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    target = tmp_path / "w.npz"
    target.write_bytes(b"precious")
    assert run("sample", "--save", str(target)).exit_code == 2
    assert target.read_bytes() == b"precious"  # untouched


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    from initcli import files

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(KeyboardInterrupt), files.atomic_output(tmp_path / "w.npz", "save", suffix=".npz") as handle:
        np.savez(handle)
    assert list(tmp_path.iterdir()) == []


# -- Ctrl-C ---------------------------------------------------------------------------------


# long enough (tens of seconds) that the interrupt lands mid-run, light enough for CI's memory
@pytest.mark.parametrize("command", [["propagate", "--depth", "20000", "--width", "128", "--batch", "256",
                                      "--checkpoint"],
                                     ["compare", "--depth", "3000", "--width", "256", "--batch", "256", "--jobs", "2"]])
def test_ctrl_c_exits_130_with_one_line_and_no_file(tmp_path, command):
    target = tmp_path / "chart.svg"
    process = subprocess.Popen([sys.executable, "-m", "initcli", *command, "--save-plot", str(target), "-f", "csv"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **ENV})
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "initcli: interrupted" and "Traceback" not in err
    assert out == "" and not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
