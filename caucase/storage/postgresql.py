"""The PostgreSQL engine: one database shared by several caucased (``--db postgresql://...``).

Through psycopg 3 (the ``caucase[postgresql]`` extra), with libpq's URL, environment and
``.pgpass`` handling. Connections are pooled per process, in autocommit mode; a write is one
explicit transaction (READ COMMITTED) whose `lock`, when named, is a transaction-level
advisory lock: the check-then-write invariants (one new CA per rollover, exact pending
quotas, one CRL per number, one backup per period) hold however many nodes race. The
writers of one lock on this node share a transaction (caucase.storage.postgresql_batch), so
that the lock is held for one commit per batch, not per writer.

Storage modules speak portable SQL (caucase.storage.engine); the connections lent here
rewrite it (caucase.storage.postgresql_connection). Every schema statement is also
recorded, as written for SQLite, in ``caucase_schema``: dumps replay it into an in-memory
SQLite database and dump that, so that backups are the SQLite-dialect statements the
reference restores.

A broken connection (server restarted or gone) is discarded when given back; the next use
opens a new one, so the node recovers by itself. Every failure leaves as StorageError.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from caucase.storage.copy import SchemaEntry, Source, load_into_sqlite
from caucase.storage.engine import Statement
from caucase.storage.postgresql_batch import LockBatches
from caucase.storage.postgresql_connection import (
    CATALOG,
    DRIVER_ERRORS,
    SCHEMA_LOCK,
    PostgresConnection,
    PostgresPool,
    storage_errors,
)


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    split = urllib.parse.urlsplit(url)
    if split.password is None:
        return url
    netloc = split.netloc.rsplit("@", 1)[1]
    user = split.username or ""
    return urllib.parse.urlunsplit(split._replace(netloc=f"{user}:***@{netloc}"))


class _CatalogSource:
    """The tables of the database, as recorded in the catalog, read in one snapshot."""

    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection

    def entries(self) -> list[SchemaEntry]:
        if self._connection.raw.execute("SELECT to_regclass(%s)", (CATALOG,)).fetchone() == (
            None,
        ):
            return []
        rows = self._connection.raw.execute(
            f"SELECT kind, name, table_name, sql FROM {CATALOG} ORDER BY position"
        ).fetchall()
        return [SchemaEntry(*row) for row in rows]

    def rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        cursor = self._connection.raw.cursor()
        (count,) = self._connection.raw.execute(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = %s "
            "AND table_schema = current_schema()",
            (table,),
        ).fetchone() or (0,)
        order = ", ".join(str(position) for position in range(1, count + 1))
        cursor.execute(f'SELECT * FROM "{table}" ORDER BY {order}')
        yield from cursor
        cursor.close()


class PostgresDatabase:
    """One PostgreSQL database and every connection this process holds to it."""

    shared = True
    strict_types = True

    def __init__(self, url: str) -> None:
        """Connects once, so that a wrong URL or an unreachable server is a StorageError
        here rather than at the first request."""
        self.location = url
        self._pool = PostgresPool(url)
        self._batches = LockBatches(lambda: PostgresConnection(url), DRIVER_ERRORS)
        self._local = threading.local()
        self.ping()

    def __enter__(self) -> PostgresDatabase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def reading(self) -> Iterator[PostgresConnection]:
        """A pooled autocommit connection for reads."""
        with storage_errors(), self._pool.connection() as connection:
            yield connection

    def write_bookkeeping(self, statement: str, parameters: tuple[object, ...]) -> None:
        """One statement alone, in autocommit: one round trip, outside every batch (riding
        one would lengthen the batch, and so the hold of its lock); PostgreSQL flushes
        concurrent commits together. Inside this thread's transaction, a part of it."""
        with self._statement_connection() as connection:
            connection.execute(statement, parameters)

    def read_with_bookkeeping(
        self, query: Statement, bookkeeping: Statement, needed: Callable[[Any], bool]
    ) -> Any:
        """The query with the bookkeeping as its data-modifying WITH: one statement, one
        round trip. The query reads the snapshot the bookkeeping starts from."""
        (select, select_parameters), (change, change_parameters) = query, bookkeeping
        with self._statement_connection() as connection:
            return connection.execute(
                f"WITH bookkeeping AS ({change}) {select}",
                (*change_parameters, *select_parameters),
            ).fetchone()

    @contextlib.contextmanager
    def _statement_connection(self) -> Iterator[PostgresConnection]:
        """This thread's transaction's connection, else a pooled autocommit one."""
        joined: PostgresConnection | None = getattr(self._local, "transaction", None)
        with storage_errors():
            if joined is not None:
                yield joined
                return
            with self._pool.connection() as connection:
                yield connection

    @contextlib.contextmanager
    def writing(self, lock: str | None = None) -> Iterator[PostgresConnection]:
        """One transaction, committed before this returns; `lock` is held until then,
        and shared with this node's other writers of that lock (one batch, one commit:
        caucase.storage.postgresql_batch). A nested use by the same thread joins the outer
        transaction (and takes its lock)."""
        joined: PostgresConnection | None = getattr(self._local, "transaction", None)
        if joined is not None:
            if lock is not None:
                with storage_errors():
                    joined.lock(lock)
            yield joined
            return
        if lock is not None:
            with storage_errors(), self._batches.transaction(lock) as connection:
                self._local.transaction = connection
                try:
                    yield connection
                finally:
                    self._local.transaction = None
            return
        with storage_errors(), self._pool.connection() as connection:
            connection.begin()
            self._local.transaction = connection
            try:
                yield connection
            except BaseException:
                self._local.transaction = None
                with contextlib.suppress(*DRIVER_ERRORS):
                    connection.rollback()
                raise
            self._local.transaction = None
            connection.commit()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Source]:
        """Every table, read from one snapshot (REPEATABLE READ) for the block."""
        with storage_errors(), self._pool.connection() as connection:
            connection.begin("REPEATABLE READ READ ONLY")
            try:
                yield _CatalogSource(connection)
            finally:
                with contextlib.suppress(*DRIVER_ERRORS):
                    connection.rollback()

    def has_table(self, connection: Any, name: str) -> bool:
        row = connection.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_name = ?",
            (name.lower(),),
        ).fetchone()
        return row is not None

    def is_empty(self) -> bool:
        """No table at all, the catalog aside: what a copy or a restore may fill."""
        with self.reading() as connection:
            row = connection.raw.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name <> %s",
                (CATALOG,),
            ).fetchone()
        return row is not None and row[0] == 0

    def column_types(self, connection: Any, table: str) -> list[str]:
        """The PostgreSQL type of each column of `table`, in order."""
        rows = connection.raw.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = %s "
            "AND table_schema = current_schema() ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [str(data_type) for (data_type,) in rows]

    def dump(self) -> Iterator[str]:
        """SQL statements rebuilding the whole database in SQLite, from one snapshot: the
        SQLite dialect of our SQLite dumps (and the reference's), whatever the engine."""
        with self.snapshot() as source:
            memory = load_into_sqlite(source)
        try:
            yield from memory.iterdump()
        finally:
            memory.close()

    def ping(self) -> None:
        """StorageError unless the server answers."""
        with self.reading() as connection:
            connection.raw.execute("SELECT 1")

    def check_writable(self) -> None:
        """An UPDATE of the catalog touching no row (refused by a read-only server or
        database all the same), in a transaction rolled back."""
        with storage_errors(), self._pool.connection() as connection:
            connection.raw.execute("BEGIN")
            try:
                connection.raw.execute(f"UPDATE {CATALOG} SET kind = kind WHERE false")
            finally:
                connection.raw.execute("ROLLBACK")

    def close(self) -> None:
        self._batches.close()
        self._pool.close()

    def remove(self) -> None:
        """Drop every table the catalog records, and the catalog: the database is empty
        again (a failed restore or copy into it leaves nothing)."""
        with self.writing(lock=SCHEMA_LOCK) as connection:
            tables = [
                entry.name
                for entry in _CatalogSource(connection).entries()
                if entry.kind == "table"
            ]
            for table in tables:
                connection.raw.execute(f'DROP TABLE IF EXISTS "{table}"')
            connection.raw.execute(f"DROP TABLE IF EXISTS {CATALOG}")
        self.close()
