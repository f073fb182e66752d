"""`sweep` under hostile or unlucky input (issue 22: items 7, 12, 13, 15, 18 and 21), each a
test that failed before its fix: a 10-million-point grid, crafted results files, Ctrl-C on a
local Dask cluster, a rewrite killed outright, a tls:// scheduler."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from initcli.cli import app
from initcli.errors import InitcliError
from initcli.sweep import grid, read_results, sweep

SMALL = {"depth": [2], "width": [4], "batch": [2], "activation": ["tanh"]}
ARGS = ["sweep", "--sigma-w", "0.8,1.6", "--depth", "2", "--width", "4", "--batch", "2", "--jobs", "1"]
ENV = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
# 10,000,000 tiny points (the accepted maximum), every one its own setting of σ_w and σ_b
HUGE = ["sweep", "--sigma-w", "0.5:2:10000", "--sigma-b", "0:1:1000", "--depth", "2", "--width", "4", "--batch", "2"]


def one_error_line(stderr: str, option: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("initcli: error:"), stderr
    assert option in lines[0], lines[0]
    return lines[0]


def _limited_memory(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _start(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "initcli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, **kwargs)


def _wait_for_rows(path: Path, rows: int, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") > rows:
            return
        time.sleep(0.1)
    process.kill()
    _, err = process.communicate(timeout=30)
    pytest.fail(f"no {rows} rows in {path.name} within {seconds} s: {err[-2000:]}")


# -- 7: a 10-million-point grid -----------------------------------------------------------------


def test_a_ten_million_point_grid_is_made_as_it_is_read():
    points = grid({"sigma_w": [1.0], "sigma_b": [i / 99 for i in range(100)], **SMALL}, seeds=100_000)
    assert len(points) == 10_000_000
    # the grid's order: σ_b, then the seed fastest
    assert (points[0].sigma_b, points[0].seed) == (0.0, 0)
    assert (points[123_456].sigma_b, points[123_456].seed) == (1 / 99, 23_456)
    assert (points[-1].sigma_b, points[-1].seed) == (1.0, 99_999)
    small = grid({"sigma_w": [1.0, 2.0], "sigma_b": [0.0, 0.1], **SMALL}, seeds=3)
    assert list(small) == [small[i] for i in range(len(small))] and small[2:4] == list(small)[2:4]


def test_a_ten_million_point_grid_streams_to_out_under_a_memory_cap(tmp_path):
    """The first rows reach the file within seconds under a 1.5 GiB cap (all points built first
    took gigabytes, and checking each setting before any work took minutes); Ctrl-C then leaves
    whole rows and exits 130."""
    out = tmp_path / "big.csv"
    process = _start(HUGE + ["--jobs", "1", "--out", str(out)], preexec_fn=_limited_memory(1536 * 2**20),
                     start_new_session=True)
    try:
        _wait_for_rows(out, 3, process, 60)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    rows = read_results(str(out))
    assert len(rows) >= 3 and all(row["error"] == "" for row in rows)
    assert [r["sigma_w"] for r in rows[:3]] == ["0.5"] * 3
    assert [float(r["sigma_b"]) for r in rows[:3]] == pytest.approx([0.0, 1 / 999, 2 / 999], rel=1e-11)


def test_resuming_a_large_results_file_holds_its_keys_not_its_text(tmp_path):
    """30,000 rows (17 MB): the file was read whole and its keys kept as strings (~60 MB);
    now it is read line by line and each key is a 16-byte digest."""
    import tracemalloc

    from initcli.sweep import ResultsFile, columns

    header = columns()
    path = tmp_path / "large.csv"
    number = "0.123456789012345"
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        for i in range(30_000):
            writer.writerow([f"{i / 7:.12g}", "0.0", "2", "4", "2", "", "tanh", "0", str(i), "dtype=float32"]
                            + [number] * (len(header) - 11) + [""])
    size = path.stat().st_size
    tracemalloc.start()
    try:
        results = ResultsFile(path, header)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert results.kept == 30_000 and len(results.done) == 30_000
    assert (f"{5 / 7:.12g}", "0.0", "2", "4", "2", "", "tanh", "0", "dtype=float32") in results.done
    assert (f"{5 / 7:.12g}", "0.0", "2", "4", "2", "", "tanh", "1", "dtype=float32") not in results.done
    assert peak < size / 4, (peak, size)


@pytest.mark.parametrize(("extra", "option"), [(["-f", "csv"], "--out"),
                                              (["--out", "h.csv", "--heatmap", "sigma_w,sigma_b"], "--heatmap"),
                                              (["--out", "h.parquet"], "--out")])
def test_a_grid_too_large_to_hold_in_memory_is_one_line(tmp_path, extra, option):
    """Rows for stdout or a heatmap are held in memory, and a .parquet file is rewritten whole
    after every task: refused before any work, naming the option."""
    done = subprocess.run([sys.executable, "-m", "initcli", *HUGE, *extra], capture_output=True, text=True,
                          env=ENV, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    one_error_line(done.stderr, option)
    assert os.listdir(tmp_path) == []


def _square(value: int) -> list[int]:
    return [value * value]


def _die_at(value: int, marker: str) -> list[int]:
    flag = Path(marker)
    if value == 5 and not flag.exists():
        flag.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    return [value]


def test_the_local_executor_reads_tasks_as_they_finish_and_returns_them_in_order():
    from initcli.executors import TASKS_PER_WORKER, LocalExecutor

    taken: list[int] = []

    def calls():
        for value in range(300):
            taken.append(value)
            yield {"value": value}

    delivered: list[tuple[int, int]] = []
    LocalExecutor(2).run(_square, calls(), lambda result: delivered.append((result[0], len(taken))))
    assert [result for result, _ in delivered] == [v * v for v in range(300)]
    # when result k arrives, at most the window beyond it has been read from the iterator
    assert all(read <= k + 1 + TASKS_PER_WORKER * 2 for k, (_, read) in enumerate(delivered))


def test_a_streamed_worker_killed_mid_run_is_an_error_not_a_hang(tmp_path):
    from initcli.executors import LocalExecutor

    started = time.monotonic()
    with pytest.raises(InitcliError, match="worker process died"):
        LocalExecutor(2).run(_die_at, ({"value": v, "marker": str(tmp_path / "flag")} for v in range(50)),
                             lambda result: None)
    assert time.monotonic() - started < 30


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_streamed_worker_outlives_a_killed_sweep(tmp_path):
    def children(pid: int) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    out = tmp_path / "k.csv"
    process = _start(HUGE + ["--jobs", "2", "--out", str(out)])
    _wait_for_rows(out, 3, process, 60)
    workers = children(process.pid)
    descendants = workers + [grandchild for w in workers for grandchild in children(w)]
    assert len(workers) >= 2
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(p) for p in descendants):
        time.sleep(0.1)
    assert not any(alive(p) for p in descendants)


# -- 12, 13: crafted results files --------------------------------------------------------------


def test_a_results_csv_with_a_field_over_128_kib_resumes(tmp_path):
    points = grid({"sigma_w": [0.8, 1.6], **SMALL})
    path = tmp_path / "r.csv"
    sweep(points, out=str(path))
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    rows[1][-1] = "x" * 200_000  # an error message longer than csv's default field limit
    with open(path, "w", newline="") as stream:
        csv.writer(stream, lineterminator="\n").writerows(rows)
    limit = csv.field_size_limit()
    again = sweep(points, out=str(path))
    assert again.skipped == 2 and again.rows == ()
    assert len(read_results(str(path))[0]["error"]) == 200_000
    assert csv.field_size_limit() == limit  # raised only while the file is read
    result = CliRunner().invoke(app, ARGS + ["--out", str(path)])
    assert result.exit_code == 0, result.output


def test_parquet_results_with_the_right_names_but_wrong_types_are_one_line(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    points = grid({"sigma_w": [0.8, 1.6], **SMALL})
    path = tmp_path / "r.parquet"
    sweep(points, out=str(path))
    table = pq.read_table(path)
    index = table.schema.get_field_index("depth")
    pq.write_table(table.set_column(index, "depth", pa.array(["two"] * table.num_rows)), path)
    before = path.read_bytes()
    with pytest.raises(InitcliError) as info:
        sweep(points, out=str(path))
    assert info.value.param == "out" and str(path) in str(info.value) and "depth" in str(info.value)
    result = CliRunner().invoke(app, ARGS + ["--out", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 2
    one_error_line(result.stderr, "--out")
    assert path.read_bytes() == before


# -- 18: a Parquet rewrite killed outright ------------------------------------------------------

KILLED_REWRITE = """
import os, signal, sys
import pyarrow.parquet as pq
from initcli.sweep import grid, sweep

def killed(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

pq.ParquetWriter.write_table = killed
sweep(grid({"sigma_w": [0.8, 1.6], "depth": [2], "width": [4], "batch": [2]}), out=sys.argv[1])
"""


def test_a_resume_removes_the_temporaries_a_killed_parquet_rewrite_left(tmp_path):
    pytest.importorskip("pyarrow")
    import fcntl

    path = tmp_path / "r.parquet"
    died = subprocess.run([sys.executable, "-c", KILLED_REWRITE, str(path)], env=ENV, timeout=120,
                          capture_output=True, text=True)
    assert died.returncode == -signal.SIGKILL, died.stderr
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".r.parquet.") and left[0].endswith(".tmp")
    # what must stay: another file's temporaries, look-alikes, a link, and one a live writer holds
    others = [".other.parquet.abcd1234.tmp", ".r.parquet.abcd1234.tmp.bak", "r.parquet.abcd1234.tmp",
              ".r.parquet.ABCD1234.tmp", ".r.parquet.abc.tmp"]
    for name in others:
        (tmp_path / name).write_bytes(b"keep")
    (tmp_path / "target").write_bytes(b"keep")
    (tmp_path / ".r.parquet.link1234.tmp").symlink_to(tmp_path / "target")
    held = tmp_path / ".r.parquet.held1234.tmp"
    held.write_bytes(b"being written")
    with open(held, "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        result = sweep(grid({"sigma_w": [0.8, 1.6], "depth": [2], "width": [4], "batch": [2]}), out=str(path))
    assert result.skipped == 0 and len(result.rows) == 2 and len(read_results(str(path))) == 2
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == sorted([*others, "target", ".r.parquet.link1234.tmp", held.name, "r.parquet"])


# -- 15, 21: Dask ------------------------------------------------------------------------------


def test_ctrl_c_on_a_local_dask_cluster_prints_no_worker_traceback(tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "d.csv"
    # 4,000 points: still running when Ctrl-C comes (40 could all finish first)
    process = _start(["sweep", "--sigma-w", "0.5:3:4000", "--depth", "20", "--width", "64", "--batch", "64",
                      "--executor", "dask", "--jobs", "2", "--out", str(out)], start_new_session=True)
    try:
        _wait_for_rows(out, 2, process, 90)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "initcli: interrupted"


def _free_port() -> int:
    with socket.socket() as free:  # a port nothing listens on once this closes
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


def test_a_tls_scheduler_with_nothing_listening_says_it_cannot_connect():
    pytest.importorskip("distributed")
    started = time.monotonic()
    result = CliRunner().invoke(app, ARGS + ["--executor", "dask", "--scheduler", f"tls://127.0.0.1:{_free_port()}"])
    assert result.exit_code == 2
    line = one_error_line(result.stderr, "--scheduler")
    assert "cannot reach" in line and "not a Dask scheduler" not in line
    assert time.monotonic() - started < 4


def test_a_tls_scheduler_without_tls_settings_says_so():
    pytest.importorskip("distributed")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        result = CliRunner().invoke(app, ARGS + ["--executor", "dask", "--scheduler",
                                                 f"tls://127.0.0.1:{server.getsockname()[1]}"])
    assert result.exit_code == 2
    line = one_error_line(result.stderr, "--scheduler")
    assert "TLS" in line and "not a Dask scheduler" not in line
