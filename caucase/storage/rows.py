"""What every table set of one CA instance builds on: its engine, its table prefix, its
connections (one per thread and transaction), and the counter and config rows."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Union

from caucase.storage.engine import Connection, Engine, Statement

Cell = Union[str, bytes, int, None]


def as_bytes(value: Cell) -> bytes:
    """PEM columns are BLOBs in reference databases, but tolerate TEXT."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected a PEM column, got {value!r}")


def as_text(value: Cell) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class TableRows:
    """The tables of one prefix in one database: connections and the shared row helpers."""

    def __init__(self, database: Engine, table_prefix: str) -> None:
        self._database = database
        self._prefix = table_prefix
        self._local = threading.local()

    @property
    def prefix(self) -> str:
        """The table prefix: the authority's name (``cau``, ``cas``, ``http_cas``)."""
        return self._prefix

    @property
    def shared(self) -> bool:
        """Whether other processes may write these tables meanwhile (caucase.storage.engine)."""
        return self._database.shared

    def _table(self, suffix: str) -> str:
        return self._prefix + suffix

    def _lock_name(self, subject: str) -> str:
        """The cluster-wide lock serialising one kind of check-then-write of this prefix."""
        return f"{self._prefix}:{subject}"

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[Connection]:
        """A pooled connection for this thread; inside a transaction, the transaction's."""
        active: Connection | None = getattr(self._local, "active", None)
        if active is not None:
            yield active
            return
        with self._database.reading() as connection:
            self._local.active = connection
            try:
                yield connection
            finally:
                self._local.active = None

    @contextlib.contextmanager
    def _transaction(self, lock: str | None = None) -> Iterator[Connection]:
        """One write transaction, committed (durably) before this returns; an inner use
        joins the outer one. `lock` names what it serialises across caucased nodes.

        On SQLite it runs in the database's group committer, whose BEGIN IMMEDIATE takes
        the write lock up front, so that writers of other processes wait on the busy
        timeout instead of failing to upgrade a read lock."""
        name = None if lock is None else self._lock_name(lock)
        with self._database.writing(lock=name) as connection:
            outer = getattr(self._local, "active", None)
            self._local.active = connection
            try:
                yield connection
            finally:
                self._local.active = outer

    def _select_one(
        self, query: str, parameters: Iterable[object] = ()
    ) -> tuple[Cell, ...] | None:
        with self._borrow() as connection:
            cursor = connection.execute(query, tuple(parameters))
            row: tuple[Cell, ...] | None = cursor.fetchone()
            cursor.close()
        return row

    def _select_all(self, query: str, parameters: Iterable[object] = ()) -> list[tuple[Cell, ...]]:
        with self._borrow() as connection:
            rows: list[tuple[Cell, ...]] = connection.execute(query, tuple(parameters)).fetchall()
        return rows

    def _increment_counter(self, tx: Connection, name: str) -> int:
        (value,) = tx.execute(*self._counter_increment(name)).fetchone()
        return int(value)

    def _counter_increment(self, name: str) -> Statement:
        """What adds one to a counter (starting it at 1), returning the new value."""
        table = self._table("counter")
        return (
            f"INSERT INTO {table} (name, value) VALUES (?, 1) "
            f"ON CONFLICT(name) DO UPDATE SET value = {table}.value + 1 RETURNING value",
            (name,),
        )

    def _set_config(self, tx: Connection, name: str, value: str) -> None:
        tx.execute(
            f"INSERT INTO {self._table('config')} (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )
