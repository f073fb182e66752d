"""Terminal charts and saved figures.

Figures are checked on tiny panels at a low --dpi (a PNG at 20 dpi checks the same code paths
as one at 150, in a fraction of the time); the CLI tests write one SVG per command.
"""

import io
import json
import math
import struct
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from initcli.charts import (
    MAX_DPI,
    MIN_DPI,
    Series,
    check_dpi,
    check_plot_path,
    finite_histogram,
    histogram_chart,
    log_chart,
    missing_reason,
    require_matplotlib,
    save_figure,
)
from initcli.cli import app
from initcli.errors import InitcliError

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def render(lines, width):
    console = Console(width=width, file=io.StringIO(), no_color=True, force_terminal=False)
    for line in lines:
        console.print(line, soft_wrap=True)
    return console.file.getvalue()


# -- terminal charts ----------------------------------------------------------------------------


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
    text = render(log_chart([Series("v", [1, 2, 3], [1.0, 0.0, float("nan")]),
                             Series("zeros", [1, 2, 3], [0.0, 0.0, 0.0], group=1)], width=100), 100)
    assert "5 values of 0, inf or nan not shown" in text
    assert "zeros (all 0: not drawn on a log axis)" in text  # listed, and why it is invisible
    assert "nothing to plot" in render(log_chart([Series("v", [1], [0.0])], width=60), 60)


def test_missing_reason():
    assert missing_reason([0.0, 0, np.float32(0)], log=True) == "all 0: not drawn on a log axis"
    assert missing_reason([0.0, 0.0], log=False) is None  # 0 is a point on a linear axis
    assert missing_reason([None, float("nan")], log=False) == "all nan: not drawn"
    assert missing_reason([float("inf")] * 2, log=True) == "all inf: not drawn"
    assert missing_reason([-1.0, 0.0, float("nan")], log=True).endswith("not drawn on a log axis")
    assert missing_reason([0.0, 1e-30], log=True) is None


def chart_grid(lines, height):
    """The rows of a histogram chart (top level first), without the axis character."""
    return [str(line)[1:] for line in lines[:height]]


def test_histogram_chart_draws_the_density_as_a_continuous_curve():
    values = np.random.default_rng(0).standard_normal(10_000)
    density = lambda w: np.exp(-w * w / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    height = 8
    lines = histogram_chart(values, density=density, width=70, height=height)
    text = render(lines, 70)
    assert "█" in text and "•" in text
    assert all(len(line) <= 70 for line in text.splitlines())
    grid = chart_grid(lines, height)
    levels = [{height - r for r in range(height) if grid[r][i] == "•"} for i in range(len(grid[0]))]
    drawn = [i for i, lv in enumerate(levels) if lv]
    assert len(drawn) > len(levels) // 2  # drawn over the bars too, not only where they leave room
    for i in range(drawn[0], drawn[-1] + 1):  # no gap, and each column joins the next
        assert levels[i], f"gap in the curve at column {i}"
        if i > drawn[0]:
            assert min(levels[i]) <= max(levels[i - 1]) + 1 and min(levels[i - 1]) <= max(levels[i]) + 1
    peak = max(range(len(levels)), key=lambda i: max(levels[i], default=0))
    assert max(levels[peak]) == height  # the density's maximum is the chart's top (the expected counts)


def test_histogram_chart_counts_values_it_cannot_draw():
    values = np.concatenate([np.random.default_rng(1).standard_normal(1000), [np.inf, -np.inf, np.nan]])
    text = render(histogram_chart(values, density=None, width=60), 60)
    assert "3 of 1003 values are inf or nan" in text
    text = render(histogram_chart(np.array([np.inf, np.nan]), density=None, width=60), 60)
    assert "no finite values" in text


@pytest.mark.parametrize("values", [np.array([1e308, -1e308, 0.0]), np.array([1e39, -2e39, np.inf]),
                                    np.array([5e-324, 1e-310]), np.full(10, 3e307)])
def test_histograms_of_extreme_values_never_raise(values):
    hist = finite_histogram(values, 16)
    finite = values[np.isfinite(values)]
    assert hist.counts.sum() == finite.size and np.isfinite(hist.edges).all()
    assert hist.edges[0] <= finite.min() and hist.edges[-1] >= finite.max()
    density = lambda w: 1e300 / (1e-300 + abs(w))  # noqa: E731  (overflows: not drawn, no warning)
    text = render(histogram_chart(values, density=density, width=60), 60)
    assert "█" in text


# -- figure options ---------------------------------------------------------------------------


def test_plot_path_and_dpi_checks():
    assert check_plot_path("a.PDF") == ".pdf" and check_plot_path("a.svg") == ".svg"
    with pytest.raises(InitcliError, match=r"\.pdf") as info:
        check_plot_path("a.jpg")
    assert info.value.param == "save_plot"
    assert check_dpi(MIN_DPI) == MIN_DPI and check_dpi(300.0) == 300 and check_dpi(np.int64(72)) == 72
    for bad in (0, -5, MIN_DPI - 1, MAX_DPI + 1, 1e9, 72.5, float("nan"), float("inf"), True, "72", None):
        with pytest.raises(InitcliError) as info:
            check_dpi(bad)
        assert info.value.param == "dpi"


def test_too_many_pixels_are_refused_before_drawing(tmp_path):
    series = [Series("v", [1, 2], [1.0, 2.0])]
    with pytest.raises(InitcliError) as info:
        save_figure(str(tmp_path / "x.png"), [{"series": series}] * 9, title="t", dpi=MAX_DPI)
    assert info.value.param == "dpi"
    assert list(tmp_path.iterdir()) == []


# -- saved figures ------------------------------------------------------------------------------


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


LAYERS = [1, 2, 3, 4]
LINE_PANELS = [{"series": [Series("zeros", LAYERS, [0.0] * 4, group=0),
                           Series("he", LAYERS, [1.0, 1.1, 0.9, 1.0], group=1),
                           Series("theory", LAYERS, [1.0] * 4, dashed=True, group=1)],
                "xlabel": "layer", "ylabel": column, "log": True, "title": column}
               for column in ("act_var", "grad_var")]


def test_figure_formats_dpi_and_atomic_writes(tmp_path):
    pytest.importorskip("matplotlib")
    svg, pdf, png, png2 = (tmp_path / name for name in ("f.svg", "f.pdf", "f.png", "f2.png"))
    save_figure(str(svg), LINE_PANELS, title="title text")
    text = "".join(ET.parse(svg).getroot().itertext()) + svg.read_text()  # a well-formed SVG
    for label in ("title text", "act_var", "grad_var", "layer", "he", "zeros (all 0: not drawn on a log axis)"):
        assert label in text
    save_figure(str(pdf), LINE_PANELS[:1], title="t")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    save_figure(str(png), LINE_PANELS[:1], title="t", dpi=20)
    save_figure(str(png2), LINE_PANELS[:1], title="t", dpi=40)
    (w1, h1), (w2, h2) = _png_size(png), _png_size(png2)
    # the size scales with dpi; the tight bounding box comes from text extents rounded to whole
    # pixels at each dpi (1/20 inch here), so the ratio is 2 within a few pixels in ~150
    assert 1.9 <= w2 / w1 <= 2.1 and 1.9 <= h2 / h1 <= 2.1
    assert w1 >= 5.2 * 20 * 0.8 and h1 >= 3.8 * 20 * 0.8  # about one 5.2 × 3.8 inch panel
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png", "f.svg", "f2.png"]  # no temporary files
    with pytest.raises(InitcliError, match="--force"):
        save_figure(str(png), LINE_PANELS, title="t", dpi=20)
    save_figure(str(png), LINE_PANELS[:1], title="t", dpi=MIN_DPI, force=True)
    assert _png_size(png)[0] < w1


def _legend_clear_of_data(panels):
    plt = require_matplotlib()
    from initcli.charts import _draw_panels

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    try:
        _draw_panels(fig, axes, panels, "t")
        fig.tight_layout()
        fig.canvas.draw()
        legends = list(fig.legends) + [ax.get_legend() for ax in axes.ravel() if ax.get_legend()]
        assert legends
        for legend in legends:
            box = legend.get_window_extent()
            assert not any(box.overlaps(ax.get_window_extent()) for ax in axes.ravel())
    finally:
        plt.close(fig)


def test_legends_sit_outside_the_axes():
    pytest.importorskip("matplotlib")
    _legend_clear_of_data(LINE_PANELS)  # the same entries: one legend for the figure
    other = {**LINE_PANELS[1], "series": [Series("other", LAYERS, [1.0, 2.0, 3.0, 4.0])]}
    _legend_clear_of_data([LINE_PANELS[0], other])  # different entries: one beside each panel


def test_figures_of_extreme_values(tmp_path):
    pytest.importorskip("matplotlib")
    # sample --gain 1e39: float32 weights are inf; a float64 run reaches 1e39 and beyond
    weights = np.concatenate([np.random.default_rng(0).standard_normal(200) * 1e39, [np.inf, np.nan]])
    normal = lambda w: math.exp(-(w / 1e39) ** 2 / 2) / (math.sqrt(2 * math.pi) * 1e39)  # noqa: E731
    panels = [{"histogram": weights, "density": normal, "xlabel": "weight", "ylabel": "density"},
              {"histogram": np.array([np.inf, np.nan]), "density": None},
              {"histogram": np.array([1e308, -1e308, 0.0]), "density": (np.array([0.0, np.inf]), [1.0, np.nan])},
              {"series": [Series("v", LAYERS, [1e308, 1e-308, 1e300, 5.0])], "log": True},
              {"series": [Series("v", LAYERS, [1e308, -1e308, 1e300, 5.0])], "log": False},
              {"series": [Series("v", LAYERS, [1e-300, 1.0, 1e300, np.inf])], "log": True}]
    path = tmp_path / "x.svg"
    save_figure(str(path), panels, title="t")
    text = path.read_text()
    assert "2 inf/nan: not drawn" in text and "no finite values" in text and "1e+39" in text


def test_save_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(InitcliError, match=r"pip install 'initcli\[plot\]'"):
        require_matplotlib()
    with pytest.raises(InitcliError):
        save_figure(str(tmp_path / "x.png"), LINE_PANELS, title="t")
    assert list(tmp_path.iterdir()) == []
    result = run("propagate", "--depth", "3", "--width", "16", "--batch", "8", "--save-plot",
                 str(tmp_path / "x.png"))
    assert result.exit_code == 2
    assert "pip install 'initcli[plot]'" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


# -- through the CLI ----------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(app, list(args), env=ENV)


COMMANDS = {
    "propagate": ["propagate", "--depth", "4", "--width", "16", "--batch", "16"],
    "compare": ["compare", "--schemes", "he,zeros", "--depth", "3", "--width", "16", "--batch", "16", "--jobs", "1"],
    "sample": ["sample", "--sizes", "20,10,5"],
    "train": ["train", "--schemes", "he,zeros", "--task", "xor", "--epochs", "3", "--samples", "64", "--jobs", "1"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_plot_never_enters_piped_output(name):
    result = run(*COMMANDS[name], "--plot", "-f", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split(",")[0] in ("layer", "scheme")
    assert "┤" not in result.stdout and "█" not in result.stdout
    assert "┤" in result.stderr or "█" in result.stderr  # the chart went to stderr


@pytest.mark.parametrize("name,labels", [
    ("propagate", ["layer", "variance", "grad_var"]),
    ("compare", ["act_var", "grad_var", "he-normal+relu", "zeros+relu (all 0: not drawn on a log axis)"]),
    ("sample", ["weight", "density", "layer 2"]),
    ("train", ["epoch", "loss", "accuracy"]),
])
def test_saved_figures(tmp_path, name, labels):
    pytest.importorskip("matplotlib")
    svg = tmp_path / "figure.svg"
    result = run(*COMMANDS[name], "--save-plot", str(svg), "-f", "csv")
    assert result.exit_code == 0, result.output
    text = "".join(ET.parse(svg).getroot().itertext()) + svg.read_text()
    for label in labels:
        assert label in text
    assert [p.name for p in tmp_path.iterdir()] == ["figure.svg"]  # no temporary files
    again = run(*COMMANDS[name], "--save-plot", str(svg), "-f", "csv")
    assert again.exit_code == 2 and "--force" in again.stderr


def test_save_plot_rejects_other_formats(tmp_path):
    result = run("propagate", "--depth", "3", "--save-plot", str(tmp_path / "x.jpg"))
    assert result.exit_code == 2 and ".pdf" in result.stderr


def test_table_has_profile_bars():
    result = run("propagate", "--depth", "4", "--width", "32", "--batch", "16", "-f", "table")
    assert "act_var" in result.stdout and "decades" in result.stdout and "█" in result.stdout
    result = run("compare", "--schemes", "he", "--depth", "4", "--width", "32", "--batch", "16", "--jobs", "1",
                 "-f", "table")
    assert "grad_var by layer" in result.stdout
    assert json.loads(run("compare", "--schemes", "he", "--depth", "2", "--width", "8", "--batch", "4",
                          "--jobs", "1", "-f", "json").stdout)["rows"]
