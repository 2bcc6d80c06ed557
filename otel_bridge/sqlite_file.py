"""The SQLite files the bridge keeps acknowledged calls in (the durable queue, the log join's pending
store): created whole, checked when opened, and set aside when damaged, so that a damaged file never
stops the bridge and never silently loses what it holds.

    use(work)          -> work(connection) on the file, opened when first used: checked (PRAGMA quick_check),
                          a damaged one renamed aside to PATH.damaged-<UTC time> with its -wal and the rows
                          that can still be read copied into a new file in its place; damage that work meets
                          while running is set aside the same way, and work runs again on the new file
    transaction(steps) -> statements committed together through use(), rolled back as a whole

A new file is built under a temporary name and renamed into place, so a file that is empty or not a
database at PATH was damaged (truncated, overwritten), not half-created. The files are opened in
exclusive locking mode: the directory lock already keeps other bridges out, and without a shared-memory
file an existing queue opens with no write at all, on a full disk too.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from dataclasses import dataclass, field
from pathlib import Path

from otel_bridge.private_files import open_private

__all__ = ["FileState", "SqliteFile", "describe_error", "is_damage", "is_disk_full"]

log = logging.getLogger("otel_bridge.sqlite_file")

T = TypeVar("T")

# Error codes that mean the file's content is wrong (not the disk, not a lock).
_DAMAGE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB} if hasattr(sqlite3, "SQLITE_CORRUPT") else {11, 26}
_FULL = 13  # SQLITE_FULL
# A probe past a damaged page doubles its stride, so a damaged root gives up after this many.
_MAX_PROBES = 64


def is_damage(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF in _DAMAGE


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == _FULL


def describe_error(exc: BaseException, directory: Path) -> str:
    """What went wrong, in the operator's terms: a full disk says so, with the space left."""
    if is_disk_full(exc):
        try:
            stat = os.statvfs(directory)
            free = f"{stat.f_bavail * stat.f_frsize} bytes free"
        except OSError:
            free = "free space unknown"
        return f"disk full at {directory}: {free}"
    if is_damage(exc):
        return f"damaged file in {directory}: {exc}"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class FileState:
    """What /readyz and the metrics read of one file."""

    name: str  # "queue", "pending": the label in metrics
    write_error: str | None = None  # while writes fail: the reason
    set_aside: list[str] = field(default_factory=list)  # damaged files renamed aside since start


class SqliteFile:
    """One SQLite file of acknowledged data. `schema` creates its tables in a new file; `valid` says
    whether a row read back from a damaged file is whole (a damaged page can also read as wrong data)."""

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        config_key: str,
        schema: Callable[[sqlite3.Connection], object],
        tables: dict[str, Callable[[tuple[Any, ...]], bool]],
        synchronous: str,
        prepare: Callable[[sqlite3.Connection], object] = lambda db: None,
    ) -> None:
        self.path = path
        self.state = FileState(name)
        self._config_key = config_key
        self._schema = schema
        self._tables = tables  # table -> valid(row)
        self._synchronous = synchronous
        self._prepare = prepare  # checks and settings for each connection to a whole file; may raise
        self._db: sqlite3.Connection | None = None

    @property
    def opened(self) -> bool:
        return self._db is not None

    def use(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """work(connection). The file is opened first if it is not yet (again after a full disk kept it
        from being created); when work finds it damaged, it is set aside and work runs on the new file."""
        if self._db is None:
            self._db = self._prepared(self._open())
        try:
            return work(self._db)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            self.close()
            self._db = self._prepared(self._set_aside(str(exc)))
            return work(self._db)

    def transaction(self, steps: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """Each (statement, parameter rows) of `steps`, committed together or not at all."""
        self.use(lambda db: _transaction(db, steps))

    def remove(self) -> None:
        """Close and delete the file; the next use() creates a new one."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _prepared(self, db: sqlite3.Connection) -> sqlite3.Connection:
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection:
        """The file, checked; a damaged one is set aside and replaced by what could be read of it.
        Raises sqlite3.Error/OSError when no file can be opened (a full disk and no file yet)."""
        if not self.path.exists():
            return self._create()
        db = self._connect(self.path)
        try:
            problem = _check(db)  # before WAL is entered: that would write to an empty file
            if problem is None:
                _enter_wal(db, self._synchronous)
                return db
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                db.close()
                raise
            problem = str(exc)
        db.close()
        return self._set_aside(problem)

    def _set_aside(self, problem: str) -> sqlite3.Connection:
        """Rename the damaged file aside (closed by the caller) and open a new one with its readable rows."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        os.replace(self.path, aside)
        for suffix in ("-wal", "-journal"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{aside}{suffix}"))
        Path(f"{self.path}-shm").unlink(missing_ok=True)
        self.state.set_aside.append(str(aside))
        rows, lost = self._salvage(aside)
        db = self._create(rows)
        recover = (
            "it was empty: what it held is gone" if aside.stat().st_size == 0
            else f"to recover more of it: sqlite3 {aside} .recover | sqlite3 recovered.sqlite3"
        )
        log.error(
            "%s (%s) was damaged (%s): set aside as %s; %d rows were read back into a new %s%s; %s",
            self.path, self._config_key, problem, aside, sum(len(r) for r in rows.values()), self.path.name,
            f"; {lost} damaged stretches of rows could not be read" if lost else "", recover,
        )
        return db

    def _salvage(self, aside: Path) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
        """The rows of each table that read back whole, and how many did not (as far as that is known)."""
        rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in self._tables}
        lost = 0
        try:
            # Opened like the live file (exclusive, so no -shm is needed): its WAL holds committed rows too.
            db = self._connect(aside)
            # Lets SQLite read a truncated file (its header counts more pages than there are) up to its end.
            db.execute("PRAGMA writable_schema=ON")
            try:
                for table, valid in self._tables.items():
                    for row, readable in _readable_rows(db, table):
                        if readable and valid(row):
                            rows[table].append(row)
                        else:
                            lost += 1
            finally:
                db.close()
        except (sqlite3.Error, OSError) as exc:
            log.error("nothing could be read back from %s: %s", aside, describe_error(exc, aside.parent))
        return rows, lost

    def _create(self, rows: dict[str, list[tuple[Any, ...]]] | None = None) -> sqlite3.Connection:
        """A new file with the schema (and `rows`), built aside and renamed into place."""
        building = self.path.with_name(self.path.name + ".new")
        for stale in (building, Path(f"{building}-wal"), Path(f"{building}-journal")):
            stale.unlink(missing_ok=True)
        try:
            open_private(building).close()  # 0600 before SQLite opens it: its -wal gets the same mode
            db = sqlite3.connect(building, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=DELETE")  # one file to rename; WAL is switched on after
                db.execute("BEGIN")
                self._schema(db)
                for table, table_rows in (rows or {}).items():
                    if table_rows:
                        marks = ",".join("?" * len(table_rows[0]))
                        db.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
                db.execute("COMMIT")
            finally:
                db.close()
            _fsync(building)
            os.replace(building, self.path)
            _fsync(self.path.parent)
        except BaseException:
            building.unlink(missing_ok=True)
            Path(f"{building}-journal").unlink(missing_ok=True)
            raise
        db = self._connect(self.path)
        _enter_wal(db, self._synchronous)
        return db

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA locking_mode=EXCLUSIVE")  # before WAL is entered: no -shm file
        return db


def _transaction(db: sqlite3.Connection, steps: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    db.execute("BEGIN")
    try:
        for statement, parameters in steps:
            db.executemany(statement, parameters)
        db.execute("COMMIT")
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk at COMMIT).
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        raise


def _enter_wal(db: sqlite3.Connection, synchronous: str) -> None:
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")


def _check(db: sqlite3.Connection) -> str | None:
    """None when the file is whole, else what is wrong with it."""
    if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        return "it is empty: no tables (a truncated or overwritten file)"
    problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    return None if problems == ["ok"] else "; ".join(problems).replace("\n", "; ")


def _readable_rows(db: sqlite3.Connection, table: str) -> Iterator[tuple[tuple[Any, ...], bool]]:
    """(row, True) for each row of `table` that reads back, in rowid order, stepping past damaged pages;
    ((), False) once for each stretch that could not be read. Nothing when the table itself is gone."""
    start = -(2**63)
    stride = 1
    probes = 0
    failed = False
    query = f"SELECT rowid, * FROM {table} WHERE rowid >= ? ORDER BY rowid"
    try:
        db.execute(f"SELECT 1 FROM {table} LIMIT 0")
    except sqlite3.DatabaseError:
        return
    while probes < _MAX_PROBES:
        try:
            for row in db.execute(query, (start,)):
                failed = False
                stride = 1
                start = row[0] + 1
                yield row[1:], True
            return
        except sqlite3.DatabaseError:
            if not failed:
                yield (), False
            failed = True
            probes += 1
            start += stride
            stride *= 2
            if start >= 2**63:
                return


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
