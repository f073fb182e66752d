"""`initcli sweep`: grids, seeds from coordinates, executors, the results file, theory."""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli.cli import app
from initcli.errors import InitcliError
from initcli.sweep import (
    COORDINATES,
    LocalExecutor,
    Point,
    columns,
    grid,
    heatmap,
    parse_axis,
    point_seed,
    read_results,
    sweep,
    train_options,
)

# tiny stacks: every point runs in a few milliseconds
SMALL = {"depth": [4], "width": [16], "batch": [16], "activation": ["tanh"]}


def _csv(rows, header) -> str:
    from initcli.render import csv_cell

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[csv_cell(row[c]) for c in header] for row in rows])
    return buffer.getvalue()


def test_parse_axis_lists_and_ranges():
    assert parse_axis("0.5:3:6", "sigma_w") == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert parse_axis("0:0.3:4", "sigma_b") == [0.0, 0.1, 0.2, 0.3]  # not 0.30000000000000004
    assert parse_axis("2:10:5", "depth") == [2, 4, 6, 8, 10]
    assert parse_axis("4,8,4", "width") == [4, 8]
    assert parse_axis("relu, Tanh", "activation") == ["relu", "tanh"]
    for text, param in (("2:9:3", "depth"), ("0:1", "sigma_w"), ("1:2:0", "sigma_w"), ("-1", "sigma_b"),
                        ("0", "width"), ("a", "sigma_w"), ("inf", "sigma_w"), ("1.5", "depth"), ("relu,", "activation")):
        with pytest.raises(InitcliError) as info:
            parse_axis(text, param)
        assert info.value.param == param


def test_grid_needs_sigma_w_or_scheme_and_not_both():
    with pytest.raises(InitcliError):
        grid({"sigma_w": [1.0], "scheme": ["he-normal"]})
    with pytest.raises(InitcliError):
        grid({})
    points = grid({"sigma_w": [1.0, 2.0], "sigma_b": [0.0, 0.1], **SMALL}, seeds=3, base_seed=5)
    assert len(points) == 12
    assert [p.seed for p in points[:3]] == [5, 6, 7]


def test_seed_comes_from_the_coordinates_only():
    """The same point gives the same row in any grid, at any place in it, in any order."""
    a = grid({"sigma_w": [1.0, 1.5], "sigma_b": [0.1], **SMALL}, seeds=2)
    b = grid({"sigma_w": [2.0, 1.5, 0.7], "sigma_b": [0.2, 0.1], **SMALL}, seeds=2)
    shared = [p for p in a if p in b]
    assert len(shared) == 2
    rows_a = {tuple(r[c] for c in COORDINATES): r for r in sweep(a).rows}
    rows_b = {tuple(r[c] for c in COORDINATES): r for r in sweep(list(reversed(b))).rows}
    header = columns()
    for point in shared:
        key = tuple(getattr(point, c) for c in COORDINATES)
        assert _csv([rows_a[key]], header) == _csv([rows_b[key]], header)
    # the seed changes with any coordinate and with the replica
    seeds = {point_seed(p) for p in a + b}
    assert len(seeds) == len(set(a + b))
    assert point_seed(Point(1.0, 0.1, 4, 16, 16, None, "tanh", 0)) == point_seed(
        Point(1.0, 0.1, 4, 16, 16, None, "tanh", 0))


def test_local_jobs_do_not_change_a_byte():
    """Trained points included: training, too, is seeded by the point and on one BLAS thread."""
    points = grid({"sigma_w": [0.8, 1.6], "sigma_b": [0.0, 0.2], **SMALL}, seeds=2)
    options = {"train": train_options("xor", 3, samples=32)}
    header = columns("accuracy")
    serial = _csv(sweep(points, executor=LocalExecutor(1), options=options).rows, header)
    parallel = _csv(sweep(points, executor=LocalExecutor(2), batch_size=3, options=options).rows, header)
    assert serial == parallel
    assert "final_accuracy" in serial.splitlines()[0]


def test_train_gives_what_initcli_train_gives_for_the_point():
    """The point's network is train's MLP: depth × width hidden layers, σ_w as the LeCun
    gain (or the scheme), the point's run_seed; the score is named for the task."""
    from initcli.training import train

    points = grid({"sigma_w": [0.7, 1.4], "depth": [3], "width": [8], "batch": [8], "activation": ["tanh"]})
    points += grid({"scheme": ["xavier-normal"], "depth": [2], "width": [8], "batch": [8], "activation": ["tanh"]})
    rows = sweep(points, options={"train": train_options("moons", 4, samples=64, batch=16, lr=0.2)}).rows
    for point, row in zip(points, rows):
        assert row["error"] is None
        reference = train([point.scheme or "lecun-normal"], "tanh", task="moons", samples=64, depth=point.depth,
                          width=8, epochs=4, batch=16, lr=0.2, seed=point.run_seed,
                          gain=point.sigma_w if point.sigma_w is not None else 1.0).rows()[0]
        assert (row["final_loss"], row["final_accuracy"]) == (reference["final_loss"], reference["final_accuracy"])
    regression = sweep(points[:1], options={"train": train_options("regression", 2, samples=32)})
    assert "final_r2" in regression.columns and "final_accuracy" not in regression.columns
    assert math.isfinite(regression.rows[0]["final_r2"])
    for bad, param in (({"task": "mnist"}, "task"), ({"task": "xor", "epochs": 0}, "epochs"),
                       ({"task": "xor", "lr": -1.0}, "lr"), ({"task": "xor", "optimizer": "lbfgs"}, "optimizer"),
                       ({"task": "xor", "batch": 0}, "train_batch")):
        with pytest.raises(InitcliError) as info:
            train_options(**bad)
        assert info.value.param == param


def test_the_memory_guard_counts_the_runs_that_go_at_once(monkeypatch):
    """One run fits and two do not: --jobs 2 is refused before any work, naming --jobs."""
    import sys

    from initcli.propagation import estimate_bytes, prepare
    from initcli.sweep import DaskExecutor, check_memory

    one = estimate_bytes(prepare(depth=4, width=16, batch=16).sizes, 16, np.dtype("float32"))
    # wherever the guard lives, it reads the available memory from its own module
    monkeypatch.setattr(sys.modules[check_memory.__module__], "available_bytes", lambda: int(one * 1.5 / 0.9))
    points = grid({"sigma_w": [0.8, 1.6], **SMALL})
    assert len(sweep(points, executor=LocalExecutor(1)).rows) == 2
    started = []
    for executor in (LocalExecutor, DaskExecutor):
        monkeypatch.setattr(executor, "run", lambda *args, **kw: started.append(1))
    with pytest.raises(InitcliError) as info:
        sweep(points, executor=LocalExecutor(2))
    assert "--jobs" in str(info.value) and not started
    seen = []
    monkeypatch.setattr("initcli.sweep.check_memory", lambda needed, **kw: seen.append(needed))
    sweep(points, executor=LocalExecutor(2))
    sweep(points[:1], executor=LocalExecutor(2))  # one point goes alone: its own run's guard is enough
    sweep(points, executor=DaskExecutor(None, jobs=2))  # a local cluster: both workers here
    sweep(points, executor=DaskExecutor("tcp://10.0.0.5:8786", jobs=2))  # workers on their own machines
    assert seen == [2 * one, 2 * one] and len(started) == 4


def test_a_failing_point_is_an_error_row(monkeypatch):
    import initcli.sweep as module

    real = module.measure_point

    def flaky(point, options):
        if point.sigma_w == 1.5:
            raise FloatingPointError("boom")
        return real(point, options)

    monkeypatch.setattr(module, "measure_point", flaky)
    rows = sweep(grid({"sigma_w": [1.0, 1.5, 2.0], **SMALL})).rows
    assert [r["error"] for r in rows] == [None, "FloatingPointError: boom", None]
    assert rows[1]["verdict"] is None and rows[2]["verdict"] is not None


def test_out_appends_and_a_killed_run_resumes(tmp_path):
    points = grid({"sigma_w": [0.8, 1.2, 1.6], "sigma_b": [0.0, 0.2], **SMALL}, seeds=2)
    whole = tmp_path / "whole.csv"
    sweep(points, out=str(whole), batch_size=2)
    lines = whole.read_text().splitlines(keepends=True)
    assert len(lines) == 1 + len(points)

    # a run killed mid-write: 5 whole rows and half of the 6th
    killed = tmp_path / "killed.csv"
    killed.write_text("".join(lines[:6]) + lines[6][: len(lines[6]) // 2])
    again = sweep(points, out=str(killed), batch_size=2)
    assert again.skipped == 5 and len(again.rows) == len(points) - 5
    resumed = read_results(str(killed))
    assert len(resumed) == len(points)
    assert sorted(map(tuple, (r.values() for r in resumed))) == sorted(
        map(tuple, (r.values() for r in read_results(str(whole)))))
    # a third run has nothing left to do
    assert sweep(points, out=str(killed)).rows == ()
    assert len(read_results(str(killed))) == len(points)
    # other settings are other rows: nothing is skipped, nothing mixed
    other = sweep(points, out=str(killed), options={"propagate": {"dtype": "float64"}})
    assert other.skipped == 0 and len(read_results(str(killed))) == 2 * len(points)
    assert {r["settings"] for r in read_results(str(killed))} == {"", "dtype=float64"}


def test_out_refuses_a_file_with_other_columns(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InitcliError) as info:
        sweep(grid({"sigma_w": [1.0], **SMALL}), out=str(path))
    assert info.value.param == "out"


def test_dask_cluster_gives_the_local_rows():
    pytest.importorskip("distributed")
    from initcli.sweep import DaskExecutor

    points = grid({"sigma_w": [0.8, 1.6], "sigma_b": [0.0, 0.2], **SMALL}, seeds=2)
    header = columns()
    local = _csv(sweep(points, executor=LocalExecutor(1)).rows, header)
    # a real scheduler and two worker processes on this machine
    remote = _csv(sweep(points, executor=DaskExecutor(None, jobs=2), batch_size=3).rows, header)
    assert local == remote


def test_measured_depth_scales_follow_theory_on_tanh():
    """1/ξ (the per-layer log rate) averaged over seeds against theory's |ln χ|.

    Tolerance: 4 standard errors of the seeds' mean, plus 2/n for mean-field's O(1/n)
    finite-width bias of the per-layer log factor (Jensen: E[ln X] = ln E[X] − Var(X)/2, with
    Var of a layer's variance ratio O(1/n)). The points sit far enough from the edge of chaos
    that ordered and chaotic rates (0.70, 0.36, 0.46 for the gradient) are told apart by more
    than that."""
    width, seeds = 32, 8
    points = grid({"sigma_w": [0.8, 1.0, 2.5], "sigma_b": [0.3], "depth": [10], "width": [width], "batch": [32],
                   "activation": ["tanh"]}, seeds=seeds)
    rows = sweep(points).rows
    checked = 0
    for sigma_w in (0.8, 1.0, 2.5):
        mine = [r for r in rows if r["sigma_w"] == sigma_w]
        assert mine[0]["theory_phase"] == ("chaotic" if sigma_w == 2.5 else "ordered")
        pairs = [("xi_grad", "theory_xi_grad")] + ([("xi_c", "theory_xi_c")] if sigma_w < 2 else [])
        for column, theory in pairs:
            rates = np.array([1 / r[column] for r in mine])
            assert np.all(np.isfinite(rates))
            tolerance = 4 * rates.std(ddof=1) / math.sqrt(seeds) + 2 / width
            assert abs(rates.mean() - 1 / mine[0][theory]) < tolerance, (sigma_w, column, rates)
            checked += 1
    assert checked == 5


# -- the command --------------------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    return CliRunner()


ARGS = ["sweep", "--sigma-w", "0.8,1.6", "--sigma-b", "0:0.2:2", "--depth", "4", "--width", "16", "--batch", "16",
        "--activation", "tanh", "--jobs", "1"]


def test_cli_csv_and_json(runner):
    result = runner.invoke(app, ARGS + ["--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["sigma_w"], r["sigma_b"]) for r in rows] == [("0.8", "0.0"), ("0.8", "0.2"), ("1.6", "0.0"), ("1.6", "0.2")]
    assert list(rows[0]) == list(columns())
    result = runner.invoke(app, ARGS + ["--format", "json"])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["command"] == "sweep" and len(document["rows"]) == 4


def test_cli_out_resume_and_heatmap(runner, tmp_path):
    path = str(tmp_path / "r.csv")
    first = runner.invoke(app, ARGS + ["--out", path])
    assert first.exit_code == 0, first.output
    assert first.stdout == ""
    second = runner.invoke(app, ARGS + ["--out", path, "--heatmap", "sigma_w,sigma_b", "--metric", "verdict"])
    assert second.exit_code == 0, second.output
    assert "already there" in second.stderr
    assert len(read_results(path)) == 4
    assert os.path.getsize(path) > 0


@pytest.mark.parametrize("extra", [["--sigma-w", "1:2"], ["--scheme", "he-normal"], ["--executor", "spark"],
                                   ["--heatmap", "sigma_w"], ["--metric", "nope", "--heatmap", "sigma_w,sigma_b"],
                                   ["--scheduler", "tcp://localhost:1"]])
def test_cli_refuses_bad_input_with_exit_2(runner, extra):
    result = runner.invoke(app, ARGS + extra)
    assert result.exit_code == 2, result.output


def test_heatmap_means_over_the_other_axes():
    rows = [{"sigma_w": 1.0, "depth": 2, "xi_c": 10.0, "verdict": "stable", "error": None},
            {"sigma_w": 1.0, "depth": 2, "xi_c": 1000.0, "verdict": "stable", "error": None},
            {"sigma_w": 1.0, "depth": 2, "xi_c": math.inf, "verdict": "vanishing", "error": None},
            {"sigma_w": 2.0, "depth": 2, "xi_c": math.nan, "verdict": None, "error": "boom"},
            {"sigma_w": 2.0, "depth": 4, "xi_c": math.inf, "verdict": "exploding", "error": None}]
    heat = heatmap(rows, "sigma_w", "depth", "xi_c")
    assert heat.ys == (1.0, 2.0) and heat.xs == (2, 4) and heat.log
    assert heat.cells[0][0] == pytest.approx(100.0, rel=1e-12)  # geometric mean of the finite ones
    assert heat.cells[0][1] is None and heat.cells[1][0] is None and heat.cells[1][1] is None
    verdicts = heatmap(rows, "sigma_w", "depth", "verdict")
    assert verdicts.cells[0][0] == "stable" and verdicts.cells[1][1] == "exploding"


def test_dask_scheduler_that_refuses_is_one_line_at_once(runner):
    import socket
    import time

    pytest.importorskip("distributed")
    with socket.socket() as free:  # a port nothing listens on once this closes
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    started = time.monotonic()
    result = runner.invoke(app, ARGS + ["--executor", "dask", "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert result.exit_code == 2, result.output
    assert "--scheduler" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 4


def test_dask_scheduler_that_never_answers_times_out(monkeypatch):
    """Something accepts the connection (the kernel's backlog) but never answers Dask's
    handshake, which Dask's own timeout does not cover: still one error naming --scheduler,
    after 2 × the connect timeout."""
    import socket
    import time

    pytest.importorskip("distributed")
    import initcli.sweep as module
    from initcli.sweep import DaskExecutor

    monkeypatch.setattr(module, "CONNECT_SECONDS", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        with pytest.raises(InitcliError) as info:
            sweep(grid({"sigma_w": [1.0], **SMALL}), executor=DaskExecutor(f"tcp://127.0.0.1:{silent.getsockname()[1]}"))
    assert info.value.param == "scheduler"
    assert time.monotonic() - started < 4


def test_scheduler_needs_the_dask_executor():
    from initcli.sweep import make_executor

    with pytest.raises(InitcliError) as info:
        make_executor("local", scheduler="tcp://127.0.0.1:8786")
    assert info.value.param == "scheduler"
    with pytest.raises(InitcliError) as info:
        make_executor("dask", scheduler="tcp://host:99999")
    assert info.value.param == "scheduler"


def test_cli_save_plot_writes_a_figure_and_plot_draws_in_the_terminal(runner, tmp_path):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "phase.png"
    result = runner.invoke(app, ARGS + ["--format", "csv", "--plot", "--save-plot", str(figure)])
    assert result.exit_code == 0, result.output
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "xi_grad over sigma_w (rows) × sigma_b (columns)" in result.stderr
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 4
    trained = tmp_path / "trained.svg"
    result = runner.invoke(app, ARGS + ["--format", "csv", "--train", "xor", "--epochs", "2", "--samples", "32",
                                        "--heatmap", "sigma_w,depth", "--metric", "accuracy", "--save-plot",
                                        str(trained)])
    assert result.exit_code == 0, result.output
    assert trained.read_text().lstrip().startswith("<?xml")
    assert "final_accuracy" in result.stdout.splitlines()[0]


@pytest.mark.parametrize("plot", ["missing/phase.png", "phase.txt", "exists.png"])
def test_cli_refused_save_plot_writes_nothing(runner, tmp_path, monkeypatch, plot):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.png").write_bytes(b"old")
    result = runner.invoke(app, ARGS + ["--out", "r.csv", "--save-plot", plot])
    assert result.exit_code == 2, result.output
    assert "--save-plot" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["exists.png"] and (tmp_path / "exists.png").read_bytes() == b"old"


@pytest.mark.parametrize("extra", [["--epochs", "3"], ["--metric", "accuracy", "--heatmap", "sigma_w,sigma_b"],
                                   ["--metric", "xi_c"], ["--train", "mnist"], ["--plot"] + ["--sigma-b", "0"]])
def test_cli_refuses_options_that_do_not_apply(runner, extra):
    result = runner.invoke(app, ARGS + extra)
    assert result.exit_code == 2, result.output


def test_parquet_out_grows_by_row_groups_and_resumes(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    points = grid({"sigma_w": [0.8, 1.2, 1.6], "sigma_b": [0.0, 0.2], **SMALL})
    whole = tmp_path / "whole.parquet"
    sweep(points, out=str(whole), batch_size=2)
    assert pq.ParquetFile(whole).metadata.num_row_groups == 3  # one per task
    expected = read_results(str(whole))
    assert len(expected) == len(points)
    assert expected == read_results(str(_write_csv(tmp_path, points)))  # the CSV's cells, typed columns and all

    # a sweep killed after its first task: the file holds that task's whole rows only
    killed = tmp_path / "killed.parquet"
    pq.write_table(pq.read_table(whole).slice(0, 2), killed)
    again = sweep(points, out=str(killed), batch_size=2)
    assert again.skipped == 2 and len(again.rows) == len(points) - 2
    assert sorted(map(tuple, (r.values() for r in read_results(str(killed))))) == sorted(
        map(tuple, (r.values() for r in expected)))
    assert sweep(points, out=str(killed)).rows == ()


def _write_csv(tmp_path, points):
    path = tmp_path / "same.csv"
    sweep(points, out=str(path))
    return path


def test_parquet_without_pyarrow_is_one_line_naming_the_extra(runner, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    result = runner.invoke(app, ARGS + ["--out", str(tmp_path / "r.parquet")])
    assert result.exit_code == 2
    assert "initcli[parquet]" in result.stderr and "--out" in result.stderr
    assert os.listdir(tmp_path) == []


# -- architecture axes --------------------------------------------------------------------------

# Recorded from the code before the architecture axes existed (--sigma-w 1,2 --sigma-b 0,0.1
# --depth 3 --width 8 --batch 16 -a relu --seeds 2): a grid without them keeps its header,
# coordinates, run_seeds and settings cell, byte for byte.
BEFORE_ARCH_AXES = """\
sigma_w,sigma_b,depth,width,batch,scheme,activation,seed,run_seed,settings
1.0,0.0,3,8,16,,relu,0,5262127959981019613,dtype=float32;input_std=1.0
1.0,0.0,3,8,16,,relu,1,7540011142466155127,dtype=float32;input_std=1.0
1.0,0.1,3,8,16,,relu,0,6656758257783024273,dtype=float32;input_std=1.0
1.0,0.1,3,8,16,,relu,1,5832379567928562088,dtype=float32;input_std=1.0
2.0,0.0,3,8,16,,relu,0,4183129892576034289,dtype=float32;input_std=1.0
2.0,0.0,3,8,16,,relu,1,776222140475062738,dtype=float32;input_std=1.0
2.0,0.1,3,8,16,,relu,0,2968150590862006003,dtype=float32;input_std=1.0
2.0,0.1,3,8,16,,relu,1,4075779435836234763,dtype=float32;input_std=1.0
"""


def test_a_grid_without_architecture_axes_keeps_its_rows(runner):
    result = runner.invoke(app, ["sweep", "--sigma-w", "1,2", "--sigma-b", "0,0.1", "--depth", "3", "--width", "8",
                                 "--batch", "16", "-a", "relu", "--seeds", "2", "--format", "csv"])
    assert result.exit_code == 0, result.output
    head = "".join(",".join(line.split(",")[:10]) + "\n" for line in result.stdout.splitlines())
    assert head == BEFORE_ARCH_AXES
    assert "residual_init" not in columns() and "param" not in columns()


def test_architecture_axes_are_coordinates_of_the_key_and_the_seed():
    points = grid({"sigma_w": [1.0], "residual_init": ["none", "GPT2"], "param": ["sp", "mup"], **SMALL})
    assert [(p.residual_init, p.param) for p in points] == [("none", "sp"), ("none", "mup"), ("gpt2", "sp"),
                                                            ("gpt2", "mup")]
    assert points[0].coordinates == COORDINATES[:-1] + ("residual_init", "param", "seed")
    assert len({p.run_seed for p in points}) == 4
    plain = grid({"sigma_w": [1.0], **SMALL})[0]
    assert plain.run_seed not in {p.run_seed for p in points}  # 'none' is a value, not the absence of the axis
    only = grid({"sigma_w": [1.0], "param": ["ntk"], **SMALL})[0]
    assert only.coordinates == COORDINATES[:-1] + ("param", "seed")
    for axes, param in (({"residual_init": ["bogus"]}, "residual_init"), ({"param": ["xx"]}, "param"),
                        ({"param": []}, "param")):
        with pytest.raises(InitcliError) as info:
            grid({"sigma_w": [1.0], **SMALL, **axes})
        assert info.value.param == param


def test_residual_init_presets_tame_the_stream_variance():
    # He-normal relu branches on x + f(x) double the stream's variance per block: ×2^16 over
    # 16 blocks. gpt2 (branch × 1/√(2L)) and depth-mup (× 1/√L) keep it within (1 + 1/L)^L ≤ e.
    # Finite width (64) moves ln Var by ~√(2L/width) = 0.7 per run, so a 100× margin holds.
    points = grid({"scheme": ["he-normal"], "residual_init": ["none", "gpt2", "depth-mup"], "depth": [16],
                   "width": [64], "batch": [64], "activation": ["relu"]})
    rows = sweep(points, options={"propagate": {"residual": True}}).rows
    assert [r["residual_init"] for r in rows] == ["none", "gpt2", "depth-mup"]
    assert all(r["error"] is None for r in rows)
    none, gpt2, depth_mup = (r["last_act_var"] for r in rows)
    assert none > 100 * max(gpt2, depth_mup)
    assert all(r["settings"] == "residual=true" for r in rows)
    # the plain MLP's mean-field theory does not describe a residual stack
    assert all(math.isnan(r["theory_chi"]) and r["theory_phase"] == "" for r in rows)


def test_param_axis_is_passed_to_propagate():
    from initcli.propagation import propagate

    rows = sweep(grid({"scheme": ["he-normal"], "param": ["sp", "mup"], **SMALL})).rows
    assert [r["param"] for r in rows] == ["sp", "mup"]
    for row in rows:
        alone = propagate(scheme="he-normal", activation="tanh", depth=4, width=16, batch=16, seed=row["run_seed"],
                          param=row["param"], theory=False)
        assert row["last_act_var"] == alone.layers[-1].act_var  # the same run: the same bytes
    assert rows[0]["last_act_var"] != rows[1]["last_act_var"]


def test_out_resumes_with_architecture_columns(tmp_path):
    points = grid({"sigma_w": [1.0, 1.5], "residual_init": ["none", "rezero"], "param": ["sp", "ntk"], **SMALL})
    whole = tmp_path / "whole.csv"
    sweep(points, out=str(whole), batch_size=3)
    lines = whole.read_text().splitlines(keepends=True)
    assert lines[0].startswith("sigma_w,sigma_b,depth,width,batch,scheme,activation,residual_init,param,seed,")
    killed = tmp_path / "killed.csv"
    killed.write_text("".join(lines[:4]) + lines[4][:10])
    again = sweep(points, out=str(killed), batch_size=3)
    assert again.skipped == 3 and len(again.rows) == len(points) - 3
    assert sorted(read_results(str(killed)), key=str) == sorted(read_results(str(whole)), key=str)
    assert sweep(points, out=str(killed)).rows == ()
    # a file of the plain grid is not the architecture grid's
    with pytest.raises(InitcliError) as info:
        sweep(grid({"sigma_w": [1.0], **SMALL}), out=str(killed))
    assert info.value.param == "out"


def test_cli_architecture_axes(runner, tmp_path):
    path = str(tmp_path / "r.csv")
    extra = ["--residual-init", "none,gpt2", "--residual", "--param", "sp,mup", "--out", path]
    first = runner.invoke(app, ARGS + extra)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ARGS + extra + ["--heatmap", "residual_init,param", "--metric", "verdict"])
    assert second.exit_code == 0, second.output
    assert "already there" in second.stderr and "residual_init (rows) × param" in second.stderr
    rows = read_results(path)
    assert len(rows) == 16 and {r["residual_init"] for r in rows} == {"none", "gpt2"}


@pytest.mark.parametrize("extra", [["--residual-init", "bogus"], ["--residual-init", "gpt2", "--norm", "layer"],
                                   ["--residual-init", "none,gpt2", "--residual", "--norm", "layer"],
                                   ["--param", "xx"], ["--residual-init", "gpt2", "--train", "xor"],
                                   ["--heatmap", "param,sigma_w"]])
def test_cli_refuses_bad_architecture_axes_in_one_line(runner, extra):
    result = runner.invoke(app, ARGS + extra)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
