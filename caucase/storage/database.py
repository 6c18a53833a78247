"""The SQLite engine (caucase.storage.engine): the owner of one database file, its read
pool, its group committer, its lock.

Everything this process holds open on the file belongs to one Database object and is
closed with it; nothing is kept by a module-level registry. The CA instances sharing the
file (caucased's cau, cas and http_cas) share its owner. Database failures leave this
layer as StorageError, so that no layer above knows SQLite.

An exclusive owner holds an flock on the database file for its lifetime, so that a second
caucased (or caucased-manage about to write) is refused while the OS drops the lock of a
process that died. Closing a descriptor of the file drops every POSIX lock this process
holds on it, SQLite's included: the lock descriptor is therefore closed only once the last
connection of the owner is. For the same reason a process keeps one exclusive owner per
file, shared by every user of the file (as caucased's CAs share theirs).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from caucase.exceptions import CaucaseError, StorageError
from caucase.storage.connection import ConnectionPool, connect, create_private_file
from caucase.storage.copy import SQLiteSource
from caucase.storage.engine import Connection, Statement
from caucase.storage.group_commit import GroupCommitter, SQLiteDialect

SIDE_FILE_SUFFIXES = ("-journal", "-wal", "-shm")


class DatabaseInUse(CaucaseError):
    """Another process (a caucased, or caucased-manage writing) holds the database."""


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Raise sqlite3 errors of the block as StorageError (chained)."""
    try:
        yield
    except sqlite3.Error as error:
        raise StorageError(f"database error: {error}") from error


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


class _Connections:
    """The connections of one owner (lent to its pool, its committer, its dumps) and its
    lock descriptor, closed once the owner is closed and no connection is left.

    Kept apart from Database so that the pool and the committer, which use it, do not
    point back at their owner: an owner nobody closed is then freed as soon as it is
    dropped, its connections with it."""

    def __init__(self, path: str, lock_fd: int | None) -> None:
        self.path = path
        self._guard = threading.Lock()
        self._live = 0
        self._closed = False
        self._keep_lock = False
        self._lock_fd = lock_fd

    def open_connection(self) -> sqlite3.Connection:
        with self._guard:
            if self._closed:
                raise StorageError("database is closed")
            self._live += 1
        try:
            with storage_errors():
                return connect(self.path)
        except BaseException:
            self._forget()
            raise

    def close_connection(self, connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):  # closing rolls back whatever it held
            connection.close()
        self._forget()

    def _forget(self) -> None:
        with self._guard:
            self._live -= 1
        self._release_lock_if_unused()

    def close(self) -> None:
        with self._guard:
            self._closed = True
        self._release_lock_if_unused()

    @contextlib.contextmanager
    def lock_kept(self) -> Iterator[None]:
        """Keep the lock for the block, whatever closes meanwhile."""
        with self._guard:
            self._keep_lock = True
        try:
            yield
        finally:
            with self._guard:
                self._keep_lock = False
            self._release_lock_if_unused()

    def in_use(self) -> bool:
        with self._guard:
            return self._live > 0

    def _release_lock_if_unused(self) -> None:
        with self._guard:
            if not self._closed or self._live or self._keep_lock:
                return
            lock_fd, self._lock_fd = self._lock_fd, None
        if lock_fd is not None:
            os.close(lock_fd)


class Database:
    """One SQLite database file and every connection this process has to it."""

    strict_types = False

    def __init__(self, path: str, *, exclusive: bool = False) -> None:
        """Create the file (0600) if missing and switch it to WAL. With `exclusive`,
        DatabaseInUse when another process holds it exclusively."""
        self.path = self.location = path
        # Held exclusively, the file changes only through this process: its caches need
        # not look at the database.
        self.shared = not exclusive
        lock_fd = None
        try:
            create_private_file(path)
            if exclusive:
                lock_fd = _lock(path)
                self._identity = _identity(os.fstat(lock_fd))
            else:
                self._identity = _identity(os.stat(path))
        except OSError as error:
            if lock_fd is not None:
                os.close(lock_fd)
            raise StorageError(f"cannot open database {path!r}: {error.strerror}") from None
        self._connections = _Connections(path, lock_fd)
        self._pool = ConnectionPool(self._connections)
        self._committer = GroupCommitter(self._connections, SQLiteDialect())
        # An owner dropped without close() still closes everything (sqlite3 connections
        # sit in reference cycles: left to themselves they wait for the cyclic GC).
        self._close = weakref.finalize(
            self, _close_all, self._committer, self._pool, self._connections
        )
        try:
            with self.reading() as connection:
                # WAL side files inherit the database file's mode (SQLite's own rule): 0600.
                connection.execute("PRAGMA journal_mode=WAL")
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, path: str) -> Database:
        """A new, empty, exclusive database; FileExistsError if `path` exists. The file
        is removed again if it cannot be opened (unless another process took it)."""
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        try:
            return cls(path, exclusive=True)
        except StorageError:
            _remove_files(path)
            raise

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open_connection(self) -> sqlite3.Connection:
        """A connection of this owner's, for a use of its own (a restore, a dump);
        give it back with close_connection."""
        return self._connections.open_connection()

    def close_connection(self, connection: sqlite3.Connection) -> None:
        self._connections.close_connection(connection)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A pooled autocommit connection for reads."""
        with storage_errors(), self._pool.connection() as connection:
            yield connection

    def write_bookkeeping(self, statement: str, parameters: tuple[object, ...]) -> None:
        """Leave a bookkeeping statement to the next write batch if one is sure to come
        (GroupCommitter.write_soon), else write it in a transaction of its own."""
        if not self._committer.write_soon(statement, parameters):
            with self.writing() as connection:
                connection.execute(statement, parameters)

    def read_with_bookkeeping(
        self, query: Statement, bookkeeping: Statement, needed: Callable[[Any], bool]
    ) -> Any:
        """The first row of `query`, then `bookkeeping` if `needed` of it (Engine)."""
        with self.reading() as connection:
            row = connection.execute(*query).fetchone()
        if row is not None and needed(row):
            statement, parameters = bookkeeping
            self.write_bookkeeping(statement, tuple(parameters))
        return row

    @contextlib.contextmanager
    def writing(self, lock: str | None = None) -> Iterator[sqlite3.Connection]:
        """One writer's transaction, committed before this returns (group commit).

        `lock` needs nothing here: SQLite lets one writer at a time into the file, and
        BEGIN IMMEDIATE takes its write lock before the first read."""
        self._check_file()
        with storage_errors(), self._committer.transaction() as connection:
            yield connection

    def _check_file(self) -> None:
        """Refuse to write once the file at the path is gone or another one: the writes
        would land in an unlinked file and be lost."""
        try:
            current = _identity(os.stat(self.path))
        except OSError as error:
            raise StorageError(f"database file unusable: {error.strerror}") from None
        if current != self._identity:
            raise StorageError("database file was replaced while open")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[SQLiteSource]:
        """Every table, read from one snapshot for the block."""
        with storage_errors():
            connection = self.open_connection()
            try:
                connection.execute("BEGIN")
                yield SQLiteSource(connection)
            finally:
                connection.rollback()
                self.close_connection(connection)

    @staticmethod
    def has_table(connection: Connection, name: str) -> bool:
        row = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def is_empty(self) -> bool:
        with self.reading() as connection:
            (count,) = connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return bool(count == 0)

    @staticmethod
    def column_types(connection: Connection, table: str) -> None:
        """SQLite keeps each value's own type: nothing to convert to."""
        return None

    def ping(self) -> None:
        """StorageError unless the file can be read."""
        with self.reading() as connection:
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()

    def check_writable(self) -> None:
        """StorageError unless the file, its WAL and its directory may be written (what
        the kernel says: a file made read-only, or immutable for root) and a new
        connection writes a table in a transaction it rolls back.

        An open descriptor keeps writing after a chmod: SQLite would reuse it, so the
        file's mode is checked by its path."""
        self._check_file()
        folder = os.path.dirname(os.path.abspath(self.path))
        for path in (self.path, self.path + "-wal", folder):
            if os.path.exists(path) and not os.access(path, os.W_OK):
                raise StorageError("database file not writable")
        with storage_errors():
            connection = sqlite3.connect(self.path, timeout=1, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("CREATE TABLE caucase_health_probe (probe INTEGER)")
                connection.execute("ROLLBACK")
            finally:
                connection.close()

    def dump(self) -> Iterator[str]:
        """SQL statements rebuilding the whole file (every prefix), from one snapshot.

        A dedicated connection holds one read transaction for the whole dump, so that
        concurrent writers neither block it nor show through half-way."""
        with storage_errors():
            connection = self.open_connection()
            try:
                connection.execute("BEGIN")
                # The snapshot starts with the first read, not with BEGIN.
                connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                yield from connection.iterdump()
                connection.rollback()
            finally:
                self.close_connection(connection)

    def close(self) -> None:
        """Close every connection (those in use once given back), then drop the lock."""
        self._close()

    def remove(self) -> None:
        """Close, then delete the file and its side files while still holding the lock,
        so that no other process opens them in between. StorageError if a connection of
        this process is still in use (nothing is deleted under a live connection)."""
        with self._connections.lock_kept():
            self.close()
            if self._connections.in_use():
                raise StorageError("database still in use, not removed")
            _remove_files(self.path)


def _close_all(
    committer: GroupCommitter[sqlite3.Connection], pool: ConnectionPool, connections: _Connections
) -> None:
    committer.close()
    pool.close()
    connections.close()


def _remove_files(path: str) -> None:
    for name in (path, *(path + suffix for suffix in SIDE_FILE_SUFFIXES)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _lock(path: str) -> int:
    """A descriptor of the file holding an exclusive flock; DatabaseInUse if taken."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatabaseInUse(
            f"database {path!r} is in use by another caucased or caucased-manage"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd
