import csv
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli import __version__
from initcli.cli import app
from initcli.propagation import LAYER_COLUMNS
from initcli.sampling import WEIGHT_COLUMNS
from initcli.theory import THEORY_COLUMNS

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def run(*args):
    return CliRunner().invoke(app, list(args), env=ENV)


def rows_of(output):
    return list(csv.DictReader(io.StringIO(output)))


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("schemes", "sample", "propagate"):
        assert command in result.output


@pytest.mark.parametrize("fmt", ["csv", "json", "auto"])
def test_propagate_formats_parse(fmt):
    result = run("propagate", "--depth", "5", "--width", "32", "--batch", "16", "--format", fmt)
    assert result.exit_code == 0, result.output
    if fmt == "json":
        document = json.loads(result.stdout)
        assert document["command"] == "propagate"
        assert document["params"]["scheme"] == "he-normal" and document["params"]["seed"] == 0
        assert document["params"]["sizes"] == [32] * 6
        assert document["initcli_version"] == __version__
        assert [list(r) for r in document["rows"]] == [list(LAYER_COLUMNS + THEORY_COLUMNS)] * 5
    else:  # auto is CSV when stdout is not a terminal, as under the runner
        rows = rows_of(result.stdout)
        assert len(rows) == 5 and list(rows[0]) == list(LAYER_COLUMNS + THEORY_COLUMNS)
        assert [int(r["layer"]) for r in rows] == [1, 2, 3, 4, 5]


def test_no_theory_drops_the_theory_columns():
    rows = rows_of(run("propagate", "--depth", "2", "--width", "8", "--batch", "4", "--no-theory", "-f", "csv").stdout)
    assert list(rows[0]) == list(LAYER_COLUMNS)


def test_csv_carries_full_precision():
    from initcli import propagate

    result = run("propagate", "--depth", "3", "--width", "16", "--batch", "8", "-f", "csv")
    expected = propagate(depth=3, width=16, batch=8).layers
    for row, layer in zip(rows_of(result.stdout), expected):
        assert float(row["preact_var"]) == layer.preact_var  # round-trips exactly


def test_json_turns_overflow_into_null():
    result = run("propagate", "--scheme", "normal", "--depth", "40", "--width", "256", "--batch", "32", "-f", "json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)  # strict: no NaN/Infinity tokens
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout
    assert document["overflow"]["forward_layer"] is not None
    assert document["rows"][-1]["preact_var"] is None
    assert "overflowed" in result.stderr


def test_table_when_asked():
    result = run("propagate", "--depth", "3", "--width", "16", "--batch", "8", "-f", "table")
    assert result.exit_code == 0
    assert "preact" in result.stdout and "\x1b[" not in result.stdout


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_sample_formats(fmt):
    result = run("sample", "--sizes", "20,30,10", "-f", fmt)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"] if fmt == "json" else rows_of(result.stdout)
    assert len(rows) == 2
    assert list(rows[0]) == list(WEIGHT_COLUMNS)
    assert rows[0]["shape"] == "30x20" and int(rows[0]["fan_in"]) == 20 and int(rows[0]["fan_out"]) == 30
    assert float(rows[0]["expected_std"]) == pytest.approx(math.sqrt(2 / 20), rel=1e-12)


def test_sample_conv_shape():
    result = run("sample", "--shape", "64,3,7,7", "--scheme", "xavier-uniform", "-f", "csv")
    row = rows_of(result.stdout)[0]
    assert int(row["fan_in"]) == 147 and int(row["fan_out"]) == 3136
    assert float(row["expected_limit"]) == pytest.approx(math.sqrt(6 / (147 + 3136)), rel=1e-12)


def test_sample_default_sizes():
    rows = rows_of(run("sample", "-f", "csv").stdout)
    assert [r["shape"] for r in rows] == ["256x784", "256x256", "10x256"]


def test_schemes_lists_every_scheme():
    from initcli.schemes import RESIDUAL_INIT_NAMES, SCHEME_NAMES

    rows = rows_of(run("schemes", "-f", "csv").stdout)
    assert [r["name"] for r in rows if r["kind"] == "scheme"] == list(SCHEME_NAMES)
    assert [r["name"] for r in rows if r["kind"] == "residual-init"] == list(RESIDUAL_INIT_NAMES)
    assert json.loads(run("schemes", "-f", "json").stdout)["rows"][0]["name"] == "zeros"


def test_save_writes_loadable_npz_atomically(tmp_path):
    target = tmp_path / "w.npz"
    result = run("sample", "--sizes", "8,6,4", "--seed", "3", "--bias-std", "0.1", "--save", str(target), "-f", "csv")
    assert result.exit_code == 0, result.output
    with np.load(target, allow_pickle=False) as data:
        assert data["weight_1"].shape == (6, 8) and data["weight_2"].shape == (4, 6)
        assert data["bias_1"].shape == (6,)
        metadata = json.loads(str(data["metadata"]))
    assert metadata["seed"] == 3 and metadata["scheme"] == "he-normal" and metadata["sizes"] == [8, 6, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # no temporary left behind
    # no overwrite without --force
    again = run("sample", "--sizes", "8,6,4", "--save", str(target))
    assert again.exit_code == 2
    assert run("sample", "--sizes", "8,6,4", "--save", str(target), "--force", "-f", "csv").exit_code == 0


BAD_INPUTS = [
    (["propagate", "--depth", "0"], "--depth"),
    (["propagate", "--depth", "-3"], "--depth"),
    (["propagate", "--depth", "abc"], "--depth"),
    (["propagate", "--width", "0"], "--width"),
    (["propagate", "--batch", "0"], "--batch"),
    (["propagate", "--sizes", "784,abc,10"], "--sizes"),
    (["propagate", "--sizes", "784,0,10"], "--sizes"),
    (["propagate", "--sizes", "784,256,"], "--sizes"),
    (["propagate", "--sizes", "784"], "--sizes"),
    (["propagate", "--scheme", "xavir"], "--scheme"),
    (["propagate", "--activation", "rellu"], "--activation"),
    (["propagate", "--gain", "-1"], "--gain"),
    (["propagate", "--gain", "nan"], "--gain"),
    (["propagate", "--std", "inf"], "--std"),
    (["propagate", "--std", "1e999"], "--std"),
    (["propagate", "--format", "xml"], "--format"),
    (["propagate", "--dtype", "float16"], "--dtype"),
    (["propagate", "--mode", "sideways"], "--mode"),
    (["propagate", "--width", "100000", "--depth", "1000"], "GiB"),
    (["sample", "--shape", "64"], "--shape"),
    (["sample", "--shape", "64,0"], "--shape"),
    (["sample", "--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize("args,mention", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2(args, mention):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert mention in lines[0]


def test_unknown_scheme_suggests_nearest():
    assert "xavier" in run("propagate", "--scheme", "xavir").stderr


# -- real processes -------------------------------------------------------------------------


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "initcli", *args], capture_output=True, text=True,
                          env={**os.environ, **ENV}, **kwargs)


def test_pipe_to_csv_reader_gives_50_rows():
    shell = (f"{sys.executable} -m initcli propagate --depth 50 | "
             f"{sys.executable} -c 'import csv,sys; print(len(list(csv.DictReader(sys.stdin))))'")
    done = subprocess.run(shell, shell=True, capture_output=True, text=True, env={**os.environ, **ENV})
    assert done.stdout.strip() == "50"
    assert "Traceback" not in done.stderr


def test_closed_pipe_is_quiet():
    shell = f"{sys.executable} -m initcli propagate --depth 500 --width 64 --batch 64 | head -1"
    done = subprocess.run(shell, shell=True, capture_output=True, text=True, env={**os.environ, **ENV})
    assert done.stdout.startswith("layer,")
    assert "Traceback" not in done.stderr and "Error" not in done.stderr


def test_bad_input_in_a_real_process():
    done = _cli("propagate", "--depth", "0")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--depth" in done.stderr
    assert done.stdout == ""


def test_redirect_to_file(tmp_path):
    target = tmp_path / "run.csv"
    with open(target, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "initcli", "propagate", "--depth", "7"], stdout=handle,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    assert done.returncode == 0
    assert len(rows_of(target.read_text())) == 7
    assert done.stderr == ""


def test_help_and_version_do_not_import_numpy_or_rich_tables():
    code = ("import sys; from initcli.cli import app; from typer.testing import CliRunner; "
            "CliRunner().invoke(app, ['--help']); CliRunner().invoke(app, ['--version']); "
            "print('numpy' in sys.modules, 'rich.table' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"]


# -- theory commands ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_compare_formats(fmt):
    from initcli.compare import COMPARE_COLUMNS

    result = run("compare", "--schemes", "zeros,he-normal", "--activation", "relu,tanh", "--depth", "4",
                 "--width", "32", "--batch", "16", "-f", fmt)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"] if fmt == "json" else rows_of(result.stdout)
    assert [(r["scheme"], r["activation"]) for r in rows] == [
        ("zeros", "relu"), ("he-normal", "relu"), ("zeros", "tanh"), ("he-normal", "tanh")]
    assert list(rows[0]) == list(COMPARE_COLUMNS)
    assert rows[0]["verdict"] == "no-signal"


def test_compare_table_prints_reasons():
    result = run("compare", "--schemes", "zeros,he-normal", "--depth", "4", "--width", "32", "--batch", "16",
                 "-f", "table")
    assert result.exit_code == 0
    assert "zeros + relu: no-signal" in result.stdout


def test_compare_help_documents_thresholds():
    assert "1.001" in run("compare", "--help").stdout


def test_gain_rows():
    rows = rows_of(run("gain", "--activation", "relu,tanh,gelu", "-f", "csv").stdout)
    assert [r["activation"] for r in rows] == ["relu", "tanh", "gelu"]
    assert float(rows[0]["forward_gain"]) == pytest.approx(math.sqrt(2), rel=1e-12)
    assert float(rows[1]["torch_gain"]) == pytest.approx(5 / 3)
    assert rows[2]["torch_gain"] == ""  # torch has no gain for gelu
    from initcli.activations import ACTIVATION_NAMES

    assert len(rows_of(run("gain", "-f", "csv").stdout)) == len(ACTIVATION_NAMES)


def test_critical_json():
    result = run("critical", "--activation", "tanh", "--bias-std", "0.05", "-f", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["params"]["sigma_w_critical"] == pytest.approx(1.1225, rel=1e-3)
    assert [r["phase"] for r in document["rows"]].count("critical") == 1
    assert "critical σ_w" in result.stderr


@pytest.mark.parametrize("args,mention", [
    (["compare", "--schemes", "he,,zeros"], "--schemes"),
    (["compare", "--schemes", "hee"], "--scheme"),
    (["compare", "--activation", "relu,"], "--activation"),
    (["gain", "--activation", "nope"], "--activation"),
    (["critical", "--bias-std", "-1"], "--bias-std"),
    (["critical", "--activation", "sigmoidd"], "--activation"),
])
def test_theory_commands_bad_input(args, mention):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert mention in result.stderr and "Traceback" not in result.output


def test_options_a_scheme_does_not_use_are_reported():
    result = run("propagate", "--scheme", "zeros", "--mode", "fan_out", "--depth", "2", "--width", "8",
                 "--batch", "4", "-f", "csv")
    assert result.exit_code == 0
    assert "--mode does not apply to the 'zeros' scheme" in result.stderr
    assert rows_of(result.stdout)  # stdout stays clean CSV
    quiet = run("propagate", "--scheme", "he", "--mode", "fan_out", "--depth", "2", "--width", "8", "--batch", "4")
    assert "warning" not in quiet.stderr
