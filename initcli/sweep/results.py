"""A sweep's results file: rows appended as tasks finish (CSV lines or Parquet row groups),
and resumption — the keys of the rows already there, so that a rerun skips their points.

A row's key is its coordinates and its settings cell (`settings_text`), so a file resumed
with other settings runs every point again instead of mixing them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from ..errors import InitcliError
from .grid import file_cell, key_columns


def settings_text(options: dict) -> str:
    """The options that are not axes but change a row (dtype, input_std, the training's), as
    one cell such as 'dtype=float32;input_std=1.0': part of a row's key, so resuming a results
    file with other settings runs every point again instead of mixing them."""
    from ..render import csv_cell

    items = {**options.get("propagate", {}), **{f"train_{k}": v for k, v in options.get("train", {}).items()
                                                if k != "metric"}}
    return ";".join(f"{name}={csv_cell(items[name])}" for name in sorted(items) if items[name] is not None)


def _whole_lines_end(stream) -> int:
    """Where the last whole line of a binary file ends (0: none), found from its end."""
    position = stream.seek(0, os.SEEK_END)
    while position > 0:
        start = max(0, position - 65536)
        stream.seek(start)
        block = stream.read(position - start)
        found = block.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


class KeySet:
    """The keys of a results file's rows (tuples of cells, settings last) as 16-byte BLAKE2b
    digests in one sorted array: resuming a file of ten million rows takes 160 MB, where the
    cells as Python strings took gigabytes. Two keys share a digest with a chance of about
    rows² / 2¹²⁹. `settings` counts the rows of each settings cell."""

    def __init__(self, keys: Iterable[tuple[str, ...]] = ()) -> None:
        from collections import Counter

        digests = bytearray()
        self.settings: Counter = Counter()
        for key in keys:
            digests += self._digest(key)
            self.settings[key[-1]] += 1
        self._sorted = np.unique(np.frombuffer(digests, dtype="S16")) if digests else np.empty(0, dtype="S16")

    @staticmethod
    def _digest(key: tuple[str, ...]) -> bytes:
        return hashlib.blake2b("\x1f".join(key).encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __contains__(self, key: tuple[str, ...]) -> bool:
        digest = np.bytes_(self._digest(key))
        i = int(np.searchsorted(self._sorted, digest))
        return i < len(self._sorted) and self._sorted[i] == digest

    def __len__(self) -> int:
        return len(self._sorted)


@contextmanager
def _csv_fields_up_to(size: int) -> Iterator[None]:
    """The csv module's field limit (128 KiB unless set) raised to `size`, the length of the text
    read, which no field can exceed: a long error message is a field like any other, and the
    text is in memory already."""
    before = csv.field_size_limit()
    csv.field_size_limit(min(max(before, size + 1), sys.maxsize))
    try:
        yield
    finally:
        csv.field_size_limit(before)


class ResultsFile:
    """A CSV file that rows are appended to as tasks finish, whole lines only: each batch is
    one write of complete lines, then fsync, so a killed sweep leaves at worst a partial last
    line, which the next run cuts off before it appends."""

    def __init__(self, path: str | os.PathLike, header: Sequence[str]) -> None:
        self.path = os.fspath(path)
        self.header = list(header)
        self.done = KeySet()
        self.kept = 0
        self._read()

    def _read(self) -> None:
        """The keys of the file's whole rows, read line by line: the file is never held whole."""
        try:
            with open(self.path, "rb") as stream:
                end, size = _whole_lines_end(stream), stream.seek(0, os.SEEK_END)
        except FileNotFoundError:
            end = size = 0
        except OSError as exc:
            raise InitcliError("out", f"cannot read '{self.path}': {exc.strerror or exc}") from None
        if end != size:  # whole lines only: a killed run may have left half of one
            try:
                os.truncate(self.path, end)
            except OSError as exc:
                raise InitcliError("out", f"cannot repair '{self.path}': {exc.strerror or exc}") from None
        if end == 0:
            self._append(self._lines([self.header]))
            return
        try:
            with (open(self.path, encoding="utf-8", errors="replace", newline="") as text,
                  _csv_fields_up_to(end)):
                reader = csv.reader(text)
                header = next(reader)
                if header != self.header:
                    raise InitcliError("out", f"'{self.path}' holds other columns than this sweep writes; "
                                              "give another --out file")
                key = [header.index(c) for c in key_columns(header)]
                self.done = KeySet(tuple(fields_[i] for i in key) for fields_ in reader if len(fields_) == len(header))
        except OSError as exc:
            raise InitcliError("out", f"cannot read '{self.path}': {exc.strerror or exc}") from None
        except csv.Error as exc:
            raise InitcliError("out", f"cannot read '{self.path}' as CSV: {exc}") from None
        self.kept = sum(self.done.settings.values())

    @staticmethod
    def _lines(rows: Iterable[Sequence]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue().encode()

    def _append(self, data: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:  # one write for any sane size; a short write continues, still whole lines at the end
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # a half line left behind is cut off by the next run's resume
            raise InitcliError("out", f"could not write '{self.path}': {exc.strerror or exc}; the rows "
                                      "before are kept and a rerun resumes after them") from None

    def append(self, rows: Sequence[dict]) -> None:
        from ..render import csv_cell

        if rows:
            self._append(self._lines([[csv_cell(row.get(c)) for c in self.header] for row in rows]))


# Column types of a .parquet results file: fixed, so that a batch whose column is all empty
# (error, most often) still writes the file's type; every other column is float64.
_INT_COLUMNS = ("depth", "width", "batch", "seed", "run_seed")
_TEXT_COLUMNS = ("scheme", "activation", "residual_init", "param", "settings", "verdict", "reason", "theory_phase", "error")
RESULT_SUFFIXES = (".csv", ".parquet")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise InitcliError("out", "writing .parquet results needs pyarrow, which is not installed: "
                                  "pip install 'initcli[parquet]'") from None
    return pyarrow


def check_results_path(path: str | os.PathLike) -> None:
    """--out checked before any work: a .csv or .parquet file that may exist (it is resumed),
    pyarrow installed for .parquet."""
    from ..files import check_output

    target = check_output(path, "out", force=True, suffixes=RESULT_SUFFIXES)
    if target.suffix.lower() == ".parquet":
        _pyarrow()


class ParquetResults:
    """A .parquet file that grows by whole row groups as tasks finish: each batch's rows are
    one new row group after those already there, written to a temporary file renamed over
    the old one (`files.atomic_output`), so a killed sweep leaves the file as it was after
    the last batch, never half of one. Parquet keeps its index at the end of the file, so
    adding a row group means writing the file again; the rows already there are kept in
    memory as Arrow tables, not read back each time."""

    def __init__(self, path: str | os.PathLike, header: Sequence[str]) -> None:
        pa = _pyarrow()
        self.path = os.fspath(path)
        self.header = list(header)
        types = {c: pa.int64() if c in _INT_COLUMNS else pa.string() if c in _TEXT_COLUMNS else pa.float64()
                 for c in self.header}
        self.schema = pa.schema([(c, types[c]) for c in self.header])
        self.tables: list = []
        self.done = KeySet()
        self.kept = 0
        remove_stale_temporaries(self.path)
        if os.path.exists(self.path):
            try:
                table = pa.parquet.read_table(self.path)
            except (OSError, pa.ArrowException) as exc:
                raise InitcliError("out", f"cannot read '{self.path}' as Parquet: {str(exc)[:120]}") from None
            if table.schema.names != self.header:
                raise InitcliError("out", f"'{self.path}' holds other columns than this sweep writes; "
                                          "give another --out file")
            table = self._typed(table)
            self.tables.append(table)
            self.done = KeySet(tuple(file_cell(v) for v in values)
                               for values in zip(*(table.column(c).to_pylist() for c in key_columns(self.header))))
            self.kept = table.num_rows

    def _typed(self, table):
        """The file's columns as this sweep writes them, or one line naming the first that is not."""
        pa = _pyarrow()
        columns = []
        for field in self.schema:
            column = table.column(field.name)
            try:
                columns.append(column.cast(field.type))
            except (pa.ArrowException, TypeError, ValueError):
                raise InitcliError("out", f"'{self.path}' holds a {field.name} column of type {column.type}, "
                                          f"where this sweep writes {field.type}; give another --out file") from None
        return pa.table(columns, schema=self.schema)

    def append(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        pa = _pyarrow()
        from ..files import atomic_output

        batch = pa.table({c: pa.array([_plain_cell(row.get(c)) for row in rows], type=self.schema.field(c).type)
                          for c in self.header}, schema=self.schema)
        with (atomic_output(self.path, "out", force=True, suffix=".parquet") as handle,
              _owned(handle), pa.parquet.ParquetWriter(handle, self.schema) as writer):
            for table in [*self.tables, batch]:
                writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.tables.append(batch)


@contextmanager
def _owned(handle) -> Iterator[None]:
    """A lock on a temporary file while it is written: a resuming sweep removes the temporaries
    that no one holds (see `remove_stale_temporaries`). The kernel drops the lock with the
    process, however it dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: nothing marks the file, and nothing is removed
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    yield


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove what a killed rewrite of the results file `path` left: regular files in its folder
    named as `files.atomic_output` names its temporaries (.NAME.XXXXXXXX.tmp, the random part
    as `tempfile.mkstemp` makes it) that no live process holds locked (`_owned`). Other files
    are never touched; where locks cannot be read (not POSIX), nothing is removed."""
    import re
    import stat
    from pathlib import Path

    try:
        import fcntl
    except ImportError:
        return []
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    pattern = re.compile(re.escape(f".{target.name}.") + r"[a-z0-9_]{8}\.tmp")
    try:
        names = [name for name in os.listdir(folder) if pattern.fullmatch(name)]
    except OSError:
        return []
    removed = []
    for name in names:
        candidate = folder / name
        try:
            fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:  # gone already, a link, or not ours to read
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live sweep is writing it
                continue
            try:
                os.unlink(candidate)
                removed.append(str(candidate))
            except OSError:
                pass
        finally:
            os.close(fd)
    return removed


def _plain_cell(value):
    """A row value as Arrow takes it: numpy scalars as Python numbers."""
    return value.item() if hasattr(value, "item") else value


def results_file(path: str | os.PathLike, header: Sequence[str]):
    """The results file for `path`'s suffix: CSV lines or Parquet row groups."""
    if os.fspath(path).lower().endswith(".parquet"):
        return ParquetResults(path, header)
    return ResultsFile(path, header)


def read_results(path: str) -> list[dict]:
    """A results file's rows (CSV or Parquet) as strings, as the CSV spells them, in file order."""
    if str(path).lower().endswith(".parquet"):
        table = _pyarrow().parquet.read_table(path)
        return [{c: str(file_cell(v)) for c, v in row.items()} for row in table.to_pylist()]
    with open(path, newline="") as stream, _csv_fields_up_to(os.fstat(stream.fileno()).st_size):
        return list(csv.DictReader(stream))

