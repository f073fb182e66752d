"""Charts, in the terminal (text) and as PNG/SVG files (matplotlib, an optional extra).

Part of the rendering layer: it draws series handed to it and computes nothing about
networks. Terminal charts are rich Text lines that read without colour too: every series has
its own marker character, and the y axis is labelled in powers of ten.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import InitcliError
from .files import atomic_output

MARKERS = "●▲■◆✚✖★◉▼♦"
THEORY_MARKER = "·"
COLOURS = ("cyan", "magenta", "yellow", "green", "red", "blue", "bright_cyan", "bright_magenta", "bright_yellow",
           "bright_green")
PLOT_FORMATS = (".png", ".svg")


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    dashed: bool = False  # theory: drawn with dots (terminal) or a dashed line (files)
    group: int = 0  # marker and colour: a theory line shares its measurement's group


def _log10(value) -> float | None:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return math.log10(value)


def log_chart(series: Sequence[Series], *, width: int = 80, height: int = 14, title: str = "",
              x_label: str = "layer") -> list:
    """A log-scale line chart as rich Text lines, `width` characters wide at most.

    Values that are 0, negative or not finite have no place on a log axis: they are left out
    and a note says how many. Several layers sharing a column keep the last one drawn.
    """
    from rich.text import Text

    points = [(s, [(x, _log10(y)) for x, y in zip(s.xs, s.ys)]) for s in series]
    logs = [v for _, pts in points for _, v in pts if v is not None]
    xs = [x for s in series for x in s.xs]
    skipped = sum(1 for _, pts in points for _, v in pts if v is None)
    lines = [Text(title, style="bold")] if title else []
    if not logs or not xs:
        lines.append(Text("(nothing to plot: every value is 0, negative or not finite)"))
        return lines
    low, high = math.floor(min(logs)), math.ceil(max(logs))
    if high == low:
        high = low + 1
    label_width = max(len(_power(p)) for p in (low, high)) + 1
    plot_width = max(10, width - label_width - 2 - len(x_label) - 2)  # room for "  layer" after the ticks
    x_min, x_max = min(xs), max(xs)
    grid = [[(" ", "") for _ in range(plot_width)] for _ in range(height)]

    def column(x):
        return 0 if x_max == x_min else round((x - x_min) / (x_max - x_min) * (plot_width - 1))

    def row(v):
        return height - 1 - round((v - low) / (high - low) * (height - 1))

    solid = [s for s in series if not s.dashed]
    for s, pts in sorted(points, key=lambda item: not item[0].dashed):  # theory first, measurements on top
        marker = THEORY_MARKER if s.dashed else MARKERS[s.group % len(MARKERS)]
        style = COLOURS[s.group % len(COLOURS)]
        for x, v in pts:
            if v is not None:
                grid[row(v)][column(x)] = (marker, style)
    tick_rows = {row(p): p for p in range(low, high + 1)}
    if len(tick_rows) > height // 2:  # many decades: label every other one
        tick_rows = {r: p for r, p in tick_rows.items() if (p - low) % 2 == 0}
    for r in range(height):
        line = Text(_power(tick_rows[r]).rjust(label_width) + " ┤" if r in tick_rows else " " * label_width + " │",
                    style="dim")
        for char, style in grid[r]:
            line.append(char, style=style)
        lines.append(line)
    axis = " " * label_width + " └" + "─" * plot_width
    lines.append(Text(axis, style="dim"))
    ticks = [x_min, x_max] if x_min != x_max else [x_min]
    if x_max - x_min >= 4:
        ticks.insert(1, round((x_min + x_max) / 2))
    label_line = [" "] * (plot_width + label_width + 2)
    for tick in ticks:
        text = str(int(tick)) if float(tick).is_integer() else f"{tick:g}"
        start = min(label_width + 2 + column(tick), len(label_line) - len(text))
        label_line[start:start + len(text)] = list(text)
    lines.append(Text("".join(label_line) + f"  {x_label}", style="dim"))
    legend = Text(" " * (label_width + 2))
    for s in solid:
        legend.append(MARKERS[s.group % len(MARKERS)] + " ", style=COLOURS[s.group % len(COLOURS)])
        legend.append(s.label + "   ")
    if any(s.dashed for s in series):
        legend.append(THEORY_MARKER + " theory")
    lines.append(legend)
    if skipped:
        lines.append(Text(" " * (label_width + 2) + f"({skipped} values of 0, inf or nan not shown)", style="dim"))
    return lines


def _power(exponent: int) -> str:
    return f"1e{exponent:+d}"


def histogram_chart(values, *, density: Callable[[float], float] | None, width: int = 80, height: int = 8,
                    title: str = "", bounds: tuple[float, float] | None = None) -> list:
    """A vertical histogram of `values` with the expected density drawn over it (•)."""
    import numpy as np
    from rich.text import Text

    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    lines = [Text(title, style="bold")] if title else []
    if flat.size == 0:
        lines.append(Text("(no finite values)"))
        return lines
    low, high = bounds or (float(flat.min()), float(flat.max()))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    bins = max(10, width - 12)
    counts, edges = np.histogram(flat, bins=bins, range=(low, high))
    bin_width = edges[1] - edges[0]
    observed = counts / (flat.size * bin_width)  # as a density, comparable with the formula's
    expected = None
    if density is not None:
        centres = (edges[:-1] + edges[1:]) / 2
        expected = np.array([density(c) for c in centres])
    top = max(observed.max(), expected.max() if expected is not None and np.isfinite(expected).all() else 0)
    top = top or 1.0
    for level in range(height, 0, -1):
        threshold = top * (level - 0.5) / height
        line = Text("│" if level != height else "┐", style="dim")
        for i in range(bins):
            if observed[i] >= threshold:
                line.append("█", style="cyan")
            elif expected is not None and abs(expected[i] - top * level / height) <= top / (2 * height):
                line.append("•", style="bold yellow")  # the density, where no bar hides it
            else:
                line.append(" ")
        lines.append(line)
    lines.append(Text("└" + "─" * bins, style="dim"))
    left, right = f"{low:.3g}", f"{high:.3g}"
    lines.append(Text(left + " " * max(1, bins + 1 - len(left) - len(right)) + right, style="dim"))
    if density is not None:
        lines.append(Text("█ drawn   • the scheme's density", style="dim"))
    return lines


# -- files ----------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InitcliError("save_plot", "needs matplotlib, which is not installed: pip install 'initcli[plot]'") from None
    return plt


def check_plot_path(path: str) -> str:
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in PLOT_FORMATS:
        raise InitcliError("save_plot", f"must end in .png or .svg, got '{path}'")
    return suffix


def save_figure(path: str, panels: Sequence[dict], *, title: str, force: bool = False) -> None:
    """Write a figure of one or more panels to PNG or SVG, atomically.

    Each panel: {"series": [Series], "xlabel", "ylabel", "log": bool} for line charts, or
    {"histogram": values, "density": (xs, ys) or None, "xlabel", "ylabel", "label"}.
    """
    suffix = check_plot_path(path)
    plt = _pyplot()
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.ravel(), panels):
        if "histogram" in panel:
            ax.hist(panel["histogram"], bins=60, density=True, alpha=0.6, label=panel.get("label", "drawn"))
            if panel.get("density") is not None:
                xs, ys = panel["density"]
                ax.plot(xs, ys, color="black", linewidth=1.2, label="scheme's density")
        else:
            for s in panel["series"]:
                ys = [y if y is not None and isinstance(y, (int, float)) and math.isfinite(y) and
                      (y > 0 or not panel.get("log")) else float("nan") for y in s.ys]
                dots = not s.dashed and len(s.xs) <= 60  # markers only where they do not blur
                ax.plot(list(s.xs), ys, linestyle="--" if s.dashed else "-", marker="." if dots else None,
                        color=f"C{s.group % 10}", label=s.label, linewidth=1.0 if s.dashed else 1.4)
            if panel.get("log"):
                ax.set_yscale("log")
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        if panel.get("title"):
            ax.set_title(panel["title"], fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_output(path, "save_plot", force=force, suffix=suffix) as handle:
            fig.savefig(handle, format=suffix[1:], dpi=100)
    finally:
        plt.close(fig)


def check_save_plot(path: str, force: bool) -> None:
    """Refuse a bad --save-plot before any work is done: its suffix, matplotlib, an existing file."""
    import os

    check_plot_path(path)
    _pyplot()
    if os.path.exists(path) and not force:
        raise InitcliError("save_plot", f"'{path}' already exists; pass --force to overwrite it")


# -- series from result rows ----------------------------------------------------------------


def propagate_series(rows: Sequence[dict]) -> list[Series]:
    layers = [row["layer"] for row in rows]
    series = [Series("act_var", layers, [row["act_var"] for row in rows], group=0),
              Series("preact_var", layers, [row["preact_var"] for row in rows], group=1),
              Series("grad_var", layers, [row["grad_var"] for row in rows], group=2)]
    if rows and rows[0].get("theory_preact_var") is not None:
        series += [Series("theory preact_var", layers, [row["theory_preact_var"] for row in rows], True, 1),
                   Series("theory grad_var", layers, [row["theory_grad_var"] for row in rows], True, 2)]
    return series


def per_run_series(runs, column: str) -> list[Series]:
    """One series per propagate run (compare's pairs), of one per-layer column."""
    series = []
    for group, run in enumerate(runs):
        label = f"{run.params['scheme']}+{run.params['activation']}"
        series.append(Series(label, [layer.layer for layer in run.layers],
                             [getattr(layer, column) for layer in run.layers], group=group))
    return series


def curve_series(curve_rows: Sequence[dict], column: str) -> list[Series]:
    schemes = list(dict.fromkeys(row["scheme"] for row in curve_rows))
    return [Series(scheme, [r["epoch"] for r in curve_rows if r["scheme"] == scheme],
                   [r[column] for r in curve_rows if r["scheme"] == scheme], group=group)
            for group, scheme in enumerate(schemes)]
