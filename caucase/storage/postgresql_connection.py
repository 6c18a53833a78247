"""PostgreSQL connections (psycopg 3, the ``caucase[postgresql]`` extra) speaking the
portable SQL of caucase.storage.engine, and their per-process pool.

Connections run in autocommit mode; a transaction is explicit, and may begin by taking a
transaction-level advisory lock. Statements are rewritten on the way
(caucase.storage.postgresql_sql). Every schema statement is also recorded, as written for
SQLite, in the ``caucase_schema`` catalog (caucase.storage.postgresql dumps from it). A
connection the server dropped is found without a round trip and discarded by the pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from caucase.exceptions import CaucaseError, StorageError
from caucase.storage import postgresql_sql
from caucase.storage.engine import Statement

try:
    import psycopg
    from psycopg.types.numeric import NumericLoader
except ImportError:  # the plain install: SQLite only
    psycopg = None  # type: ignore[assignment]
    NumericLoader = object  # type: ignore[assignment, misc]

CATALOG = "caucase_schema"
CONNECT_TIMEOUT = 10
# A statement (or a lock wait) longer than this fails rather than hanging a request.
STATEMENT_TIMEOUT_MS = 60_000
MAX_IDLE_CONNECTIONS = 16
SCHEMA_LOCK = "caucase schema"
_CATALOG_DDL = (
    f"CREATE TABLE IF NOT EXISTS {CATALOG} (position BIGSERIAL, kind TEXT NOT NULL, "
    "name TEXT PRIMARY KEY, table_name TEXT NOT NULL, sql TEXT NOT NULL)"
)


class PostgresIntegrityError(sqlite3.IntegrityError):
    """A UNIQUE or PRIMARY KEY clash on PostgreSQL, caught as engine.IntegrityError."""


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key of a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


class _NumberLoader(NumericLoader):
    """NUMERIC results (SUM of integers) as int when integral, like SQLite, else float."""

    def load(self, data: Any) -> Any:
        value = super().load(data)
        return int(value) if value == value.to_integral_value() else float(value)


# What the driver raises (our IntegrityError is an sqlite3 one).
DRIVER_ERRORS = (sqlite3.Error,) if psycopg is None else (psycopg.Error, sqlite3.Error)


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Raise database errors of the block as StorageError (chained)."""
    try:
        yield
    except DRIVER_ERRORS as error:
        raise StorageError(f"database error: {error}") from error


def _parameters(parameters: Sequence[Any]) -> Sequence[Any]:
    """SQLite has no booleans: they are integers there, and so here."""
    if any(isinstance(value, bool) for value in parameters):
        return [int(value) if isinstance(value, bool) else value for value in parameters]
    return parameters


class _Cursor:
    """A statement's result, answering like sqlite3's cursor (no rows: None, [])."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description is not None else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description is not None else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def close(self) -> None:
        self._cursor.close()


class PostgresConnection:
    """One psycopg connection speaking portable SQL (caucase.storage.engine)."""

    def __init__(self, url: str) -> None:
        if psycopg is None:
            raise CaucaseError(
                "PostgreSQL storage needs psycopg 3: pip install 'caucase[postgresql]'"
            )
        self.raw = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        try:
            self.raw.adapters.register_loader("numeric", _NumberLoader)
            self.raw.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        except BaseException:
            self.raw.close()
            raise
        self._schema_locked = False

    @property
    def in_transaction(self) -> bool:
        """Inside a transaction, even one a failed statement aborted (a savepoint can
        still undo that statement's writer): what sqlite3's attribute of the name says."""
        status = self.raw.info.transaction_status
        return status in (
            psycopg.pq.TransactionStatus.INTRANS,
            psycopg.pq.TransactionStatus.INERROR,
        )

    @property
    def failed(self) -> bool:
        """A statement failed: the transaction refuses any other until rolled back (to a
        savepoint before it, or wholly)."""
        return self.raw.info.transaction_status == psycopg.pq.TransactionStatus.INERROR

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Cursor:
        change = postgresql_sql.schema_change(sql)
        if change is not None:
            return self._change_schema(change)
        return self._run(postgresql_sql.placeholders(sql), _parameters(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> _Cursor:
        cursor = self.raw.cursor()
        try:
            cursor.executemany(
                postgresql_sql.placeholders(sql), [_parameters(row) for row in parameters]
            )
        except psycopg.errors.IntegrityError as error:
            raise PostgresIntegrityError(str(error)) from error
        return _Cursor(cursor)

    def execute_combined(self, statements: Sequence[Statement]) -> _Cursor:
        """The changes as one statement, all but the last as its data-modifying WITH
        clauses (run from one snapshot, each once): one round trip, one driver call. See
        caucase.storage.engine.execute_changes."""
        *changes, (last, last_parameters) = statements
        if not changes:
            return self.execute(last, last_parameters)
        clauses = ", ".join(f"change{index} AS ({sql})" for index, (sql, _) in enumerate(changes))
        parameters = [value for _, values in statements for value in values]
        return self.execute(f"WITH {clauses} {last}", parameters)

    def _run(self, sql: str, parameters: Sequence[Any] = ()) -> _Cursor:
        try:
            return _Cursor(self.raw.execute(sql, parameters))
        except psycopg.errors.IntegrityError as error:
            raise PostgresIntegrityError(str(error)) from error

    def begin(
        self, isolation: str = "", lock: str | None = None, then: Sequence[str] = ()
    ) -> None:
        """BEGIN, take `lock` (held till the end) and run the statements `then`, in one
        round trip."""
        statements = ["BEGIN" + (f" ISOLATION LEVEL {isolation}" if isolation else "")]
        if lock is not None:
            statements.append(f"SELECT pg_advisory_xact_lock({lock_key(lock)})")
        self.run_script([*statements, *then])
        self._schema_locked = False

    def run_script(self, statements: Sequence[str]) -> None:
        """Statements without parameters, in order, in one round trip."""
        self.raw.execute("; ".join(statements))

    def commit(self) -> None:
        """COMMIT; a transaction a failed statement aborted is rolled back and reported
        (PostgreSQL would roll it back silently, where SQLite commits the other statements)."""
        if self.failed:
            self.raw.execute("ROLLBACK")
            raise StorageError("transaction aborted by a failed statement, nothing written")
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if not self.raw.closed:
            self.raw.execute("ROLLBACK")

    def lock(self, name: str) -> None:
        """Hold the named advisory lock until the transaction ends."""
        self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(name),))

    def _change_schema(self, change: postgresql_sql.SchemaChange) -> _Cursor:
        """Run a schema statement and record it, inside a transaction holding the schema
        lock (concurrent CREATE TABLE IF NOT EXISTS of several nodes otherwise clash)."""
        if not self.in_transaction:
            self.begin()
            try:
                cursor = self._change_schema(change)
            except BaseException:
                self.rollback()
                raise
            self.commit()
            return cursor
        if not self._schema_locked:
            self.lock(SCHEMA_LOCK)
            self.raw.execute(_CATALOG_DDL)
            self._schema_locked = True
        cursor = self._run(change.sql)
        if change.action == "create":
            self.raw.execute(
                f"INSERT INTO {CATALOG} (kind, name, table_name, sql) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (change.kind, change.name, change.table, change.original),
            )
        else:
            self.raw.execute(
                f"DELETE FROM {CATALOG} WHERE name = %s OR (%s = 'table' AND table_name = %s)",
                (change.name, change.kind, change.name),
            )
        return cursor

    @property
    def dropped(self) -> bool:
        """Whether the server ended this idle connection (restarted, or terminated it): it
        then sent its goodbye, or closed the socket. An idle autocommit connection gets
        nothing unasked otherwise, so a readable socket is enough to tell, without a round
        trip, and the first request after a server restart needs no failure to find out."""
        if self.raw.closed:
            return True
        try:
            readable, _, _ = select.select([self.raw.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    @property
    def healthy(self) -> bool:
        """Still usable for the next borrower: open, and outside any transaction."""
        return (
            not self.raw.closed
            and self.raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.raw.close()


class PostgresPool:
    """Idle connections, lent to one thread at a time; broken ones are dropped."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._idle: list[PostgresConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[PostgresConnection]:
        connection = self._idle_connection()
        if connection is None:
            connection = PostgresConnection(self._url)
        try:
            yield connection
        finally:
            with self._lock:
                keep = (
                    not self._closed
                    and len(self._idle) < MAX_IDLE_CONNECTIONS
                    and connection.healthy
                )
                if keep:
                    self._idle.append(connection)
            if not keep:
                connection.close()

    def _idle_connection(self) -> PostgresConnection | None:
        """The most recently used idle connection the server has not dropped, if any."""
        while True:
            with self._lock:
                if self._closed:
                    raise StorageError("database is closed")
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if not connection.dropped:
                return connection
            connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
