"""Issue 22, the lead's items: names from a file never reach a terminal raw (item 2), failed
writes name the option and the file (item 19), unnamed OS errors are not called write errors
(item 20), and a --weights file too large for memory is named as the cause (item 24)."""

import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli import files
from initcli.cli import _os_error_line, app
from initcli.errors import InitcliError
from initcli.render import print_table, stderr_console, stdout_console
from initcli.text import printable

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
HOSTILE = "w\x1b]0;pwned\x07.\x1b[2J\u202egpj.exe\nnext"  # retitle, clear, reorder, break the line


def run_module(*args):
    return subprocess.run([sys.executable, "-m", "initcli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **ENV})


def write_safetensors(path, tensors: dict):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def no_control_characters(text: str) -> None:
    assert printable(text.replace("\n", "")) == text.replace("\n", ""), repr(text)


# -- item 2: escape codes -----------------------------------------------------------------------


def test_printable_escapes_every_terminal_control():
    shown = printable(HOSTILE)
    for raw in ("\x1b", "\x07", "\u202e", "\n"):
        assert raw not in shown
    assert "\\x1b]0;pwned\\x07" in shown and "\\u202e" in shown and "\\x0a" in shown
    assert printable("héllo ✓ σ² layer.0.weight") == "héllo ✓ σ² layer.0.weight"  # text stays text


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_hostile_tensor_names_reach_no_stream_raw_in_table_mode(tmp_path, fmt):
    path = tmp_path / "m.safetensors"
    rng = np.random.default_rng(0)
    write_safetensors(path, {HOSTILE + ".weight": rng.normal(0, 0.05, (64, 32)), "fc.weight": np.zeros((8, 8))})
    done = run_module("inspect", str(path), "-f", fmt)
    assert done.returncode == 0, done.stderr
    no_control_characters(done.stderr)
    if fmt == "table":
        no_control_characters(done.stdout)
    elif fmt == "json":  # JSON escapes them itself, and keeps the name exact
        names = [row["name"] for row in json.loads(done.stdout)["rows"]]
        assert HOSTILE + ".weight" in names


def test_hostile_names_in_error_lines_are_escaped(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "\x1b[2J\x1b]0;x\x07.safetensors"}}))
    done = run_module("inspect", str(folder))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("initcli: error:"), done.stderr
    assert "\x1b" not in done.stderr and "\\x1b[2J" in done.stderr


def test_consoles_escape_strings_and_tables(capsys):
    stderr_console().print("note about " + HOSTILE)
    print_table([{"name": HOSTILE, "std": 1.0}], ["name", "std"], title=HOSTILE, console=stdout_console())
    out, err = capsys.readouterr()
    no_control_characters(out)
    no_control_characters(err)
    assert "\\x1b[2J" in out and "\\x1b[2J" in err


# -- items 19 and 20: failures say which file --------------------------------------------------


def test_a_failed_rename_names_the_option_and_the_file(tmp_path, monkeypatch):
    target = tmp_path / "out.npz"

    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(InitcliError) as caught, files.atomic_output(target, "save") as handle:
        handle.write(b"data")
    assert caught.value.option == "--save" and str(target) in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_an_os_error_with_a_file_is_not_called_a_write_failure(tmp_path):
    loop = tmp_path / "loop.safetensors"
    os.symlink(loop, loop)  # a symlink to itself: ELOOP on open
    line = _os_error_line(OSError(40, "Too many levels of symbolic links", str(loop)))
    assert str(loop) in line and "cannot write" not in line
    assert _os_error_line(OSError(28, "No space left on device")).startswith("cannot write the output")


def test_a_self_linked_weight_file_is_one_line_naming_it(tmp_path):
    loop = tmp_path / "loop.safetensors"
    os.symlink(loop, loop)
    done = CliRunner().invoke(app, ["inspect", str(loop)], env=ENV)
    assert done.exit_code == 2
    assert "cannot write" not in done.output and "loop.safetensors" in done.output


# -- item 24: a --weights file too large names the file ------------------------------------------


def _npy_header(shape, dtype="<f4") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def test_propagate_weights_declaring_more_than_memory_names_the_file(tmp_path):
    path = tmp_path / "huge.npz"
    n = 100_000  # a 100000 x 100000 float32 matrix: 37 GiB declared, a few hundred bytes on disk
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weight_1.npy", _npy_header((n, n)))
        archive.writestr("bias_1.npy", _npy_header((n,)))
        meta = np.lib.format.header_data_from_array_1_0(np.array(json.dumps({"layout": "torch"})))
        buffer = __import__("io").BytesIO()
        np.lib.format.write_array(buffer, np.array(json.dumps({"layout": "torch"})), allow_pickle=False)
        assert meta["shape"] == ()
        archive.writestr("metadata.npy", buffer.getvalue())
    done = CliRunner().invoke(app, ["propagate", "--weights", str(path), "-f", "csv"], env=ENV)
    assert done.exit_code == 2, done.output
    assert "--weights" in done.output and "huge.npz" in done.output
    for refused_with_weights in ("--width", "--depth", "--sizes"):
        assert refused_with_weights not in done.output


def test_sweep_out_that_stops_taking_rows_names_out_and_the_file(tmp_path):
    """A results file the system stops letting grow (here a 600-byte file-size limit, EFBIG)
    is one line naming --out and the file, exit 2, and the whole lines before it are kept."""
    import resource
    import signal

    out = tmp_path / "r.csv"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))

    done = subprocess.run([sys.executable, "-m", "initcli", "sweep", "--sigma-w", "0.5:2:4", "--depth", "3",
                           "--width", "8", "--batch", "8", "--jobs", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **ENV}, preexec_fn=limit)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("initcli: error:")]
    assert len(lines) == 1 and "--out" in lines[0] and str(out) in lines[0], done.stderr
    assert "Traceback" not in done.stderr
