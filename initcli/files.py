"""Reading and writing the user's files: never half a file, never a surprise.

Outputs are checked before any work (`check_output`), so a refused command writes nothing
and a long run is never thrown away at the end; then written to a temporary file in the
target's folder and renamed over the target only when complete (`atomic_output`). A
temporary file is removed on any exception, Ctrl-C and the CLI's SIGTERM/SIGHUP included; the
signals are held back (`interrupts.held`) while one is created or renamed, so no interrupt can
land between creating it and knowing its name.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from .errors import InitcliError
from .interrupts import held

_TMP_NAME_ROOM = 24  # what the temporary name adds to the target's: a dot, a random part, ".tmp"
_pending: set[str] = set()  # temporary files not yet renamed; removed by `remove_pending` at exit


def remove_pending() -> None:
    """Remove temporary files whose writing was cut short (called by the CLI on the way out)."""
    for name in list(_pending):
        with suppress(OSError):
            os.unlink(name)
        _pending.discard(name)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _checked_path(path: str | os.PathLike, param: str) -> Path:
    """A path the OS can take: not empty, no NUL byte (which every system call refuses)."""
    text = os.fspath(path)
    if not text or (b"\0" if isinstance(text, bytes) else "\0") in text:
        raise InitcliError(param, f"must be a file path, got {text!r}")
    return Path(text)


def check_input_file(path: str | os.PathLike, param: str) -> Path:
    """A regular file that exists and can be read; a folder, FIFO or device is refused
    before it is opened (opening a FIFO would block until a writer comes)."""
    target = _checked_path(path, param)
    try:
        info = target.stat()
    except FileNotFoundError:
        raise InitcliError(param, f"'{target}': no such file") from None
    except OSError as exc:
        raise InitcliError(param, f"'{target}': {_why(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InitcliError(param, f"'{target}' is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InitcliError(param, f"'{target}' is not a regular file (a pipe, socket or device)")
    if not os.access(target, os.R_OK):
        raise InitcliError(param, f"'{target}': permission denied")
    return target


def check_output(path: str | os.PathLike, param: str, *, force: bool = False,
                 suffixes: Sequence[str] | None = None, try_writing: bool = True) -> Path:
    """Everything that can be known about writing `path` before the work: its suffix, that
    it is not a folder, that it does not exist (a dangling link counts) unless `force`, that
    its name fits the file system, and that its folder exists and (`try_writing`) takes new
    files."""
    target = _checked_path(path, param)
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise InitcliError(param, f"must name a {' or '.join(suffixes)} file, got '{target}'")
    if not target.name or target.name in (".", ".."):
        raise InitcliError(param, f"must name a file, got '{target}'")
    folder = target.parent if str(target.parent) else Path(".")
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX") if folder.is_dir() else 255
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(target.name)) + _TMP_NAME_ROOM > name_max:
        raise InitcliError(param, f"file name too long ({len(os.fsencode(target.name))} bytes; at most "
                                  f"{name_max - _TMP_NAME_ROOM} here)")
    try:
        exists = os.path.lexists(target)
        is_dir = target.is_dir()
    except OSError as exc:
        raise InitcliError(param, f"'{target}': {_why(exc)}") from None
    if is_dir:
        raise InitcliError(param, f"'{target}' is a folder; name a file inside it")
    if exists and target.exists() and not target.is_file():
        raise InitcliError(param, f"'{target}' is not a regular file (a pipe, socket or device); name a file")
    if exists and not force:
        raise InitcliError(param, f"'{target}' already exists; pass --force to overwrite it")
    if not folder.is_dir():
        raise InitcliError(param, f"folder '{folder}' does not exist")
    if not try_writing:
        return target
    try:  # as root os.access says yes to everything: try the real thing
        handle, probe = tempfile.mkstemp(prefix=".initcli-probe.", dir=folder)
    except OSError as exc:
        raise InitcliError(param, f"cannot write in '{folder}': {_why(exc)}") from None
    os.close(handle)
    with suppress(OSError):
        os.unlink(probe)
    return target


@contextmanager
def atomic_output(path: str | os.PathLike, param: str, *, force: bool = False,
                  suffix: str | Sequence[str] | None = None) -> Iterator[IO[bytes]]:
    """Yield a binary file in the target's folder; rename it over `path` only on success.

    The target is checked as `check_output` does. A failed write (a full disk, a quota) is
    a one-line InitcliError naming `param`, and the target keeps what it had. On any
    exception the temporary file is removed and nothing is left behind.
    """
    suffixes = [suffix] if isinstance(suffix, str) else suffix
    # the temporary file below is the write test: no probe file first
    target = check_output(path, param, force=force, suffixes=suffixes, try_writing=False)
    folder = target.parent if str(target.parent) else Path(".")
    with held():
        try:
            handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise InitcliError(param, f"cannot write in '{folder}': {_why(exc)}") from None
        _pending.add(tmp_name)
    try:
        try:
            with os.fdopen(handle, "wb") as tmp:
                yield tmp
                tmp.flush()
                os.fsync(tmp.fileno())
        except OSError as exc:
            if exc.filename is None or exc.filename == tmp_name:  # our file, not one the writer read
                raise InitcliError(param, f"could not write '{target}': {_why(exc)}; "
                                          "it was left as it was") from None
            raise
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from other users
        with held():
            if not force and os.path.lexists(target):  # appeared while we worked
                raise InitcliError(param, f"'{target}' already exists; pass --force to overwrite it")
            try:
                os.replace(tmp_name, target)
            except OSError as exc:
                raise InitcliError(param, f"could not write '{target}': {_why(exc)}; "
                                          "it was left as it was") from None
            _pending.discard(tmp_name)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp_name)
        _pending.discard(tmp_name)
        raise
