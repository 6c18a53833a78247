"""The PostgreSQL engine: one database shared by several caucased (``--db postgresql://...``).

Through psycopg 3 (the ``caucase[postgresql]`` extra), with libpq's URL, environment and
``.pgpass`` handling. Connections are pooled per process, in autocommit mode; a write is one
explicit transaction (READ COMMITTED) whose `lock`, when named, is a transaction-level
advisory lock: the check-then-write invariants (one new CA per rollover, exact pending
quotas, one CRL per number, one backup per period) hold however many nodes race. The
writers of one lock on this node share a transaction (caucase.storage.postgresql_batch), so
that the lock is held for one commit per batch, not per writer.

Storage modules speak portable SQL (caucase.storage.engine); the connections lent here
rewrite it (caucase.storage.postgresql_sql). Every schema statement is also recorded, as
written for SQLite, in ``caucase_schema``: dumps replay it into an in-memory SQLite database
and dump that, so that backups are the SQLite-dialect statements the reference restores.

A broken connection (server restarted or gone) is discarded when given back; the next use
opens a new one, so the node recovers by itself. Every failure leaves as StorageError.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from caucase.exceptions import CaucaseError, StorageError
from caucase.storage import postgresql_sql
from caucase.storage.copy import SchemaEntry, Source, load_into_sqlite
from caucase.storage.engine import Statement
from caucase.storage.postgresql_batch import LockBatches

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
_SCHEMA_LOCK = "caucase schema"
_CATALOG_DDL = (
    f"CREATE TABLE IF NOT EXISTS {CATALOG} (position BIGSERIAL, kind TEXT NOT NULL, "
    "name TEXT PRIMARY KEY, table_name TEXT NOT NULL, sql TEXT NOT NULL)"
)


class PostgresIntegrityError(sqlite3.IntegrityError):
    """A UNIQUE or PRIMARY KEY clash on PostgreSQL, caught as engine.IntegrityError."""


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    split = urllib.parse.urlsplit(url)
    if split.password is None:
        return url
    netloc = split.netloc.rsplit("@", 1)[1]
    user = split.username or ""
    return urllib.parse.urlunsplit(split._replace(netloc=f"{user}:***@{netloc}"))


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key of a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


class _NumberLoader(NumericLoader):
    """NUMERIC results (SUM of integers) as int when integral, like SQLite, else float."""

    def load(self, data: Any) -> Any:
        value = super().load(data)
        return int(value) if value == value.to_integral_value() else float(value)


# What the driver raises (our IntegrityError is an sqlite3 one).
_DRIVER_ERRORS = (sqlite3.Error,) if psycopg is None else (psycopg.Error, sqlite3.Error)


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Raise database errors of the block as StorageError (chained)."""
    try:
        yield
    except _DRIVER_ERRORS as error:
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
            self.lock(_SCHEMA_LOCK)
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


class _Pool:
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
        self._pool = _Pool(url)
        self._batches = LockBatches(lambda: PostgresConnection(url), _DRIVER_ERRORS)
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
                with contextlib.suppress(psycopg.Error):
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
                with contextlib.suppress(psycopg.Error):
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
        with self.writing(lock=_SCHEMA_LOCK) as connection:
            tables = [
                entry.name
                for entry in _CatalogSource(connection).entries()
                if entry.kind == "table"
            ]
            for table in tables:
                connection.raw.execute(f'DROP TABLE IF EXISTS "{table}"')
            connection.raw.execute(f"DROP TABLE IF EXISTS {CATALOG}")
        self.close()
