"""Group commit: concurrent writers of one database share transactions (issue 7).

Each writer's statements run inside a SAVEPOINT of the batch's open transaction, on one
shared connection, one writer at a time. The last writer of a batch commits it (one
durable commit, one fsync, for the whole batch) while new writers queue for the next batch;
every writer returns only once the commit covering its statements succeeded, so nothing
is acknowledged before it is durable. A writer whose statements fail is rolled back to
its savepoint alone.

Any other failure (BEGIN, SAVEPOINT, ROLLBACK TO, RELEASE, COMMIT, ROLLBACK) aborts the
batch: it is rolled back, or its connection closed when even that fails, and every writer
in it gets a StorageError; the next batch starts on a sound connection. No failure leaves
a batch open with writers waiting on it.

What differs between engines is a `Dialect`: how a batch begins (SQLite's BEGIN IMMEDIATE;
on PostgreSQL, BEGIN and the advisory lock every writer of the batch names), which errors
the driver raises, whether a writer's failed statement ended its savepoint's work only
(PostgreSQL: the batch goes on once rolled back to it) or the whole transaction (SQLite),
and whether statements cost round trips (PostgreSQL), so that they travel together: the
first writer's savepoint with BEGIN, a kept writer's release with the next one's savepoint.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from caucase.exceptions import StorageError

KEPT_FAILURES = 64
# Bound of the statements left to the next batch (write_soon); past it, callers write.
MAX_DEFERRED = 1024


class BatchConnection(Protocol):
    """What the committer does with a connection (sqlite3's, or the PostgreSQL engine's)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


C = TypeVar("C", bound=BatchConnection)
C_contra = TypeVar("C_contra", bound=BatchConnection, contravariant=True)


class BatchConnector(Protocol[C]):
    """Where the committer gets its connection, and gives it back to be closed."""

    def open_connection(self) -> C: ...

    def close_connection(self, connection: C) -> None: ...


class Dialect(Protocol[C_contra]):
    """How batches begin and fail on one engine."""

    errors: tuple[type[Exception], ...]
    # A kept writer's savepoint is released with the next writer's savepoint, or not at
    # all by the commit (one round trip less per writer where each costs one), rather
    # than as the writer leaves.
    release_with_next: bool

    def begin(self, connection: C_contra, then: Sequence[str]) -> None:
        """Open the batch's transaction, taking what serialises it against other writers,
        and run the statements `then` in it (in the same round trip where the engine can)."""

    def run(self, connection: C_contra, statements: Sequence[str]) -> None:
        """Statements without parameters, in order (in one round trip where it can)."""

    def usable(self, connection: C_contra) -> bool:
        """The connection can open the next batch (open, outside any transaction)."""

    def statement_failed(self, connection: C_contra) -> bool:
        """A statement of the writer that just left failed, so its work is void although it
        returned normally; its savepoint is rolled back and it alone fails."""


class SQLiteDialect:
    """SQLite: BEGIN IMMEDIATE takes the file's write lock up front."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    release_with_next = False

    def begin(self, connection: sqlite3.Connection, then: Sequence[str]) -> None:
        self.run(connection, ["BEGIN IMMEDIATE", *then])

    def run(self, connection: sqlite3.Connection, statements: Sequence[str]) -> None:
        for statement in statements:
            connection.execute(statement)

    def usable(self, connection: sqlite3.Connection) -> bool:
        return not connection.in_transaction

    def statement_failed(self, connection: sqlite3.Connection) -> bool:
        """Never: a failed statement leaves SQLite's transaction as it was, or ends it."""
        return False


class GroupCommitter(Generic[C]):
    """Write transactions of one database within this process."""

    def __init__(self, connector: BatchConnector[C], dialect: Dialect[C]) -> None:
        self._connector = connector
        self._dialect = dialect
        self._errors = dialect.errors
        self._condition = threading.Condition(threading.Lock())
        self._connection: C | None = None
        self._local = threading.local()
        self._open_batch = 0
        self._last_batch = 0
        self._finished_through = 0
        self._failures: dict[int, str] = {}
        self._committing = False
        self._queued = 0
        self._closed = False
        self._deferred: list[tuple[str, tuple[object, ...]]] = []
        # The last writer of the open batch kept its statements, and its savepoint awaits
        # release (Dialect.release_with_next).
        self._release_pending = False

    def write_soon(self, statement: str, parameters: tuple[object, ...]) -> bool:
        """Leave a statement whose loss harms nobody (bookkeeping no answer depends on) to the
        next batch, when one is sure to come: a writer waits for the commit under way and will
        open it. False otherwise: the caller then writes it in a transaction of its own.

        Such a statement costs no transaction and no wait of its own; it is lost only if the
        next batch fails or the database closes first."""
        with self._condition:
            if self._closed or not (self._committing and self._queued):
                return False
            if len(self._deferred) >= MAX_DEFERRED:
                return False
            self._deferred.append((statement, parameters))
            return True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[C]:
        """Statements of one writer; returns once they are committed, raises otherwise
        (the writer's own error, or StorageError when its batch failed).

        A nested use by the same writer joins its transaction."""
        joined: C | None = getattr(self._local, "connection", None)
        if joined is not None:
            yield joined
            return
        failure: BaseException | None = None
        void: str | None = None
        with self._condition:
            self._queued += 1
            try:
                while self._committing:
                    self._condition.wait()
            finally:
                self._queued -= 1
            connection, batch = self._join_batch()
            self._local.connection = connection
            try:
                yield connection
            except BaseException as error:
                failure = error
                self._undo_writer(connection, batch, error)
            else:
                void = self._release_writer(connection, batch)
            finally:
                self._local.connection = None
            self._finish(batch)
            lost = self._failures.get(batch) or void
        if failure is not None:
            raise failure
        if lost is not None:
            raise StorageError(lost)

    def _join_batch(self) -> tuple[C, int]:
        """The open batch, or a new one, with this writer's savepoint taken (sent with the
        batch's BEGIN, or with the release of the previous writer's savepoint)."""
        if self._closed:
            self._commit_unjoined_batch()
            raise StorageError("database is closed")
        if not self._open_batch:
            return self._begin_batch()
        batch = self._open_batch
        connection = self._shared_connection()
        release = ["RELEASE writer"] if self._release_pending else []
        self._release_pending = False
        try:
            self._dialect.run(connection, [*release, "SAVEPOINT writer"])
        except self._errors as error:
            self._abort(batch, f"transaction aborted, nothing written: {error}")
            raise StorageError(f"transaction aborted, nothing written: {error}") from error
        return connection, batch

    def _begin_batch(self) -> tuple[C, int]:
        """A new batch, its deferred statements run, this writer's savepoint taken."""
        deferred, self._deferred = self._deferred, []
        then = [] if deferred else ["SAVEPOINT writer"]
        try:
            connection = self._sound_connection()
            self._dialect.begin(connection, then)
        except self._errors as error:
            self._discard_connection()
            raise StorageError(f"cannot start a write transaction: {error}") from error
        self._last_batch += 1
        self._open_batch = self._last_batch
        self._release_pending = False
        if deferred:
            self._run_deferred(connection, deferred)
            return self._join_batch()
        return connection, self._open_batch

    def _run_deferred(self, connection: C, deferred: list[tuple[str, tuple[object, ...]]]) -> None:
        """The statements left by write_soon, first in the new batch, undone together if
        one fails (the writers of the batch go on)."""
        try:
            connection.execute("SAVEPOINT deferred")
            for statement, parameters in deferred:
                connection.execute(statement, parameters)
            connection.execute("RELEASE deferred")
        except self._errors:
            with contextlib.suppress(*self._errors):
                connection.execute("ROLLBACK TO deferred")
                connection.execute("RELEASE deferred")

    def _shared_connection(self) -> C:
        assert self._connection is not None
        return self._connection

    def _sound_connection(self) -> C:
        """The shared connection, outside any transaction: a fresh one if needed."""
        if self._connection is not None and not self._dialect.usable(self._connection):
            self._discard_connection()
        if self._connection is None:
            self._connection = self._connector.open_connection()
        return self._connection

    def _commit_unjoined_batch(self) -> None:
        """A writer leaves without joining: commit the open batch if no one else will."""
        if self._open_batch and self._queued == 0 and not self._committing:
            self._commit(self._open_batch)

    def _undo_writer(self, connection: C, batch: int, error: BaseException) -> None:
        """Roll back this writer's statements only; if that fails, or the database dropped
        the whole transaction, the batch fails for every writer in it."""
        try:
            if connection.in_transaction:
                self._dialect.run(connection, ["ROLLBACK TO writer", "RELEASE writer"])
                return
            reason = f"transaction aborted, nothing written: {error}"
        except self._errors as undo_error:
            reason = f"transaction aborted, nothing written: {undo_error}"
        self._abort(batch, reason)

    def _release_writer(self, connection: C, batch: int) -> str | None:
        """Keep this writer's statements in the batch; return why they are void instead
        when one of them failed (the batch goes on without them)."""
        try:
            if not connection.in_transaction:
                reason = "transaction aborted by the database, nothing written"
            elif self._dialect.statement_failed(connection):
                self._dialect.run(connection, ["ROLLBACK TO writer", "RELEASE writer"])
                return "transaction aborted by a failed statement, nothing written"
            elif self._dialect.release_with_next:
                self._release_pending = True
                return None
            else:
                self._dialect.run(connection, ["RELEASE writer"])
                return None
        except self._errors as error:
            reason = f"transaction aborted, nothing written: {error}"
        self._abort(batch, reason)
        return None

    def _finish(self, batch: int) -> None:
        """Commit the batch if no writer waits to join it, else wait for its commit."""
        if self._open_batch == batch and self._queued == 0:
            self._commit(batch)
        while self._finished_through < batch:
            self._condition.wait()

    def _commit(self, batch: int) -> None:
        """COMMIT outside the lock (the next batch's writers queue meanwhile)."""
        connection = self._shared_connection()
        self._committing = True
        self._condition.release()
        failure: str | None = "commit interrupted, nothing written"
        try:
            connection.execute("COMMIT")
            failure = None
        except self._errors as error:
            failure = f"commit failed, nothing written: {error}"
        finally:
            self._condition.acquire()
            self._committing = False
            if failure is None:
                self._end_batch(batch, None)
            else:
                self._abort(batch, failure)

    def _abort(self, batch: int, reason: str) -> None:
        """Roll the batch back (or close its connection) and fail its writers."""
        if self._open_batch != batch:
            return
        connection = self._connection
        try:
            if connection is not None and connection.in_transaction:
                connection.execute("ROLLBACK")
        except self._errors:
            self._discard_connection()
        self._end_batch(batch, reason)

    def _end_batch(self, batch: int, error: str | None) -> None:
        if error is not None:
            self._failures[batch] = error
            for old in [number for number in self._failures if number < batch - KEPT_FAILURES]:
                del self._failures[old]
        self._open_batch = 0
        self._finished_through = batch
        if self._closed:
            self._discard_connection()
        self._condition.notify_all()

    def _discard_connection(self) -> None:
        """Close the shared connection (rolling back whatever it holds)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._connector.close_connection(connection)

    def close(self) -> None:
        """Refuse new writers; the connection closes now, or when the batch under way ends."""
        with self._condition:
            self._closed = True
            self._commit_unjoined_batch()
            if not self._open_batch and not self._committing:
                self._discard_connection()
