"""Turn result records into a terminal table, CSV or JSON. The only module that knows rich.

Rows are plain dicts produced by the domain. CSV is written by the csv module with "\\n"
line ends and full-precision numbers (repr of a float round-trips; non-finite values are
written inf, -inf, nan). JSON is strict: non-finite numbers become null, and the document
carries the run's parameters beside its rows.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

FORMATS = ("auto", "table", "csv", "json")
SPARK = "▁▂▃▄▅▆▇█"


def resolve_format(fmt: str, is_terminal: bool) -> str:
    """'auto' is a table on a terminal and CSV everywhere else."""
    from .errors import InitcliError, suggest

    key = fmt.strip().lower()
    if key not in FORMATS:
        raise InitcliError("format", f"unknown format '{fmt}'{suggest(key, list(FORMATS))}; choose from {', '.join(FORMATS)}")
    if key == "auto":
        return "table" if is_terminal else "csv"
    return key


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so csv and json see ints and floats."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        return value.item()
    return value


def csv_cell(value: Any) -> Any:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def write_csv(rows: Iterable[dict], columns: Sequence[str], stream: IO[str]) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])


def json_safe(value: Any) -> Any:
    """Recursively: non-finite floats to None, tuples to lists, numpy scalars to Python."""
    value = _plain(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(command: str, params: dict, rows: list[dict], stream: IO[str], **extra: Any) -> None:
    from . import __version__

    document = {"initcli_version": __version__, "command": command, "params": params, **extra, "rows": rows}
    json.dump(json_safe(document), stream, indent=2, allow_nan=False)
    stream.write("\n")


def format_number(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def sparkline(counts: Sequence[float]) -> str:
    """One character per bin, height proportional to the count."""
    top = max(counts) if len(counts) else 0
    if top <= 0:
        return " " * len(counts)
    return "".join(SPARK[min(len(SPARK) - 1, int(round(c / top * (len(SPARK) - 1))))] if c > 0 else " "
                   for c in counts)


def histogram_line(values, bins: int = 16) -> str:
    """A sparkline histogram of an array's values over [min, max]."""
    import numpy as np

    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return ""
    if flat.min() == flat.max():
        return "█".center(bins)
    counts, _ = np.histogram(flat, bins=bins)
    return sparkline(counts)


def log_bars(values: Sequence, width: int = 8) -> list[str]:
    """One horizontal bar per value, its length log10(value) within the column's range: read
    down the rows, the bars draw the profile across layers. Blank for 0, inf and nan."""
    logs = [math.log10(v) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None for v in values]
    known = [v for v in logs if v is not None]
    if not known:
        return [""] * len(values)
    low, high = min(known), max(known)
    span = high - low or 1.0
    eighths = "▏▎▍▌▋▊▉█"
    bars = []
    for v in logs:
        if v is None:
            bars.append("")
            continue
        units = 1 + round((v - low) / span * (width * 8 - 1))
        bars.append("█" * (units // 8) + (eighths[units % 8 - 1] if units % 8 else ""))
    return bars


def log_sparkline(values: Sequence, width: int = 16) -> str:
    """A sparkline of log10(values), resampled to at most `width` characters; · for values
    with no logarithm (0, inf, nan)."""
    if not values:
        return ""
    step = max(1, math.ceil(len(values) / width))
    picked = list(values)[::step]
    logs = [math.log10(v) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None for v in picked]
    known = [v for v in logs if v is not None]
    if not known:
        return "·" * len(picked)
    low, high = min(known), max(known)
    span = high - low or 1.0
    return "".join("·" if v is None else SPARK[round((v - low) / span * (len(SPARK) - 1))] for v in logs)


CellStyle = Callable[[str, Any], "str | None"]


def _nonfinite_style(column: str, value: Any) -> str | None:
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "bold red"
    return None


# Text columns may wrap inside their cell; number columns never do.
TEXT_COLUMNS = frozenset({"shape", "distribution", "name", "scheme", "activation", "verdict", "aliases", "formula",
                          "mode", "designed_for", "reference", "reason"})
_TEXT_MIN_WIDTH = 14
_PADDING = 2  # rich puts one space either side of every cell


def _header(column: str) -> str:
    return column.replace("_", "\n")


def fit_columns(rows: list[dict], columns: Sequence[str], width: int, *, priority: Sequence[str] | None = None,
                reserved: int = 0) -> list[str]:
    """The columns that fit in `width` characters without folding a number: the least
    important ones (last in `priority`) are dropped first; order stays as in `columns`."""
    def column_width(column: str) -> int:
        cells = [format_number(row.get(column)) for row in rows]
        natural = max([len(part) for part in _header(column).split("\n")] + [len(c) for c in cells])
        return min(natural, _TEXT_MIN_WIDTH) if column in TEXT_COLUMNS else natural

    widths = {c: column_width(c) + _PADDING for c in columns}
    order = list(priority or columns) + [c for c in columns if c not in (priority or columns)]
    kept = list(order)
    while len(kept) > 1 and sum(widths[c] for c in kept) + reserved > width:
        kept.pop()
    return [c for c in columns if c in kept]


def print_table(rows: list[dict], columns: Sequence[str], *, title: str | None = None,
                cell_style: CellStyle | None = None, extra_columns: dict[str, list[str]] | None = None,
                priority: Sequence[str] | None = None, console=None) -> list[str]:
    """A rich table on stdout. Numbers get 4 significant digits; inf/nan are red.

    Numbers are never folded: on a narrow terminal the least important columns (the end of
    `priority`) are left out, and their names returned so the caller can say so.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if console is None:
        console = Console()
    extra_columns = extra_columns or {}
    reserved = sum(max(len(name), *(len(v) for v in values)) + _PADDING for name, values in extra_columns.items())
    shown = fit_columns(rows, columns, console.width, priority=priority, reserved=reserved)
    # the title goes on its own line: as a rich title it would wrap to a narrow table's width
    table = Table(header_style="bold", pad_edge=False, box=None, show_edge=False)
    for column in shown:
        left = column in TEXT_COLUMNS
        table.add_column(_header(column), justify="left" if left else "right", no_wrap=not left,
                         overflow="fold")
    for name in extra_columns:
        table.add_column(name, justify="left", no_wrap=True)
    for index, row in enumerate(rows):
        cells = []
        for column in shown:
            value = row.get(column)
            style = _nonfinite_style(column, value) or (cell_style(column, value) if cell_style else None)
            cells.append(Text(format_number(value), style=style or ""))
        cells.extend(Text(values[index], style="cyan") for values in extra_columns.values())
        table.add_row(*cells)
    if title:
        console.print(Text(title, style="bold"), soft_wrap=True)
    console.print(table)
    return [c for c in columns if c not in shown]


def overflow_message(result) -> str:
    """One line saying where a propagate run overflowed."""
    parts = []
    if result.forward_overflow_layer is not None:
        parts.append(f"activations at layer {result.forward_overflow_layer}")
    if result.backward_overflow_layer is not None:
        parts.append(f"gradients at layer {result.backward_overflow_layer}")
    return (f"initcli: warning: {result.params['dtype']} overflowed ({' and '.join(parts)}); "
            "from there on the cells hold inf/nan.")


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)
