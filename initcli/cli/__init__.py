"""The `initcli` command: parse options, call the domain, render. Nothing else.

One module per command group (`sampling`: schemes, sample; `stacks`: propagate, compare,
jacobian; `meanfield`: gain, critical; `training`: train) over the option groups of
`options`. numpy and rich are imported inside the commands, so `initcli --help` and
`--version` stay fast.

Every way out is one line on stderr and a known exit code: 0 done, 2 bad input (usage,
files, a full disk), 130 Ctrl-C, 128+N for signal N (SIGTERM, SIGHUP), 1 a closed pipe
(quietly, as click does).
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import suppress
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import InitcliError
from ..interrupts import Terminated

# Typer raises click's exceptions, from click itself or (typer >= 0.25) from its vendored copy.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_Abort = next((c for c in typer.Abort.__mro__ if c.__name__ == "Abort"), typer.Abort)


class _OneLineErrors(TyperGroup):
    """Every usage error, ours or click's, as one line on stderr with exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from ..files import remove_pending

        try:
            code = super().main(args=args, prog_name=prog_name or "initcli", complete_var=complete_var,
                                standalone_mode=False, **extra)
            _flush_stdout()
        except InitcliError as exc:
            code = _fail(str(exc))
        except _ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `initcli`: the help, not an error
                code = _print_help(exc.format_message())
            else:
                code = _fail(exc.format_message())
        except (_Abort, KeyboardInterrupt):
            code = 130
        except Terminated as exc:
            code = 128 + exc.signum
            _say(f"initcli: terminated by {signal.Signals(exc.signum).name}")
        except BrokenPipeError:
            code = _closed_pipe()
        except OSError as exc:
            code = _fail(_os_error_line(exc))
            _silence_stdout()
        finally:
            remove_pending()
        if code == 130:  # typer turns Ctrl-C into exit code 130, silently
            _say("initcli: interrupted")
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _say(line: str) -> None:
    """A line on stderr; nowhere when stderr is closed (never onto stdout, whose bytes are data)."""
    if sys.stderr is None:
        return
    from ..text import printable

    with suppress(OSError, ValueError):  # stderr went away: nowhere left to say it
        print(printable(line), file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    _say(f"initcli: error: {' '.join(message.split())}")
    return 2


def _os_error_line(exc: OSError) -> str:
    """An OSError no command turned into its own line: the file it names (read or written,
    which only the command knows), else the output stream, the one file without a name."""
    why = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        return f"'{os.fsdecode(exc.filename)}': {why}"
    return f"cannot write the output: {why}"


def _print_help(text: str) -> int:
    if sys.stdout is None:
        return 0
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        return _closed_pipe()
    return 0


def _flush_stdout() -> None:
    if sys.stdout is not None:
        sys.stdout.flush()


def _closed_pipe() -> int:
    """The reader went away (`initcli … | head`): stop quietly, as click does."""
    _silence_stdout()
    return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    if sys.stdout is None:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _prepare_streams() -> None:
    """Signals become exceptions; output that cannot encode a character gets a '?' instead of
    a crash (PYTHONIOENCODING=ascii); a closed stdout is refused before any work."""
    from ..interrupts import install

    install()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            try:
                "·×²▁█".encode(stream.encoding or "ascii")
            except (UnicodeEncodeError, LookupError):
                stream.reconfigure(errors="replace")


app = typer.Typer(
    cls=_OneLineErrors,
    name="initcli",
    help="Will this weight initialisation train? Sample schemes, push signals through deep stacks, "
         "and see vanishing, exploding and symmetric inits in numbers.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"initcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Will this weight initialisation train?"""
    if sys.stdout is None:
        raise InitcliError(None, "standard output is closed; give the command somewhere to write")


def main() -> None:
    _prepare_streams()
    app()


# the command modules register themselves on `app`
from . import sampling, stacks, meanfield, training, inspecting, sweeping, probing, coordchecking  # noqa: E402, F401, I001  (the order of --help)
