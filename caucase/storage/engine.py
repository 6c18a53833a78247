"""The storage engine interface: what the storage modules ask of a database, whichever it is.

Two engines implement it: SQLite (``caucase.storage.database.Database``, a file path: the
zero-configuration default, held by one caucased) and PostgreSQL
(``caucase.storage.postgresql.PostgresDatabase``, a ``postgresql://`` URL: shared by several
caucased). A storage module is written once, in the portable SQL below, and runs on both:

- connections come from ``reading()`` (autocommit, one statement per snapshot) and
  ``writing(lock=...)`` (one transaction, committed before the block returns; a nested use
  by the same thread joins it); ``execute(sql, parameters)`` returns a cursor with
  ``fetchone()``, ``fetchall()``, ``rowcount``; ``executemany`` too;
- ``?`` placeholders; ``INSERT ... ON CONFLICT (...) DO NOTHING / DO UPDATE``; no SQLite-only
  functions, pragmas, ``rowid``, ``INSERT OR ...``, ``AUTOINCREMENT``, ``lastrowid``;
- ``CREATE TABLE IF NOT EXISTS`` / ``CREATE INDEX IF NOT EXISTS`` with INTEGER (64-bit),
  TEXT, BLOB (bytes in, bytes out) and REAL columns; an INTEGER PRIMARY KEY is always given
  explicitly (nothing assigns it on PostgreSQL);
- a check-then-write that must stay true across caucased nodes names a ``lock`` for its
  transaction (serialised across the cluster on PostgreSQL; SQLite has one writer anyway);
- a constraint violation raises ``IntegrityError`` and, on PostgreSQL, ends the transaction:
  leave the block on it (raise), or use ON CONFLICT for a conflict that is expected;
- changes that do not wait on each other's results go through ``execute_changes``,
  which PostgreSQL runs as one statement (what counts most in a transaction holding a
  lock).

``shared`` tells whether other processes may write the database meanwhile: in-memory caches
above this layer must then check the database (a generation read) before trusting
themselves.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from caucase.storage.copy import Source

# The one exception a storage module catches from a statement: a UNIQUE/PRIMARY KEY clash.
# The PostgreSQL engine raises a subclass of it.
IntegrityError = sqlite3.IntegrityError
URL_SCHEMES = ("postgresql://", "postgres://")
# One statement and its parameters.
Statement = tuple[str, Sequence[Any]]


class Cursor(Protocol):
    """The result of one statement."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """A connection as storage modules use it: statements with `?` parameters."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


def execute_changes(connection: Connection, statements: Sequence[Statement]) -> Cursor:
    """Run `statements` (INSERT, UPDATE or DELETE, none reading what another changes, no
    two changing one row) in order; the last one's cursor. A connection that can run them
    as one statement (PostgreSQL: ``execute_combined``) does; an error of any of them is
    then the statement's, and the transaction is over."""
    combined = getattr(connection, "execute_combined", None)
    if combined is not None:
        return combined(statements)  # type: ignore[no-any-return]
    cursor = None
    for sql, parameters in statements:
        cursor = connection.execute(sql, parameters)
    assert cursor is not None, "no statement"
    return cursor


class Engine(Protocol):
    """One database and every connection this process holds to it."""

    location: str
    # Other processes may write meanwhile (PostgreSQL; a non-exclusive SQLite file).
    shared: bool
    # Column values have their declared types (PostgreSQL). SQLite keeps whatever type a
    # writer gave: reference rows hold TEXT where we write BLOB.
    strict_types: bool

    def reading(self) -> contextlib.AbstractContextManager[Connection]: ...

    def writing(
        self, lock: str | None = None
    ) -> contextlib.AbstractContextManager[Connection]: ...

    def write_bookkeeping(self, statement: str, parameters: tuple[object, ...]) -> None:
        """Write a bookkeeping statement (one whose loss only costs housekeeping, and no
        answer waits on) the cheapest way the engine has: with a coming write batch when
        one is sure to come (SQLite, where each transaction costs a commit of its own), or
        alone in autocommit, outside any batch and its lock (PostgreSQL)."""
        ...

    def read_with_bookkeeping(
        self, query: Statement, bookkeeping: Statement, needed: Callable[[Any], bool]
    ) -> Any:
        """The first row of `query` (None: no row), and `bookkeeping` written (as by
        write_bookkeeping) when `needed` of that row. PostgreSQL sends both as one statement,
        so that the bookkeeping always runs there: its own conditions must leave alone
        whatever `needed` would have."""
        ...

    def snapshot(self) -> contextlib.AbstractContextManager[Source]: ...

    def has_table(self, connection: Connection, name: str) -> bool: ...

    def is_empty(self) -> bool: ...

    def column_types(self, connection: Connection, table: str) -> list[str] | None: ...

    def dump(self) -> Iterator[str]: ...

    def ping(self) -> None: ...

    def check_writable(self) -> None:
        """StorageError unless a short write transaction, rolled back, can run now on a
        fresh connection (health checks: nothing stays in the database)."""
        ...

    def close(self) -> None: ...

    def remove(self) -> None: ...


def is_url(location: str) -> bool:
    """Whether a --db value names a PostgreSQL database rather than an SQLite file."""
    return location.startswith(URL_SCHEMES)


def describe(location: str) -> str:
    """The location as messages show it: a URL without its password."""
    if not is_url(location):
        return location
    from caucase.storage.postgresql import redacted

    return redacted(location)


def open_database(location: str, *, exclusive: bool = False) -> Engine:
    """The engine for a --db value: PostgreSQL for a URL, else an SQLite file (created 0600
    when missing; with `exclusive`, held by this process alone: DatabaseInUse otherwise).
    Several processes share a PostgreSQL database: `exclusive` does not apply there."""
    if is_url(location):
        from caucase.storage.postgresql import PostgresDatabase

        return PostgresDatabase(location)
    from caucase.storage.database import Database

    return Database(location, exclusive=exclusive)


def create_database(location: str) -> Engine:
    """A new, empty database to fill (a copy, a restore), held exclusively when it is an
    SQLite file: FileExistsError when the file exists, or the PostgreSQL database already
    holds tables."""
    if not is_url(location):
        from caucase.storage.database import Database

        return Database.create(location)
    from caucase.storage.postgresql import PostgresDatabase

    database = PostgresDatabase(location)
    try:
        if not database.is_empty():
            raise FileExistsError(f"{describe(location)!r} is not empty")
    except BaseException:
        database.close()
        raise
    return database


def exists(location: str) -> bool:
    """Whether the database holds anything: an SQLite path exists, or a PostgreSQL database
    has tables. StorageError when PostgreSQL cannot be reached."""
    if not is_url(location):
        return os.path.lexists(location)
    from caucase.storage.postgresql import PostgresDatabase

    with PostgresDatabase(location) as database:
        return not database.is_empty()


__all__ = [
    "Connection",
    "Cursor",
    "Engine",
    "IntegrityError",
    "Statement",
    "create_database",
    "describe",
    "execute_changes",
    "exists",
    "is_url",
    "open_database",
]
