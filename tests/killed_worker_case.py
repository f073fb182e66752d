"""Run by test_parallel.test_a_killed_worker_never_hangs_the_teardown in its own pytest (not
collected on its own: the name does not start with test_). Each case kills one worker of two
while the other has nothing left to do, through both entry points."""

import os
import signal
from pathlib import Path

import pytest

from initcli.errors import InitcliError
from initcli.executors import LocalExecutor
from initcli.parallel import run_all


def _die_at(value: int, marker: str) -> int:
    flag = Path(marker)
    if value == 5 and not flag.exists():
        flag.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    return value


@pytest.mark.parametrize("attempt", range(10))
@pytest.mark.parametrize("entry", ["streamed", "run_all"])
def test_a_killed_worker_is_an_error(tmp_path, attempt, entry):
    calls = [{"value": v, "marker": str(tmp_path / "flag")} for v in range(50)]
    with pytest.raises(InitcliError, match="worker process died"):
        if entry == "streamed":
            LocalExecutor(2).run(_die_at, iter(calls), lambda result: None)
        else:
            run_all(_die_at, calls, jobs=2)
