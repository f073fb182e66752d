"""Every option of every command against values that are malformed, out of range, or finite
but absurd: exit 0 with output, or exit 2 with one line naming an option; never a traceback,
never a numpy warning on stderr. The options are read from the commands themselves, so a new
option is fuzzed without anyone remembering to add it."""

from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from initcli.cli import app

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
# small enough that any accepted value finishes at once
BASE = {
    "sample": ["--sizes", "8,8"],
    "propagate": ["--depth", "2", "--width", "8", "--batch", "4"],
    "compare": ["--depth", "2", "--width", "8", "--batch", "4", "--schemes", "he-normal,zeros", "--jobs", "1"],
    "jacobian": ["--depth", "2", "--width", "8", "--batch", "4"],
    "train": ["--depth", "1", "--width", "8", "--samples", "32", "--epochs", "2", "--schemes", "he-normal",
              "--jobs", "1"],
    "gain": ["--activation", "relu,tanh"],
    "critical": [],
    "schemes": [],
    "inspect": ["{weights}"],
    "probe": ["{models}:mlp", "--kwargs", '{"width": 8, "depth": 2}', "--input-shape", "8", "--batch", "4"],
    "coordcheck": ["--widths", "8,16", "--seeds", "1", "--steps", "1", "--batch", "4"],
    "sweep": ["--sigma-w", "1,2", "--depth", "2", "--width", "8", "--batch", "4", "--jobs", "1"],
}
BAD_NUMBERS = ["0", "-1", "1e308", "1e39", "1e-300", "nan", "abc", "99999999999999999999"]
BAD_TEXT = ["", "nope", "\x00", "a" * 300]
# values that would make an accepted run long or large by design (a size, a count): they are
# refused or bounded by the memory guard, which is what is checked here
SKIP = {"--seed"}  # any integer ≥ 0 is a valid seed


def _kind(param) -> str:
    """'int', 'float' or 'str': typer ≥ 0.25 runs on a vendored click whose options have no `.type`."""
    if hasattr(param, "bare_type"):
        return str(param.bare_type())
    name = type(param.type).__name__
    return "int" if "Int" in name else "float" if "Float" in name else "str"


def _options():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            if getattr(param, "param_type_name", "option") != "option" or param.is_flag or param.name == "help":
                continue
            flag = max(param.opts, key=len)
            if flag in SKIP:
                continue
            numeric = _kind(param) in ("int", "float")
            for value in BAD_NUMBERS if numeric else BAD_TEXT:
                yield name, flag, value


CASES = list(_options())
assert len(CASES) > 300, "the fuzz found no options: the way options are read from the app has changed"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A small weight file for inspect: two He-normal matrices that chain."""
    import numpy as np

    path = tmp_path_factory.mktemp("fuzz") / "model.npz"
    rng = np.random.default_rng(0)
    np.savez(path, **{"0.weight": rng.normal(0, (2 / 16) ** 0.5, (16, 16)).astype(np.float32),
                      "1.weight": rng.normal(0, (2 / 16) ** 0.5, (8, 16)).astype(np.float32)})
    return str(path)


@pytest.mark.parametrize(("command", "flag", "value"), CASES, ids=[f"{c}{f}={v[:12]!r}" for c, f, v in CASES])
def test_option_value_never_crashes(command, flag, value, tmp_path, monkeypatch, weights):
    monkeypatch.chdir(tmp_path)  # paths the fuzz names land here
    models = str(Path(__file__).with_name("probe_models.py"))
    args = [command, *(item.replace("{weights}", weights).replace("{models}", models) for item in BASE[command])]
    if flag in BASE[command]:
        index = args.index(flag)
        args[index + 1] = value
    else:
        args += [flag, value]
    if "--format" not in args and "-f" not in args:
        args += ["--format", "csv"]
    result = CliRunner().invoke(app, args, env=ENV)
    assert "Traceback" not in result.output and "Warning:" not in result.stderr, (args, result.output)
    assert result.exit_code in (0, 2), (args, result.exit_code, result.output, result.exception)
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("initcli: error:"), (args, result.stderr)
        assert "--" in lines[0] or "GiB" in lines[0], (args, lines[0])
