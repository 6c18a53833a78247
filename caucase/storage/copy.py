"""Copying a whole database between engines: the tables and indexes as their schema
statements define them, then every row, read from one snapshot of the source.

It serves ``caucased-manage --copy-to`` (SQLite to PostgreSQL and back), restoring a backup
into PostgreSQL (through an in-memory SQLite database, where the statement guard runs), and
the PostgreSQL engine's dumps (into an in-memory SQLite database, dumped as SQLite dumps).
The target takes the source's schema statements as written for SQLite; a PostgreSQL target
rewrites them (caucase.storage.postgresql_sql) and gets each value in its column's type
(SQLite may hold TEXT where a column is meant for bytes, or a number as text).
"""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from caucase.exceptions import CaucaseError


class CopyError(CaucaseError):
    """A value of the source does not fit the target: nothing was copied."""


@dataclasses.dataclass(frozen=True)
class SchemaEntry:
    """One table or index: its kind, name, table and SQLite-dialect CREATE statement."""

    kind: str
    name: str
    table: str
    sql: str


class Source(Protocol):
    """A database read from one snapshot."""

    def entries(self) -> list[SchemaEntry]: ...

    def rows(self, table: str) -> Iterator[tuple[Any, ...]]: ...


class Target(Protocol):
    """A connection in a write transaction, and the column types values must take."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


class SQLiteSource:
    """The tables and indexes of an SQLite connection (its snapshot is the caller's)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def entries(self) -> list[SchemaEntry]:
        rows = self._connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND type IN ('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        ).fetchall()
        return [SchemaEntry(*row) for row in rows]

    def rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        quoted = table.replace('"', '""')
        yield from self._connection.execute(f'SELECT * FROM "{quoted}"')


def _as_bytes(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)):
        return str(value).encode("ascii")
    return value


def _as_integer(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        return int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not an integer")
        return int(value)
    return value


def _as_text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _as_real(value: Any) -> Any:
    return float(value) if isinstance(value, (str, bytes, int)) else value


_COERCIONS = {
    "bytea": _as_bytes,
    "bigint": _as_integer,
    "integer": _as_integer,
    "smallint": _as_integer,
    "text": _as_text,
    "double precision": _as_real,
    "real": _as_real,
}


def _coerced(table: str, rows: Iterator[tuple[Any, ...]], types: list[str]) -> Iterator[list[Any]]:
    converters = [_COERCIONS.get(column_type) for column_type in types]
    for row in rows:
        try:
            yield [
                value if value is None or convert is None else convert(value)
                for value, convert in zip(row, converters)
            ]
        except (ValueError, UnicodeError):
            raise CopyError(
                f"table {table}: a value does not fit its column type ({', '.join(types)})"
            ) from None


def fill(
    target: Target, source: Source, column_types: Callable[[str], list[str]] | None = None
) -> tuple[int, int]:
    """Create the source's tables and indexes in `target`, then copy their rows; return
    (tables, rows). `column_types(table)`, when given, says the target's column types,
    which every value is converted to."""
    entries = source.entries()
    for entry in entries:
        target.execute(entry.sql)
    tables = rows = 0
    for entry in entries:
        if entry.kind != "table":
            continue
        tables += 1
        data: Iterator[Any] = source.rows(entry.name)
        first = next(data, None)
        if first is None:
            continue
        data = itertools.chain([first], data)
        types = column_types(entry.name) if column_types is not None else []
        if types:
            data = _coerced(entry.name, data, types)
        counted = _Counted(data)
        marks = ", ".join("?" * len(first))
        target.executemany(f'INSERT INTO "{entry.name}" VALUES ({marks})', counted)
        rows += counted.count
    return tables, rows


class _Counted:
    """An iterator counting what it yields."""

    def __init__(self, items: Iterator[Any]) -> None:
        self._items = items
        self.count = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            self.count += 1
            yield item


def load_into_sqlite(source: Source) -> sqlite3.Connection:
    """A new in-memory SQLite database holding a copy of `source`."""
    memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    try:
        memory.execute("BEGIN")
        fill(memory, source)
        memory.execute("COMMIT")
    except BaseException:
        memory.close()
        raise
    return memory
