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
    parse_axis,
    point_seed,
    read_results,
    sweep,
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
    points = grid({"sigma_w": [0.8, 1.6], "sigma_b": [0.0, 0.2], **SMALL}, seeds=2)
    header = columns()
    serial = _csv(sweep(points, executor=LocalExecutor(1)).rows, header)
    parallel = _csv(sweep(points, executor=LocalExecutor(2), batch_size=3).rows, header)
    assert serial == parallel


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
