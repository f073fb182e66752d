import io
import json
import struct
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from initcli.charts import Series, histogram_chart, log_chart
from initcli.cli import app
from initcli.render import log_bars, log_sparkline

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def render(lines, width):
    console = Console(width=width, file=io.StringIO(), no_color=True, force_terminal=False)
    for line in lines:
        console.print(line, soft_wrap=True)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [40, 80, 120])
def test_log_chart_fits_and_labels_powers_of_ten(width):
    layers = list(range(1, 51))
    series = [Series("act_var", layers, [10.0 ** (-i / 10) for i in layers], group=0),
              Series("grad_var", layers, [0.5] * 50, group=1),
              Series("theory grad_var", layers, [0.5] * 50, dashed=True, group=1)]
    text = render(log_chart(series, width=width, title="t"), width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    assert "1e+0" in text and "1e-5" in text and "layer" in text
    assert "● act_var" in text and "▲ grad_var" in text and "· theory" in text
    assert "\x1b[" not in text


def test_log_chart_says_what_it_left_out():
    text = render(log_chart([Series("v", [1, 2, 3], [1.0, 0.0, float("nan")])], width=60), 60)
    assert "2 values of 0, inf or nan not shown" in text
    assert "nothing to plot" in render(log_chart([Series("v", [1], [0.0])], width=60), 60)


def test_histogram_chart_draws_bars_and_density():
    values = np.random.default_rng(0).standard_normal(10_000)
    density = lambda w: np.exp(-w * w / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    text = render(histogram_chart(values, density=density, width=70), 70)
    assert "█" in text and "•" in text
    assert all(len(line) <= 70 for line in text.splitlines())


def test_bars_and_sparklines():
    assert log_bars([1, 10, 100]) == ["▏", "████▏", "████████"]  # 1, 33 and 64 eighths
    assert log_bars([0, float("nan")]) == ["", ""]
    line = log_sparkline([10.0**-i for i in range(40)], width=16)
    assert len(line) <= 16 and line[0] == "█" and line[-1] == "▁"


def run(*args):
    return CliRunner().invoke(app, list(args), env=ENV)


@pytest.mark.parametrize("command", [["propagate", "--depth", "6", "--width", "32", "--batch", "32"],
                                     ["compare", "--schemes", "he,xavier", "--depth", "5", "--width", "32",
                                      "--batch", "32", "--jobs", "1"],
                                     ["sample", "--sizes", "30,20"],
                                     ["train", "--schemes", "he", "--task", "xor", "--epochs", "5"]])
def test_plot_never_enters_piped_output(command):
    result = run(*command, "--plot", "-f", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split(",")[0] in ("layer", "scheme")
    assert "┤" not in result.stdout and "█" not in result.stdout
    assert "┤" in result.stderr or "█" in result.stderr  # the chart went to stderr


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("command,labels", [
    (["propagate", "--depth", "6", "--width", "32", "--batch", "32"], ["layer", "variance", "grad_var"]),
    (["compare", "--schemes", "he,xavier", "--depth", "5", "--width", "32", "--batch", "32", "--jobs", "1"],
     ["act_var", "grad_var", "he-normal+relu"]),
    (["sample", "--sizes", "30,20,10"], ["weight", "density", "layer 2"]),
    (["train", "--schemes", "he,zeros", "--task", "xor", "--epochs", "5"], ["epoch", "loss", "accuracy"]),
])
def test_saved_figures(tmp_path, command, labels):
    pytest.importorskip("matplotlib")
    svg = tmp_path / "figure.svg"
    result = run(*command, "--save-plot", str(svg), "-f", "csv")
    assert result.exit_code == 0, result.output
    tree = ET.parse(svg)  # a well-formed SVG
    text = "".join(tree.getroot().itertext()) + svg.read_text()
    for label in labels:
        assert label in text
    png = tmp_path / "figure.png"
    assert run(*command, "--save-plot", str(png), "-f", "csv").exit_code == 0
    width, height = _png_size(png)
    assert width >= 400 and height >= 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "figure.svg"]  # no temporary files
    again = run(*command, "--save-plot", str(png), "-f", "csv")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert run(*command, "--save-plot", str(png), "--force", "-f", "csv").exit_code == 0


def test_save_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = run("propagate", "--depth", "3", "--width", "16", "--batch", "8", "--save-plot",
                 str(tmp_path / "x.png"))
    assert result.exit_code == 2
    assert "pip install 'initcli[plot]'" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_save_plot_rejects_other_formats(tmp_path):
    result = run("propagate", "--depth", "3", "--save-plot", str(tmp_path / "x.jpg"))
    assert result.exit_code == 2 and ".png or .svg" in result.stderr


def test_table_has_profile_bars():
    result = run("propagate", "--depth", "4", "--width", "32", "--batch", "16", "-f", "table")
    assert "act_var ▕" in result.stdout and "█" in result.stdout
    result = run("compare", "--schemes", "he", "--depth", "4", "--width", "32", "--batch", "16", "--jobs", "1",
                 "-f", "table")
    assert "grad_var by layer" in result.stdout
    assert json.loads(run("compare", "--schemes", "he", "--depth", "2", "--width", "8", "--batch", "4",
                          "--jobs", "1", "-f", "json").stdout)["rows"]
