"""render: CSV/JSON cells, log-scale profile columns, table fitting and the consoles.

Bars have width·8 − 1 = 63 steps over the scale, sparklines 7: a value's position is exact
up to half a step (rounding), which is the only tolerance used below.
"""

import io
import json
import math
import sys

import numpy as np
import pytest
from rich.console import Console

from initcli import render
from initcli.render import (
    MIN_DECADES,
    MIN_TABLE_WIDTH,
    SPARK,
    fit_columns,
    hidden_columns_note,
    log_bars,
    log_scale,
    log_scale_header,
    log_sparkline,
    print_table,
    stderr_console,
    stdout_console,
    write_csv,
    write_json,
)

EIGHTHS = "▏▎▍▌▋▊▉"


def units(bar: str) -> int:
    """A bar's length in eighths of a cell."""
    return 8 * bar.count("█") + sum(EIGHTHS.index(c) + 1 for c in bar if c in EIGHTHS)


def bar_units(fraction: float, width: int = 8) -> int:
    return 1 + round(fraction * (width * 8 - 1))


# -- CSV / JSON / cells ---------------------------------------------------------------------


def test_csv_writes_booleans_as_json_and_the_table_do():
    stream = io.StringIO()
    write_csv([{"a": True, "b": np.bool_(False), "c": None, "d": 0.1, "e": 1}], list("abcde"), stream)
    assert stream.getvalue().splitlines()[1] == "true,false,,0.1,1"
    stream = io.StringIO()
    write_json("x", {}, [{"a": True, "c": None, "f": float("nan")}], stream)
    assert json.loads(stream.getvalue())["rows"] == [{"a": True, "c": None, "f": None}]


def table_text(rows, columns, width=200, **kwargs) -> str:
    console = Console(width=width, file=io.StringIO(), no_color=True, force_terminal=False)
    print_table(rows, columns, console=console, **kwargs)
    return console.file.getvalue()


def test_none_cells_are_visible_in_tables():
    rows = [{"scheme": "he", "epochs_to_target": 12, "other": None},
            {"scheme": "zeros", "epochs_to_target": None, "other": None}]
    text = table_text(rows, ["scheme", "epochs_to_target", "other"], none_text={"epochs_to_target": "never"})
    zeros = next(line for line in text.splitlines() if line.startswith("zeros"))
    assert zeros.split() == ["zeros", "never", "-"]


# -- log-scale profiles ---------------------------------------------------------------------


def test_flat_profile_draws_flat_bars():
    # He + ReLU's grad_var: 3 % apart. Scaled min to max this was '▏' against '████████'.
    values = [0.4727, 0.4801, 0.4876]
    scale = log_scale(values)
    assert scale.decades == pytest.approx(MIN_DECADES)
    lengths = [units(b) for b in log_bars(values)]
    spread = math.log10(0.4876 / 0.4727) / MIN_DECADES * 63  # in steps: 0.42
    assert max(lengths) - min(lengths) <= math.ceil(spread)
    middle = bar_units(0.5)  # centred: the middle of the scale
    assert all(abs(n - middle) <= 1 for n in lengths)


def test_bars_keep_a_wide_profile_and_skip_what_has_no_log():
    assert log_bars([1, 10, 100]) == ["▏", "████▏", "████████"]  # 1, 33 and 64 eighths: exactly 2 decades
    lengths = [units(b) for b in log_bars([1.0, 1e2, 1e4])]
    assert lengths == [1, bar_units(0.5), 64]  # wider than 2 decades: min to max as before
    assert log_bars([0, float("nan"), float("inf"), -1.0]) == ["", "", "", ""]
    bars = log_bars([0.0, 5.0, float("nan")])
    assert bars[0] == bars[2] == "" and units(bars[1]) == bar_units(0.5)  # one value sits in the middle


def test_numpy_float32_values_get_bars():
    # np.float32 is not a Python float: these were all blank
    values = np.array([0.5, 5.0, 50.0], dtype=np.float32)
    assert [units(b) for b in log_bars(list(values))] == [1, 33, 64]
    assert log_sparkline(list(values))[0] == SPARK[0]


def test_bar_length_follows_the_log_formula():
    values = [10.0 ** e for e in np.linspace(-3, 2, 11)]
    scale = log_scale(values)
    for value, bar in zip(values, log_bars(values)):
        assert units(bar) == bar_units((math.log10(value) - scale.low) / scale.decades)


def test_stable_sparkline_is_flat_and_a_decaying_one_falls():
    rng = np.random.default_rng(0)
    stable = list(0.48 * (1 + 0.03 * rng.standard_normal(20)))  # a few per cent, like a stable row
    line = log_sparkline(stable)
    assert set(line) <= {SPARK[3], SPARK[4]}  # the middle of the 8 levels
    line = log_sparkline([10.0 ** -i for i in range(40)], width=16)
    assert len(line) <= 16 and line[0] == "█" and line[-1] == "▁"
    assert log_sparkline([0.0, float("nan")]) == "··"
    assert log_sparkline([]) == ""


def test_shared_scale_makes_rows_comparable():
    rows = [[1.0] * 5, [10.0 ** -i for i in range(5)]]
    scale = log_scale(sum(rows, []))
    flat, falling = (log_sparkline(r, scale=scale) for r in rows)
    assert flat == "█" * 5 and falling[0] == "█" and falling[-1] == "▁"


def test_header_names_the_scale():
    assert log_scale_header("act_var", [0.47, 0.49]) == "act_var\n(log, 2 decades)"
    assert log_scale_header("grad_var", [1.0, 1e5]) == "grad_var\n(log, 5 decades)"
    assert log_scale_header("grad_var", [1.0, 10 ** 3.3]) == "grad_var\n(log, 3.3 decades)"
    assert log_scale_header("act_var", [0.0, float("nan")]) == "act_var"


# -- fitting tables ---------------------------------------------------------------------------


NUMBERS = [f"c{i}" for i in range(6)]


def numeric_rows():
    return [{c: 0.1234 + i for c in NUMBERS} for i in range(3)]


def test_decorative_columns_go_before_any_data_column():
    rows = numeric_rows()
    bars = {log_scale_header("act_var", [1, 2, 3]): log_bars([1, 2, 3]),
            log_scale_header("grad_var", [1, 2, 3]): log_bars([1, 2, 3])}
    data_width = 6 * (len("1.123") + 1 + 2)  # '0.1234' and its padding: 8 per column
    console = Console(width=data_width + 4, file=io.StringIO(), no_color=True)
    hidden = print_table(rows, NUMBERS, extra_columns=bars, console=console)
    text = console.file.getvalue()
    assert hidden == [] and "█" not in text and "act_var" not in text
    console = Console(width=data_width + 20, file=io.StringIO(), no_color=True)  # room for one bar column
    print_table(rows, NUMBERS, extra_columns=bars, console=console)
    text = console.file.getvalue()
    assert "act_var" in text and "grad_var" not in text


def test_priority_may_name_absent_columns():
    # propagate --no-theory: the priority list still names theory_preact_var (a KeyError)
    rows = numeric_rows()
    kept = fit_columns(rows, NUMBERS, 30, priority=["c3", "theory_preact_var", "c0"])
    assert kept == ["c0", "c1", "c3"]  # 8 characters each: three fit in 30, c3 and c0 first
    assert fit_columns(rows, NUMBERS, 1000, priority=["missing"]) == NUMBERS


def test_the_first_priority_column_is_always_kept():
    assert fit_columns(numeric_rows(), NUMBERS, 0, priority=["c4"]) == ["c4"]


class FakeTerminal(io.StringIO):
    encoding = "utf-8"

    def isatty(self):
        return True


@pytest.mark.parametrize("columns,expected", [("0", MIN_TABLE_WIDTH), ("20", MIN_TABLE_WIDTH), ("100", 100)])
def test_stdout_console_on_a_terminal_is_never_too_narrow(monkeypatch, columns, expected):
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(sys, "stdout", FakeTerminal())
    console = stdout_console()
    assert console.width == expected
    print_table(numeric_rows(), NUMBERS, console=console)
    assert "0.1234" in sys.stdout.getvalue()


def test_stdout_console_in_a_pipe_is_wide(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert stdout_console().width == render.PIPE_TABLE_WIDTH


def test_closed_streams_do_not_crash(monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # `>&-` at start-up
    monkeypatch.setattr(sys, "stderr", None)
    print_table(numeric_rows(), NUMBERS, console=stdout_console(), title="t · x")
    stderr_console().print("a note")
    hidden_columns_note(["chi"])
    render.chart_console().print("chart")


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_tables_survive_an_encoding_without_the_glyphs(monkeypatch, encoding):
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding=encoding, errors="strict")  # as PYTHONIOENCODING=ascii
    monkeypatch.setattr(sys, "stdout", stream)
    values = [0.5, 5.0, 50.0]
    print_table([{"layer": i, "v": v} for i, v in enumerate(values)], ["layer", "v"], title="he · relu × 3",
                extra_columns={log_scale_header("v", values): log_bars(values),
                               "profile": [log_sparkline(values), "·", "▁█"]},
                console=stdout_console())
    stream.flush()
    text = buffer.getvalue().decode(encoding)
    assert "he . relu x 3" in text
    assert "########" in text  # the longest bar, in ASCII


def test_hidden_note_counts_and_wraps_between_words():
    hidden = ["fan_in", "fan_out", "weight_std", "preact_mean", "act_mean", "weight_grad_var", "effective_rank",
              "input_cosine"]
    console = Console(width=80, file=io.StringIO(), color_system=None, force_terminal=True)
    hidden_columns_note(hidden, console=console)
    text = console.file.getvalue()
    expected = (f"(8 columns left out to fit the terminal: {', '.join(hidden)}; widen it or use --format csv)")
    assert all(len(line) <= 80 for line in text.splitlines()) and len(text.splitlines()) > 1
    assert " ".join(text.split()) == expected  # no word was cut in two
    console = Console(width=80, file=io.StringIO(), no_color=True, force_terminal=False)
    hidden_columns_note(["chi"], console=console)
    assert console.file.getvalue() == "(1 column left out to fit the terminal: chi; widen it or use --format csv)\n"
    console = Console(width=80, file=io.StringIO(), no_color=True)
    hidden_columns_note([], console=console)
    assert console.file.getvalue() == ""
