"""What an adversarial run of the command line found (issue 11), each one a test: streams,
signals, partial files, outputs checked before the work, options that would be ignored."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli import files
from initcli.cli import app
from initcli.errors import InitcliError

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
SMALL = ["--depth", "2", "--width", "8", "--batch", "4"]


def run(*args, **env):
    return CliRunner().invoke(app, list(args), env={**ENV, **env})


def shell(command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **ENV, "PYTHON": sys.executable}, **kwargs)


def one_error_line(stderr: str, option: str | None = None) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("initcli: error:"), stderr
    if option is not None:
        assert option in lines[0], lines[0]
    return lines[0]


# -- streams ----------------------------------------------------------------------------------


def test_bare_command_into_a_closed_pipe_is_quiet():
    done = shell('"$PYTHON" -m initcli | head -3')
    assert "Traceback" not in done.stderr and done.stderr == ""
    assert done.stdout.startswith("Usage")


def test_stdout_on_a_full_device_is_one_line():
    done = shell('"$PYTHON" -m initcli propagate --depth 3 --width 16 --batch 8 -f csv > /dev/full')
    assert done.returncode == 2
    one_error_line(done.stderr)
    assert "Traceback" not in done.stderr


def test_closed_stdout_is_refused():
    done = shell('"$PYTHON" -m initcli schemes -f csv >&-')
    assert done.returncode == 2
    one_error_line(done.stderr)


def test_closed_stderr_keeps_errors_off_stdout():
    done = shell('"$PYTHON" -m initcli propagate --depth 0 2>&-')
    assert done.returncode == 2
    assert done.stdout == ""


def test_an_ascii_terminal_encoding_does_not_crash():
    done = shell('PYTHONIOENCODING=ascii "$PYTHON" -m initcli propagate --depth 3 --width 16 --batch 8 -f table')
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "layer" in done.stdout


# -- signals and partial files ------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_during_a_save_leaves_no_file(tmp_path, signum):
    target = tmp_path / "w.npz"
    # big enough that writing takes a while; the signal lands during drawing or writing
    process = subprocess.Popen([sys.executable, "-m", "initcli", "sample", "--sizes", "6000,6000,6000,6000",
                                "--save", str(target), "-f", "csv"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "numpy" not in _mapped(process.pid):
        time.sleep(0.05)  # the handlers are installed by then; the drawing takes seconds more
    time.sleep(0.5)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal landed")
    assert process.returncode in (130, 128 + signum)
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def _mapped(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return maps.read()
    except OSError:
        return ""


def test_interrupt_between_creating_and_naming_the_temporary_file_leaves_nothing(tmp_path, monkeypatch):
    real_mkstemp = files.tempfile.mkstemp

    def mkstemp_then_interrupt(*args, **kwargs):
        result = real_mkstemp(*args, **kwargs)
        if "probe" not in kwargs.get("prefix", ""):
            files._pending.add(result[1])  # what atomic_output records, then the interrupt lands
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp_then_interrupt)
    with pytest.raises(KeyboardInterrupt), files.atomic_output(tmp_path / "w.npz", "save", suffix=".npz"):
        pass
    files.remove_pending()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "w.npz"
    target.write_bytes(b"old")

    def no_space(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(InitcliError, match="No space left") as caught, \
            files.atomic_output(target, "save", force=True, suffix=".npz") as handle:
        handle.write(b"new")
    assert caught.value.param == "save"
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["w.npz"]


# -- outputs checked before any work -----------------------------------------------------


def test_a_bad_plot_path_refuses_before_writing_the_weights(tmp_path):
    result = run("sample", "--sizes", "8,8", "--save", str(tmp_path / "w.npz"), "--save-plot", str(tmp_path / "p.txt"))
    assert result.exit_code == 2
    one_error_line(result.stderr, "--save-plot")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["propagate", *SMALL], ["compare", *SMALL, "--jobs", "1"],
                                     ["train", "--epochs", "1", "--samples", "16", "--jobs", "1"]])
def test_a_missing_plot_folder_refuses_before_the_run(tmp_path, command):
    started = time.monotonic()
    result = run(*command, "--save-plot", str(tmp_path / "nodir" / "p.png"))
    assert result.exit_code == 2
    one_error_line(result.stderr, "--save-plot")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("option", ["--save", "--save-plot"])
def test_a_folder_is_not_a_file_even_with_force(tmp_path, option):
    suffix = ".npz" if option == "--save" else ".png"
    folder = tmp_path / f"x{suffix}"
    folder.mkdir()
    result = run("sample", "--sizes", "8,8", option, str(folder), "--force")
    assert result.exit_code == 2
    one_error_line(result.stderr, option)


def test_a_long_file_name_is_one_line(tmp_path):
    result = run("sample", "--sizes", "8,8", "--save", str(tmp_path / ("w" * 300 + ".npz")))
    assert result.exit_code == 2
    one_error_line(result.stderr, "--save")


def test_a_dangling_link_is_not_replaced_without_force(tmp_path):
    link = tmp_path / "w.npz"
    link.symlink_to(tmp_path / "nowhere")
    result = run("sample", "--sizes", "8,8", "--save", str(link))
    assert result.exit_code == 2
    one_error_line(result.stderr, "--save")
    assert link.is_symlink()


def test_a_pipe_is_never_a_target(tmp_path):
    fifo = tmp_path / "p.png"
    os.mkfifo(fifo)
    result = run("sample", "--sizes", "8,8", "--save-plot", str(fifo), "--force")
    assert result.exit_code == 2
    one_error_line(result.stderr, "--save-plot")


# -- options that would be ignored, and conflicts ----------------------------------------------


@pytest.mark.parametrize("option", [["--residual-scale", "0.5"], ["--block", "2"]])
def test_residual_options_need_residual(option):
    result = run("propagate", *SMALL, *option)
    assert result.exit_code == 2
    one_error_line(result.stderr, option[0])


def test_lsuv_options_need_the_lsuv_scheme():
    result = run("propagate", *SMALL, "--lsuv-tol", "0.1")
    assert result.exit_code == 2
    one_error_line(result.stderr, "--lsuv-tol")
    assert run("propagate", *SMALL, "--scheme", "lsuv", "--lsuv-tol", "0.1", "-f", "csv").exit_code == 0


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "w.npz"
    assert run("sample", "--sizes", "16,16,16", "--bias-std", "0.5", "--save", str(path)).exit_code == 0
    return path


@pytest.mark.parametrize("option", [["--scheme", "xavier-normal"], ["--gain", "3"], ["--bias-std", "5"]])
def test_options_a_weights_file_overrides_are_refused(weights_file, option):
    result = run("propagate", "--weights", str(weights_file), "--batch", "8", *option)
    assert result.exit_code == 2
    one_error_line(result.stderr, option[0])


def test_theory_with_a_weights_file_uses_the_biases_it_holds(weights_file):
    result = run("propagate", "--weights", str(weights_file), "--batch", "64", "-f", "json")
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["params"]
    with np.load(weights_file) as data:
        biases = np.concatenate([data["bias_1"], data["bias_2"]]).astype(np.float64)
    assert params["bias_std"] == pytest.approx(float(np.sqrt(np.mean(biases**2))), rel=1e-12)


def test_norm_is_case_insensitive():
    assert run("propagate", *SMALL, "--norm", "None", "-f", "csv").exit_code == 0
    assert run("propagate", *SMALL, "--norm", "Layer", "-f", "csv").exit_code == 0


def test_batch_one_says_what_it_cannot_measure():
    result = run("propagate", "--depth", "2", "--width", "8", "--batch", "1", "-f", "csv")
    assert result.exit_code == 0
    assert "--batch 1" in result.stderr


def test_help_does_not_cut_command_descriptions():
    result = run("--help", COLUMNS="80")
    commands = result.stdout.split("Commands:")[1]
    assert "…" not in commands and "..." not in commands
    assert "how fast?" in commands  # the end of train's first line


# -- errors inside workers, memory ----------------------------------------------------------


def test_an_error_inside_a_worker_is_one_line_not_a_hang():
    started = time.monotonic()
    result = run("compare", "--schemes", "lsuv,he-normal", "--input-std", "0", "--depth", "3", "--width", "16",
                 "--batch", "8", "--jobs", "2")
    assert result.exit_code == 2
    one_error_line(result.stderr)
    assert time.monotonic() - started < 60


def test_compare_guards_the_memory_of_the_runs_it_makes_at_once(monkeypatch):
    from initcli import compare as compare_module
    from initcli.propagation import estimate_bytes, prepare

    one = estimate_bytes(prepare(depth=4, width=64, batch=64).sizes, 64, np.dtype("float32"))
    seen = []
    monkeypatch.setattr(compare_module, "check_memory", lambda needed, **kw: seen.append(needed))
    compare_module.plan(["he-normal", "zeros"], ["relu"], jobs=2, depth=4, width=64, batch=64)
    assert seen == [2 * one]


def test_memory_estimate_counts_layer_norm():
    from initcli.engine import Architecture
    from initcli.propagation import estimate_bytes

    plain = estimate_bytes([256] * 11, 512, np.dtype("float32"))
    normed = estimate_bytes([256] * 11, 512, np.dtype("float32"), arch=Architecture(norm="layer"))
    assert normed > plain


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit -v")
def test_the_memory_guard_reads_the_address_space_limit():
    done = shell('ulimit -v 2000000; "$PYTHON" -m initcli propagate --width 8192 --batch 8192 --depth 8 -f csv')
    assert done.returncode == 2, done.stderr[-500:]
    assert "GiB" in one_error_line(done.stderr)


def test_a_weights_file_past_float32_is_refused_for_float32_and_runs_in_float64(tmp_path):
    path = tmp_path / "big.npz"
    np.savez(path, weight_1=np.full((8, 8), 1e300), bias_1=np.zeros(8),
             metadata=np.array(json.dumps({"layout": "torch (out, in, *kernel)", "sizes": [8, 8]})))
    refused = run("propagate", "--weights", str(path), "--batch", "4")
    assert refused.exit_code == 2
    one_error_line(refused.stderr, "--weights")
    ran = run("propagate", "--weights", str(path), "--batch", "4", "--dtype", "float64", "-f", "csv")
    assert ran.exit_code == 0 and "Warning" not in ran.stderr
