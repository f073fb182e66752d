"""Processes and BLAS threads change no bit of a result; workers report progress, raise
errors back, and stop with their parent."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from initcli.compare import compare
from initcli.errors import InitcliError
from initcli.parallel import run_all
from initcli.propagation import propagate
from initcli.threads import blas_threads, blas_threads_limited, set_blas_threads


def test_blas_threads_can_be_pinned_and_restored():
    before = blas_threads()
    if before is None:
        pytest.skip("no known BLAS library is loaded")  # never in CI: numpy ships OpenBLAS
    with blas_threads_limited(1):
        assert blas_threads() == 1
    assert blas_threads() == before


def test_compare_gives_the_same_bytes_whatever_jobs_and_threads():
    """Width 256 and batch 128 are large enough for OpenBLAS to split products across threads."""
    options = dict(depth=6, width=256, batch=128, theory=False)
    serial = compare(["he-normal", "xavier-normal", "lsuv"], ["relu", "tanh"], jobs=1, **options)
    parallel = compare(["he-normal", "xavier-normal", "lsuv"], ["relu", "tanh"], jobs=2, **options)
    before = blas_threads()
    try:
        set_blas_threads(2)
        threaded = compare(["he-normal", "xavier-normal", "lsuv"], ["relu", "tanh"], jobs=1, **options)
    finally:
        if before is not None:
            set_blas_threads(before)
    assert serial.rows() == parallel.rows() == threaded.rows()  # == on floats: to the last bit


def test_propagate_is_bit_reproducible_for_a_thread_count():
    first = propagate("he-normal", "relu", depth=8, width=256, batch=256).rows()
    second = propagate("he-normal", "relu", depth=8, width=256, batch=256).rows()
    assert first == second


def _double(value, progress=None):
    for _ in range(3):
        progress(1)
    return 2 * value


def _refuse(value):
    if value == 2:
        raise InitcliError("value", "two is refused")
    return value


def test_workers_report_progress_and_results_in_order():
    steps = []
    results = run_all(_double, [{"value": v} for v in range(5)], jobs=2, on_progress=steps.append)
    assert results == [0, 2, 4, 6, 8]
    assert sum(steps) == 15


def test_a_workers_error_reaches_the_parent_instead_of_hanging():
    started = time.monotonic()
    with pytest.raises(InitcliError, match="two is refused") as caught:
        run_all(_refuse, [{"value": v} for v in range(4)], jobs=2)
    assert caught.value.param == "value"
    assert time.monotonic() - started < 60


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_its_parent(signum):
    process = subprocess.Popen([sys.executable, "-m", "initcli", "compare", "--depth", "2000", "--width", "128",
                                "--batch", "128", "--jobs", "2", "-f", "csv"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = [p for p in _children(process.pid)]
    assert workers, "the workers never started"
    descendants = workers + [grandchild for w in workers for grandchild in _children(w)]
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode in (128 + signum, -signum)
    if signum == signal.SIGTERM:
        assert "Traceback" not in err
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in descendants):
        time.sleep(0.1)
    assert not any(_alive(p) for p in descendants)  # pool workers and the resource tracker


def test_jobs_is_validated():
    with pytest.raises(InitcliError, match="--jobs"):
        compare(["he-normal"], jobs=0, depth=2, width=8, batch=4)
    with pytest.raises(InitcliError, match="--jobs"):
        compare(["he-normal"], jobs=10**6, depth=2, width=8, batch=4)


def _die_once(value, marker):
    import pathlib

    flag = pathlib.Path(marker)
    if value == 1 and not flag.exists():
        flag.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    time.sleep(0.2)
    return value


def test_a_worker_killed_mid_run_is_an_error_not_a_hang(tmp_path):
    started = time.monotonic()
    with pytest.raises(InitcliError, match="worker process died"):
        run_all(_die_once, [{"value": v, "marker": str(tmp_path / "flag")} for v in range(4)], jobs=2)
    assert time.monotonic() - started < 30


def test_a_killed_worker_never_hangs_the_teardown():
    """A pool whose workers shared one task queue hung one time in three under pytest: its
    teardown waited for a lock an idle worker held while blocked reading. The case file kills a
    worker twenty times in a row inside pytest (where it hung), and must end within a bound."""
    case = Path(__file__).parent / "killed_worker_case.py"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(case)],
                          capture_output=True, text=True, timeout=180, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stdout[-3000:]
    assert "20 passed" in done.stdout
