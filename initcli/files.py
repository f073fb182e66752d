"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from .errors import InitcliError


@contextmanager
def atomic_output(path: str | os.PathLike, param: str, *, force: bool = False,
                  suffix: str | None = None) -> Iterator[IO[bytes]]:
    """Yield a binary file in the target's folder; rename it over `path` only on success.

    An existing `path` is refused unless `force`; an unwritable folder is a one-line
    InitcliError naming `param`. On any exception (Ctrl-C included) the temporary file is
    removed and nothing is left behind.
    """
    target = Path(path)
    if suffix is not None and target.suffix.lower() != suffix:
        raise InitcliError(param, f"must name a {suffix} file, got '{target}'")
    if target.exists() and not force:
        raise InitcliError(param, f"'{target}' already exists; pass --force to overwrite it")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InitcliError(param, f"folder '{folder}' does not exist")
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InitcliError(param, f"cannot write in '{folder}': {exc.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp_name, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp_name)
        raise
