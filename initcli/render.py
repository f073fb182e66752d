"""Turn result records into a terminal table, CSV or JSON. The only module that knows rich.

Rows are plain dicts produced by the domain. CSV is written by the csv module with "\\n"
line ends and full-precision numbers (repr of a float round-trips; non-finite values are
written inf, -inf, nan; booleans true/false as in the table and JSON; None is an empty
cell). JSON is strict: non-finite numbers become null, and the document carries the run's
parameters beside its rows. In a table None is written "-" (or a per-column word such as
"never"), so a blank cell is never mistaken for a missing column.

Profile columns (bars and sparklines) are drawn on a log10 scale at least `MIN_DECADES`
decades tall, so that a flat profile looks flat; `log_scale_header` names the scale used.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from .text import printable

FORMATS = ("auto", "table", "csv", "json")
SPARK = "▁▂▃▄▅▆▇█"
_EIGHTHS = "▏▎▍▌▋▊▉█"  # 1/8 … 8/8 of a character cell
MISSING = "·"  # a sparkline point with no logarithm (0, inf, nan)
MIN_DECADES = 2.0  # the smallest span a bar or sparkline scale covers (see log_scale)
MIN_TABLE_WIDTH = 40  # a terminal narrower than this still gets a table this wide (it wraps)
MIN_NOTE_WIDTH = 20  # diagnostics wrap at the terminal's width, but not below this
PIPE_TABLE_WIDTH = 400  # a table forced into a pipe is not cut to 80 columns
NONE_TEXT = "-"


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
    if isinstance(value, bool):  # before float/int: bool is an int; JSON and the table say true/false
        return "true" if value else "false"
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


def table_cell(column: str, value: Any, none_text: Mapping[str, str] | None = None) -> str:
    """A table cell's text: format_number, and None as "-" (or none_text[column])."""
    if _plain(value) is None:
        return (none_text or {}).get(column, NONE_TEXT)
    return printable(format_number(value))


# -- profiles on a log scale -----------------------------------------------------------------


def _log10(value: Any) -> float | None:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return math.log10(value)


@dataclass(frozen=True)
class LogScale:
    """log10 values from `low` (drawn shortest/lowest) to `high` (longest/highest)."""

    low: float
    high: float

    @property
    def decades(self) -> float:
        return self.high - self.low

    def fraction(self, value: Any) -> float | None:
        """Where value sits on the scale, 0 to 1 (clipped); None for 0, negatives, inf, nan."""
        log = _log10(value)
        if log is None:
            return None
        return min(1.0, max(0.0, (log - self.low) / self.decades))

    def describe(self) -> str:
        """'log, 2 decades' (a whole number of decades is written without a decimal)."""
        decades = round(self.decades, 1)
        text = f"{decades:.0f}" if decades == int(decades) else f"{decades:.1f}"
        return f"log, {text} decade{'' if text == '1' else 's'}"


def log_scale(values: Iterable[Any], *, min_decades: float = MIN_DECADES) -> LogScale | None:
    """The log10 range of the values that have one, widened about its middle to at least
    `min_decades` decades; None when no value has a logarithm.

    Why a minimum span: scaled from its own min to max, a profile that varies by 3 %
    (He: grad_var 0.4727 against 0.4876) fills the whole range and looks wild. Two decades
    keep factors of 10 visible (a quarter of the height per factor √10) while a few per cent
    stays within one step.
    """
    logs = [log for log in (_log10(v) for v in values) if log is not None]
    if not logs:
        return None
    low, high = min(logs), max(logs)
    if high - low < min_decades:
        middle = (low + high) / 2
        low, high = middle - min_decades / 2, middle + min_decades / 2
    return LogScale(low, high)


def log_scale_header(name: str, values: Iterable[Any], *, min_decades: float = MIN_DECADES) -> str:
    """The header of a bar/sparkline column drawn from `values` with the default scale:
    'act_var\\n(log, 2 decades)' (two lines, so the column stays narrow)."""
    scale = log_scale(values, min_decades=min_decades)
    return name if scale is None else f"{name}\n({scale.describe()})"


def log_bars(values: Sequence[Any], width: int = 8, *, scale: LogScale | None = None,
             min_decades: float = MIN_DECADES) -> list[str]:
    """One horizontal bar per value, its length log10(value) on `scale` (by default
    log_scale(values)): read down the rows, the bars draw the profile across layers. The
    bottom of the scale is one eighth of a cell, the top `width` cells. Blank for 0, inf, nan."""
    if scale is None:
        scale = log_scale(values, min_decades=min_decades)
    if scale is None:
        return [""] * len(values)
    bars = []
    for value in values:
        fraction = scale.fraction(value)
        if fraction is None:
            bars.append("")
            continue
        units = 1 + round(fraction * (width * 8 - 1))
        bars.append("█" * (units // 8) + (_EIGHTHS[units % 8 - 1] if units % 8 else ""))
    return bars


def log_sparkline(values: Sequence[Any], width: int = 16, *, scale: LogScale | None = None,
                  min_decades: float = MIN_DECADES) -> str:
    """A sparkline of log10(values) on `scale` (by default log_scale(values)), resampled to
    at most `width` characters; · for values with no logarithm (0, inf, nan). Pass one
    scale to every row of a column to make the rows comparable."""
    values = list(values)
    if not values:
        return ""
    if scale is None:
        scale = log_scale(values, min_decades=min_decades)
    step = max(1, math.ceil(len(values) / width))
    picked = values[::step]
    if scale is None:
        return MISSING * len(picked)
    line = []
    for value in picked:
        fraction = scale.fraction(value)
        line.append(MISSING if fraction is None else SPARK[round(fraction * (len(SPARK) - 1))])
    return "".join(line)


def sparkline(counts: Sequence[float]) -> str:
    """One character per bin, height proportional to the count."""
    top = max(counts) if len(counts) else 0
    if top <= 0:
        return " " * len(counts)
    return "".join(SPARK[min(len(SPARK) - 1, int(round(c / top * (len(SPARK) - 1))))] if c > 0 else " "
                   for c in counts)


def histogram_line(values, bins: int = 16) -> str:
    """A sparkline histogram of an array's finite values over [min, max]."""
    import numpy as np

    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return ""
    low, high = float(flat.min()), float(flat.max())
    if low == high:
        return "█".center(bins)
    if not math.isfinite(high - low):  # ±1e308: the span overflows, so histogram scaled values
        scale = max(abs(low), abs(high))
        flat, low, high = flat / scale, low / scale, high / scale
    counts, _ = np.histogram(flat, bins=bins, range=(low, high))
    return sparkline(counts)


# -- consoles ---------------------------------------------------------------------------------

# One-cell ASCII stand-ins for the glyphs initcli draws, for a stream whose encoding lacks
# them (PYTHONIOENCODING=ascii, a latin-1 locale): the table keeps its alignment.
_ASCII = str.maketrans({
    "█": "#", "▉": "#", "▊": "#", "▋": "#", "▌": "|", "▍": "|", "▎": "|", "▏": "|",
    "▁": "_", "▂": ".", "▃": "-", "▄": "-", "▅": "=", "▆": "=", "▇": "*",
    "·": ".", "•": "*", "●": "o", "▲": "^", "■": "s", "◆": "d", "✚": "+", "✖": "x", "★": "*", "◉": "@",
    "▼": "v", "♦": "%", "─": "-", "│": "|", "┤": "|", "├": "|", "└": "+", "┐": "+", "▕": "|",
    "…": "~", "×": "x", "—": "-", "–": "-", "≥": ">", "≤": "<", "²": "2", "√": "V", "χ": "x", "σ": "s",
})
_GLYPHS = "".join(chr(c) for c in _ASCII)


def _encoding_lacks_glyphs(stream) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        _GLYPHS.encode(encoding)
    except (UnicodeError, LookupError):
        return True
    return False


class _AsciiFallbackStream:
    """Writes to `stream`, turning the glyphs its encoding cannot take into ASCII look-alikes
    and anything else unencodable into '?', so output never raises UnicodeEncodeError."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.encoding = getattr(stream, "encoding", None) or "ascii"

    def write(self, text: str) -> int:
        try:
            safe = text.translate(_ASCII).encode(self.encoding, "replace").decode(self.encoding)
        except LookupError:
            safe = text.translate(_ASCII).encode("ascii", "replace").decode("ascii")
        return self._stream.write(safe)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return _isatty(self._stream)

    def fileno(self) -> int:
        return self._stream.fileno()


class _Discard:
    """Where output goes when the stream is closed (`>&-` makes sys.stdout None)."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # None, a closed file, an odd file-like object
        return False


def _safe_file(stream):
    if stream is None:
        return _Discard()
    return _AsciiFallbackStream(stream) if _encoding_lacks_glyphs(stream) else stream


@functools.cache
def _escaping_console_class():
    """rich's Console, but print() shows control characters in plain strings and Text as
    escapes (text.printable): names and notes read from a user's file reach it, and rich
    passes ESC through. Tables built here escape their own cells. Built on first use, so
    importing this module does not import rich."""
    from rich.console import Console
    from rich.text import Text

    class EscapingConsole(Console):
        def print(self, *objects, **options):
            safe = []
            for item in objects:
                if isinstance(item, str):
                    item = printable(item)
                elif isinstance(item, Text) and printable(item.plain) != item.plain:
                    item = Text(printable(item.plain), style=item.style)
                safe.append(item)
            super().print(*safe, **options)

    return EscapingConsole


def _console(**kwargs):
    return _escaping_console_class()(**kwargs)


def stdout_console():
    """The console tables (and terminal charts) go to on stdout.

    On a terminal: its width, but never less than MIN_TABLE_WIDTH (COLUMNS=0 or 20 would
    leave no room for a number: the table is laid out wider and the terminal wraps it).
    Forced into a pipe or file: PIPE_TABLE_WIDTH wide, so rich does not cut it to 80 columns.
    stdout closed: output is discarded. An encoding without the glyphs: ASCII stand-ins.
    """
    stream = sys.stdout
    file = _safe_file(stream)
    if not _isatty(stream):
        return _console(file=file, width=PIPE_TABLE_WIDTH, highlight=False)
    console = _console(file=file, highlight=False)
    if console.width < MIN_TABLE_WIDTH:
        console = _console(file=file, width=MIN_TABLE_WIDTH, highlight=False)
    return console


def stderr_console():
    """The console for diagnostics: stderr, discarded when stderr is closed, ASCII stand-ins
    for an encoding without the glyphs."""
    stream = sys.stderr
    if stream is None:
        return _console(file=_Discard(), highlight=False)
    file = _safe_file(stream)
    # file=None follows sys.stderr (test runners swap it)
    console = _console(stderr=True, highlight=False) if file is stream else _console(file=file, highlight=False)
    if console.width < MIN_NOTE_WIDTH:  # COLUMNS=0 would print nothing at all
        console = _console(file=file, width=MIN_NOTE_WIDTH, highlight=False)
    return console


def chart_console():
    """Terminal charts go to stdout on a terminal, else to stderr: never into piped CSV/JSON."""
    return stdout_console() if _isatty(sys.stdout) else stderr_console()


def hidden_columns_note(hidden: Sequence[str], console=None) -> None:
    """Say on stderr which columns print_table left out: '(1 column left out to fit the
    terminal: chi; widen it or use --format csv)', wrapped between words on a terminal.
    Nothing when `hidden` is empty."""
    from rich.text import Text

    if not hidden:
        return
    if console is None:
        console = stderr_console()
    count = len(hidden)
    text = (f"({count} column{'' if count == 1 else 's'} left out to fit the terminal: {', '.join(hidden)}; "
            "widen it or use --format csv)")
    # wrapped by rich between words on a terminal; one line in a log file
    console.print(Text(text, style="dim"), soft_wrap=not console.is_terminal, overflow="fold")


# -- tables -----------------------------------------------------------------------------------


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


def _text_width(text: str) -> int:
    return max((len(line) for line in text.split("\n")), default=0)


def _column_width(rows: list[dict], column: str, none_text: Mapping[str, str] | None = None) -> int:
    cells = [table_cell(column, row.get(column), none_text) for row in rows]
    natural = max([_text_width(_header(column))] + [len(c) for c in cells])
    return (min(natural, _TEXT_MIN_WIDTH) if column in TEXT_COLUMNS else natural) + _PADDING


def fit_columns(rows: list[dict], columns: Sequence[str], width: int, *, priority: Sequence[str] | None = None,
                reserved: int = 0, none_text: Mapping[str, str] | None = None) -> list[str]:
    """The columns that fit in `width` characters (less `reserved`) without folding a number:
    the least important ones (last in `priority`, then the columns it does not name) are
    dropped first; names in `priority` that are not columns are ignored. The most important
    column is always kept, even when it alone is too wide. Order stays as in `columns`."""
    widths = {c: _column_width(rows, c, none_text) for c in columns}
    order = list(dict.fromkeys(c for c in (priority or ()) if c in widths))
    order += [c for c in columns if c not in order]
    kept = order
    while len(kept) > 1 and sum(widths[c] for c in kept) + reserved > width:
        kept = kept[:-1]
    return [c for c in columns if c in kept]


def fit_extra_columns(rows: list[dict], columns: Sequence[str], extra_columns: Mapping[str, Sequence[str]],
                      width: int, *, none_text: Mapping[str, str] | None = None) -> list[str]:
    """The decorative columns (bars, sparklines, histograms) that fit beside every data
    column: they go first, the last one first, before any data column is dropped."""
    data = sum(_column_width(rows, c, none_text) for c in columns)
    widths = {name: max([_text_width(name)] + [len(v) for v in values]) + _PADDING
              for name, values in extra_columns.items()}
    kept = list(extra_columns)
    while kept and data + sum(widths[name] for name in kept) > width:
        kept.pop()
    return kept


def print_table(rows: list[dict], columns: Sequence[str], *, title: str | None = None,
                cell_style: CellStyle | None = None, extra_columns: Mapping[str, Sequence[str]] | None = None,
                priority: Sequence[str] | None = None, none_text: Mapping[str, str] | None = None,
                console=None) -> list[str]:
    """A rich table on `console` (default stdout_console()). Numbers get 4 significant
    digits; inf/nan are red; None is "-" or none_text[column] (e.g. {"epochs_to_target": "never"}).

    Numbers are never folded: on a narrow terminal the decorative `extra_columns` (one text
    per row, drawn after the data) are left out first, then the least important data columns
    (the end of `priority`); the names of the data columns left out are returned so the
    caller can say so (hidden_columns_note).
    """
    from rich.table import Table
    from rich.text import Text

    if console is None:
        console = stdout_console()
    extra_columns = extra_columns or {}
    width = console.width
    extras = fit_extra_columns(rows, columns, extra_columns, width, none_text=none_text)
    reserved = sum(max([_text_width(name)] + [len(v) for v in extra_columns[name]]) + _PADDING for name in extras)
    shown = fit_columns(rows, columns, width, priority=priority, reserved=reserved, none_text=none_text)
    # the title goes on its own line: as a rich title it would wrap to a narrow table's width
    table = Table(header_style="bold", pad_edge=False, box=None, show_edge=False)
    for column in shown:
        left = column in TEXT_COLUMNS
        table.add_column(_header(column), justify="left" if left else "right", no_wrap=not left,
                         overflow="fold")
    for name in extras:
        table.add_column(name, justify="left", no_wrap=True)
    for index, row in enumerate(rows):
        cells = []
        for column in shown:
            value = row.get(column)
            style = _nonfinite_style(column, value) or (cell_style(column, value) if cell_style else None)
            cells.append(Text(table_cell(column, value, none_text), style=style or ""))
        cells.extend(Text(extra_columns[name][index], style="cyan") for name in extras)
        table.add_row(*cells)
    if title:
        console.print(Text(printable(title), style="bold"), soft_wrap=True)
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
