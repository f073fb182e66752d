"""Charts, in the terminal (text) and as PNG/SVG/PDF files (matplotlib, an optional extra).

Part of the rendering layer: it draws series handed to it and computes nothing about
networks. Terminal charts are rich Text lines that read without colour too: every series has
its own marker character, and the y axis is labelled in powers of ten. Values a chart cannot
place (0 or negatives on a log axis, inf, nan) are left out and counted, never an error; a
series with no drawable value says why in its legend entry.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import InitcliError
from .files import atomic_output

MARKERS = "●▲■◆✚✖★◉▼♦"
THEORY_MARKER = "·"
DENSITY_MARKER = "•"
COLOURS = ("cyan", "magenta", "yellow", "green", "red", "blue", "bright_cyan", "bright_magenta", "bright_yellow",
           "bright_green")
PLOT_FORMATS = (".png", ".svg", ".pdf")
DEFAULT_DPI = 150
MIN_DPI, MAX_DPI = 10, 1200
# A raster figure's pixels at most: 8 bytes each (RGBA buffer and the PNG encoder's copy),
# so a too-fine --dpi on a many-panel figure is refused instead of taking gigabytes.
MAX_PIXELS = 100_000_000
_PANEL_INCHES = (5.2, 3.8)  # width, height of one panel


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    dashed: bool = False  # theory: drawn with dots (terminal) or a dashed line (files)
    group: int = 0  # marker and colour: a theory line shares its measurement's group


def _number(value) -> float | None:
    """A Python float for ints, floats and numpy scalars; None for anything else."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        value = value.item()
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range
        return math.copysign(math.inf, value)


def _log10(value) -> float | None:
    number = _number(value)
    if number is None or not math.isfinite(number) or number <= 0:
        return None
    return math.log10(number)


def _drawable(value, log: bool) -> bool:
    number = _number(value)
    return number is not None and math.isfinite(number) and (number > 0 or not log)


def missing_reason(ys: Sequence, *, log: bool) -> str | None:
    """Why a series draws nothing at all, for its legend entry ('all 0: not drawn on a log
    axis', 'all nan: not drawn', …); None when at least one value can be drawn."""
    if any(_drawable(y, log) for y in ys):
        return None
    numbers = [_number(y) for y in ys]
    if not numbers:
        return "no values"
    if all(n == 0 for n in numbers):
        return "all 0: not drawn on a log axis"
    if all(n is None or math.isnan(n) for n in numbers):
        return "all nan: not drawn"
    if all(n is not None and math.isinf(n) for n in numbers):
        return "all inf: not drawn"
    return "no value > 0 and finite: not drawn on a log axis" if log else "no finite value: not drawn"


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
        reason = missing_reason(s.ys, log=True)
        legend.append(s.label + (f" ({reason})" if reason else "") + "   ")
    if any(s.dashed for s in series):
        legend.append(THEORY_MARKER + " theory")
    lines.append(legend)
    if skipped:
        lines.append(Text(" " * (label_width + 2) + f"({skipped} values of 0, inf or nan not shown)", style="dim"))
    return lines


def _power(exponent: int) -> str:
    return f"1e{exponent:+d}"


# -- histograms -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    counts: object  # numpy int array, one count per bin
    edges: object  # numpy float array, len(counts) + 1
    finite: int  # values counted
    not_finite: int  # inf/nan values left out


def finite_histogram(values, bins: int, bounds: tuple[float, float] | None = None) -> Histogram | None:
    """Counts of the finite values in `bins` equal bins over `bounds` (default: their range);
    None when no value is finite. Never raises on extreme values: a range wider than float64
    (±1e308) is binned on values scaled by their largest magnitude, and one repeated value
    gets a bin around it."""
    import numpy as np

    flat = np.asarray(values, dtype=np.float64).ravel()
    finite = flat[np.isfinite(flat)]
    if finite.size == 0:
        return None
    low, high = bounds if bounds is not None else (float(finite.min()), float(finite.max()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InitcliError("bounds", f"must be finite numbers, got ({low}, {high})")
    if high <= low:
        pad = max(0.5, abs(low) * 0.5)  # 0.5 around a small value, half its magnitude around a large one
        low, high = low - pad, high + pad
    scale = 1.0
    if not math.isfinite(high - low):
        scale = max(abs(low), abs(high))
    counts, edges = np.histogram(finite / scale, bins=bins, range=(low / scale, high / scale))
    return Histogram(counts, edges * scale, int(finite.size), int(flat.size - finite.size))


def _evaluate(density: Callable[[float], float], xs) -> list[float]:
    """density at each x as floats; nan where it fails or is not finite. No warning escapes:
    a density of a std of 1e-300 overflows, and that only means it is not drawn."""
    import numpy as np

    out = []
    with np.errstate(all="ignore"):
        for x in xs:
            try:
                y = float(density(float(x)))
            except (ArithmeticError, ValueError, TypeError):
                y = math.nan
            out.append(y if math.isfinite(y) else math.nan)
    return out


def histogram_chart(values, *, density: Callable[[float], float] | None, width: int = 80, height: int = 8,
                    title: str = "", bounds: tuple[float, float] | None = None) -> list:
    """A vertical histogram of `values` with the expected density drawn over it as a
    continuous curve of • (vertical runs join one column's level to the next, and the curve
    is drawn over the bars, where it is needed most). inf/nan values are left out and counted."""
    import numpy as np
    from rich.text import Text

    lines = [Text(title, style="bold")] if title else []
    bins = max(10, width - 12)
    hist = finite_histogram(values, bins, bounds)
    if hist is None:
        flat = np.asarray(values).ravel()
        lines.append(Text(f"(no finite values: {flat.size} inf or nan)" if flat.size else "(no values)"))
        return lines
    counts, edges = hist.counts, hist.edges
    bin_width = float(edges[1] - edges[0])
    expected = None  # the density as an expected count per bin, comparable with `counts`
    if density is not None:
        centres = edges[:-1] + (edges[1:] - edges[:-1]) / 2  # not (a + b) / 2: that overflows at 1e308
        with np.errstate(all="ignore"):
            expected = np.array(_evaluate(density, centres)) * (hist.finite * bin_width)
        expected[~np.isfinite(expected)] = np.nan
    known = expected[np.isfinite(expected)] if expected is not None else np.array([])
    top = float(max(counts.max(), known.max() if known.size else 0.0)) or 1.0
    curve: list[set[int]] = [set() for _ in range(bins)]  # the levels (1..height) the curve passes in each column
    if expected is not None:
        previous = None
        for i in range(bins):
            if not np.isfinite(expected[i]):
                previous = None
                continue
            level = min(height, round(expected[i] / top * height))
            if level >= 1:
                curve[i].add(level)
            if previous is not None and abs(level - previous) > 1:  # a steep stretch: join the levels
                step = 1 if level > previous else -1
                curve[i].update(lv for lv in range(previous + step, level, step) if lv >= 1)
            previous = level
    for level in range(height, 0, -1):
        threshold = top * (level - 0.5) / height
        line = Text("│" if level != height else "┐", style="dim")
        for i in range(bins):
            if level in curve[i]:
                line.append(DENSITY_MARKER, style="bold yellow")
            elif counts[i] >= threshold:
                line.append("█", style="cyan")
            else:
                line.append(" ")
        lines.append(line)
    lines.append(Text("└" + "─" * bins, style="dim"))
    left, right = f"{edges[0]:.3g}", f"{edges[-1]:.3g}"
    lines.append(Text(left + " " * max(1, bins + 1 - len(left) - len(right)) + right, style="dim"))
    if density is not None:
        lines.append(Text(f"█ drawn   {DENSITY_MARKER} the scheme's density", style="dim"))
    if hist.not_finite:
        lines.append(Text(f"({hist.not_finite} of {hist.finite + hist.not_finite} values are inf or nan: "
                          "not drawn)", style="dim"))
    return lines


# -- files ----------------------------------------------------------------------------------


def require_matplotlib():
    """matplotlib.pyplot on the Agg backend, or a one-line InitcliError naming the extra."""
    from .optional import require

    require("matplotlib", "save_plot", "writing a figure").use("Agg")
    return require("matplotlib.pyplot", "save_plot", "writing a figure")


_pyplot = require_matplotlib


def check_dpi(dpi) -> int:
    """A figure resolution: an integer from MIN_DPI to MAX_DPI dots per inch."""
    whole = isinstance(dpi, numbers.Integral) or (isinstance(dpi, float) and dpi.is_integer())
    if isinstance(dpi, bool) or not whole:
        raise InitcliError("dpi", f"must be a whole number of dots per inch, got {dpi!r}")
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise InitcliError("dpi", f"must be from {MIN_DPI} to {MAX_DPI} dots per inch, got {dpi:g}")
    return int(dpi)


def check_plot_path(path: str, dpi=DEFAULT_DPI) -> str:
    """The suffix of a figure path (.png, .svg or .pdf), after checking it and `dpi`."""
    suffix = "." + str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else ""
    if suffix not in PLOT_FORMATS:
        raise InitcliError("save_plot", f"must end in .png, .svg or .pdf, got '{path}'")
    check_dpi(dpi)
    return suffix


def _grid(panels: int) -> tuple[int, int]:
    columns = max(1, min(panels, 3))
    return math.ceil(max(panels, 1) / columns), columns


def _check_pixels(panels: int, dpi: int, suffix: str) -> None:
    if suffix != ".png":
        return
    rows, columns = _grid(panels)
    pixels = (_PANEL_INCHES[0] * columns * dpi) * (_PANEL_INCHES[1] * rows * dpi)
    if pixels > MAX_PIXELS:
        raise InitcliError("dpi", f"{dpi} dots per inch make this {panels}-panel figure {pixels / 1e6:.0f} million "
                                  f"pixels, over {MAX_PIXELS // 1_000_000} million: lower it, or save .svg or .pdf")


def _axis_unit(edges) -> int:
    """The power of ten to draw x in: 0, unless the values are so large (1e39 and up) or
    small that matplotlib's transforms would overflow; then x is shown as a multiple of
    1e±k and the axis label says so."""
    magnitude = max(abs(float(edges[0])), abs(float(edges[-1])))
    exponent = math.floor(math.log10(magnitude)) if magnitude > 0 else 0
    return 0 if abs(exponent) < 30 else max(exponent, -300)


def _draw_histogram(ax, panel: dict) -> None:
    import numpy as np

    hist = finite_histogram(panel["histogram"], 60)
    label = panel.get("label", "drawn")
    if hist is None:
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center")
        return
    if hist.not_finite:
        label += f" ({hist.not_finite} inf/nan: not drawn)"
    exponent = _axis_unit(hist.edges)
    unit = 10.0 ** exponent
    edges = hist.edges / unit
    if exponent:
        ax.set_xlabel(f"{panel.get('xlabel', '')} (×1e{exponent:+d})".strip())
    with np.errstate(all="ignore"):
        heights = hist.counts / (hist.finite * (edges[1:] - edges[:-1]))
    as_density = bool(np.isfinite(heights).all())
    if not as_density:  # cannot happen once x is rescaled, but never draw inf
        heights = hist.counts.astype(np.float64)
        ax.set_ylabel("count")
    ax.stairs(heights, edges, fill=True, alpha=0.6, label=label)
    density = panel.get("density")
    if density is None or not as_density:
        return
    if callable(density):  # evaluated over the histogram's own, finite, range
        xs = np.linspace(edges[0], edges[-1], 300)
        ys = _evaluate(density, xs * unit)
    else:
        xs, ys = density
        xs = [_number(x) for x in xs]
        xs = [math.nan if x is None else x / unit for x in xs]
    with np.errstate(all="ignore"):  # a density per unit of x/1e±k: times 1e±k, inf dropped below
        ys = [math.nan if y is None else y * unit for y in (_number(y) for y in ys)]
    pairs = [(float(x), y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    if pairs:
        ax.plot([x for x, _ in pairs], [y for _, y in pairs], color="black", linewidth=1.2,
                label="scheme's density")


# matplotlib computes 5 % margins and log transforms in float64: values beyond 1e±300 would
# overflow there, so they are left out of a figure like inf (the table has them exactly).
_EXTREME = 1e300


def _plottable(value, log: bool) -> bool:
    if not _drawable(value, log):
        return False
    magnitude = abs(float(_number(value)))
    return magnitude <= _EXTREME and (not log or magnitude >= 1 / _EXTREME)


def _draw_series(ax, panel: dict) -> None:
    log = bool(panel.get("log"))
    drawn = [float(_number(y)) for s in panel["series"] for y in s.ys if _plottable(y, log)]
    for s in panel["series"]:
        ys = [float(_number(y)) if _plottable(y, log) else math.nan for y in s.ys]
        known = [not math.isnan(y) for y in ys]
        isolated = any(k and (i == 0 or not known[i - 1]) and (i == len(ys) - 1 or not known[i + 1])
                       for i, k in enumerate(known))
        dots = not s.dashed and (len(s.xs) <= 60 or isolated)  # markers where they do not blur, and lone points
        reason = missing_reason(s.ys, log=log)
        label = s.label + (f" ({reason})" if reason else "")
        ax.plot(list(s.xs), ys, linestyle="--" if s.dashed else "-", marker="." if dots else None,
                color=f"C{s.group % 10}", label=label, linewidth=1.0 if s.dashed else 1.4)
    if all(float(x).is_integer() for s in panel["series"] for x in s.xs):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers, blocks and epochs are whole
    if not drawn:
        return
    low, high = min(drawn), max(drawn)
    if log:
        ax.set_yscale("log")
        if math.log10(high / low) > 100:
            # matplotlib's margins and tick locator step past 1e±308 on such a range: fix both
            from matplotlib.ticker import FixedLocator, NullLocator

            first, last = math.ceil(math.log10(low)), math.floor(math.log10(high))
            step = max(1, math.ceil((last - first) / 6))
            ax.set_ylim(low, high)
            ax.yaxis.set_major_locator(FixedLocator([10.0 ** k for k in range(first, last + 1, step)]))
            ax.yaxis.set_minor_locator(NullLocator())
    elif high - low > 1e250:
        ax.set_ylim(low, high)  # no margin: 5 % of such a span overflows


def save_figure(path: str, panels: Sequence[dict], *, title: str, force: bool = False,
                dpi: int = DEFAULT_DPI) -> None:
    """Write a figure of one or more panels to PNG, SVG or PDF, atomically (a reader never
    sees half a file; an existing file needs `force`). `dpi` sets a PNG's resolution.

    Each panel: {"series": [Series], "xlabel", "ylabel", "log": bool, "title"} for line
    charts, or {"histogram": values, "density": callable or (xs, ys) or None, "xlabel",
    "ylabel", "label", "title"}; a callable density is evaluated over the histogram's range.
    The legend sits outside the axes, right of the figure when every panel lists the same
    entries; a series with nothing to draw (all 0 on a log axis, all nan) says so in it.
    """
    plt, suffix, dpi = figure_target(path, force=force, dpi=dpi, panels=len(panels))
    import numpy as np

    rows, columns = _grid(len(panels))
    fig, axes = plt.subplots(rows, columns, figsize=(_PANEL_INCHES[0] * columns, _PANEL_INCHES[1] * rows),
                             squeeze=False)
    try:
        # matplotlib's float64 arithmetic (margins, log ticks) on extreme but finite values
        # overflows internally and copes; its numpy warnings must not reach the user
        with np.errstate(all="ignore"):
            _draw_panels(fig, axes, panels, title)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "tight layout not applied": the figure is still right
                fig.tight_layout()  # counts each axes' own legend, so a legend beside a panel keeps off the next
            write_figure(fig, path, suffix=suffix, dpi=dpi, force=force)
    finally:
        plt.close(fig)


def figure_target(path: str, *, force: bool, dpi=DEFAULT_DPI, panels: int = 1):
    """Everything about a --save-plot that can be refused before drawing: its suffix, --dpi,
    the pixels it would take, an existing file, matplotlib. Returns (pyplot, suffix, dpi)."""
    import os

    suffix = check_plot_path(path, dpi)
    dpi = check_dpi(dpi)
    _check_pixels(panels, dpi, suffix)
    if os.path.lexists(path) and not force:  # before drawing; atomic_output checks again when writing
        raise InitcliError("save_plot", f"'{path}' already exists; pass --force to overwrite it")
    return require_matplotlib(), suffix, dpi


def write_figure(fig, path: str, *, suffix: str, dpi: int, force: bool) -> None:
    """Save a drawn figure atomically: a reader never sees half of it."""
    with atomic_output(path, "save_plot", force=force, suffix=suffix) as handle:
        fig.savefig(handle, format=suffix[1:], dpi=dpi, bbox_inches="tight")


def _draw_panels(fig, axes, panels: Sequence[dict], title: str) -> None:
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    entries = []
    for ax, panel in zip(axes.ravel(), panels):
        ax.set_ylabel(panel.get("ylabel", ""))
        if "histogram" in panel:
            _draw_histogram(ax, panel)
        else:
            _draw_series(ax, panel)
        if not ax.get_xlabel():
            ax.set_xlabel(panel.get("xlabel", ""))
        if panel.get("title"):
            ax.set_title(panel["title"], fontsize=10)
        ax.grid(True, alpha=0.3)
        entries.append(ax.get_legend_handles_labels())
    shared = bool(entries) and all(labels == entries[0][1] for _, labels in entries)
    if shared and entries[0][1]:
        # one legend right of the whole figure, off the data; savefig's bbox_inches="tight" makes room
        fig.legend(*entries[0], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    elif not shared:
        for ax, (handles, labels) in zip(axes.ravel(), entries):
            if labels:  # beside its own axes (tight_layout makes room for it)
                ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                          fontsize=8, frameon=False)
    # a title wider than the figure would run into the legend beside it: wrap it, about 11
    # characters of a 10-point font to the inch
    import textwrap

    fig.suptitle(textwrap.fill(title, width=max(40, int(fig.get_figwidth() * 11))), fontsize=10)


# -- series from result rows ----------------------------------------------------------------


def propagate_series(rows: Sequence[dict]) -> list[Series]:
    """A propagate run's rows by layer (or by block, for rows that are a block's sublayers)."""
    if rows and "sublayer" in rows[0]:
        return _sublayer_series(rows)
    layers = [row["layer"] for row in rows]
    series = [Series("act_var", layers, [row["act_var"] for row in rows], group=0),
              Series("preact_var", layers, [row["preact_var"] for row in rows], group=1),
              Series("grad_var", layers, [row["grad_var"] for row in rows], group=2)]
    if rows and rows[0].get("theory_preact_var") is not None:
        series += [Series("theory preact_var", layers, [row["theory_preact_var"] for row in rows], True, 1),
                   Series("theory grad_var", layers, [row["theory_grad_var"] for row in rows], True, 2)]
    return series


def _sublayer_series(rows: Sequence[dict]) -> list[Series]:
    """A transformer's rows by block: the stream's variance and gradient, the attention logits'
    and the MLP's hidden pre-activation variance, with theory's where it has one."""
    series = []
    for group, (label, sublayer, column) in enumerate((
            ("stream act_var", "stream", "act_var"), ("stream grad_var", "stream", "grad_var"),
            ("attn logit var", "attn", "preact_var"), ("mlp preact_var", "mlp", "preact_var"))):
        chosen = [row for row in rows if row["sublayer"] == sublayer]
        if not chosen:
            continue
        blocks = [row["layer"] for row in chosen]
        series.append(Series(label, blocks, [row[column] for row in chosen], group=group))
        if column == "preact_var" and chosen[0].get("theory_preact_var") is not None:
            series.append(Series(f"theory {label}", blocks, [row["theory_preact_var"] for row in chosen], True,
                                 group))
    return series


def per_run_series(runs, column: str) -> list[Series]:
    """One series per propagate run (compare's pairs), of one per-layer column."""
    series = []
    for group, run in enumerate(runs):
        label = f"{run.params['scheme']}+{run.params['activation']}"
        rows = run.per_layer()
        series.append(Series(label, [layer.layer for layer in rows], [getattr(layer, column) for layer in rows],
                             group=group))
    return series


def curve_series(curve_rows: Sequence[dict], column: str) -> list[Series]:
    schemes = list(dict.fromkeys(row["scheme"] for row in curve_rows))
    return [Series(scheme, [r["epoch"] for r in curve_rows if r["scheme"] == scheme],
                   [r[column] for r in curve_rows if r["scheme"] == scheme], group=group)
            for group, scheme in enumerate(schemes)]
