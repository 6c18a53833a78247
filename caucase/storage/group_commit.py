"""Group commit: concurrent writers of one SQLite file share transactions (issue 7).

Each writer's statements run inside a SAVEPOINT of the file's open transaction, on one
shared connection, one writer at a time. The last writer of a batch commits it (one
synchronous=FULL commit for the whole batch) while new writers queue for the next batch;
every writer returns only once the commit covering its statements succeeded, so nothing
is acknowledged before it is durable. A writer whose statements fail is rolled back to
its savepoint alone.

Any other failure (BEGIN, SAVEPOINT, ROLLBACK TO, RELEASE, COMMIT, ROLLBACK) aborts the
batch: it is rolled back, or its connection closed when even that fails, and every writer
in it gets a StorageError; the next batch starts on a sound connection. No failure leaves
a batch open with writers waiting on it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator

from caucase.exceptions import StorageError
from caucase.storage.connection import Connector

KEPT_FAILURES = 64
# Bound of the statements left to the next batch (write_soon); past it, callers write.
MAX_DEFERRED = 1024


class GroupCommitter:
    """Write transactions of one database file within this process."""

    def __init__(self, connector: Connector) -> None:
        self._connector = connector
        self._condition = threading.Condition(threading.Lock())
        self._connection: sqlite3.Connection | None = None
        self._local = threading.local()
        self._open_batch = 0
        self._last_batch = 0
        self._finished_through = 0
        self._failures: dict[int, str] = {}
        self._committing = False
        self._queued = 0
        self._closed = False
        self._deferred: list[tuple[str, tuple[object, ...]]] = []

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
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Statements of one writer; returns once they are committed, raises otherwise
        (the writer's own error, or StorageError when its batch failed).

        A nested use by the same writer joins its transaction."""
        joined: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if joined is not None:
            yield joined
            return
        failure: BaseException | None = None
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
                self._release_writer(connection, batch)
            finally:
                self._local.connection = None
            self._finish(batch)
            lost = self._failures.get(batch)
        if failure is not None:
            raise failure
        if lost is not None:
            raise StorageError(lost)

    def _join_batch(self) -> tuple[sqlite3.Connection, int]:
        """The open batch, or a new one, with this writer's savepoint taken."""
        if self._closed:
            self._commit_unjoined_batch()
            raise StorageError("database is closed")
        if not self._open_batch:
            try:
                connection = self._sound_connection()
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                self._discard_connection()
                raise StorageError(f"cannot start a write transaction: {error}") from error
            self._last_batch += 1
            self._open_batch = self._last_batch
            self._run_deferred(connection)
        batch = self._open_batch
        connection = self._shared_connection()
        try:
            connection.execute("SAVEPOINT writer")
        except sqlite3.Error as error:
            self._abort(batch, f"transaction aborted, nothing written: {error}")
            raise StorageError(f"transaction aborted, nothing written: {error}") from error
        return connection, batch

    def _run_deferred(self, connection: sqlite3.Connection) -> None:
        """The statements left by write_soon, first in the new batch, undone together if
        one fails (the writers of the batch go on)."""
        deferred, self._deferred = self._deferred, []
        if not deferred:
            return
        try:
            connection.execute("SAVEPOINT deferred")
            for statement, parameters in deferred:
                connection.execute(statement, parameters)
            connection.execute("RELEASE deferred")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK TO deferred")
                connection.execute("RELEASE deferred")

    def _shared_connection(self) -> sqlite3.Connection:
        assert self._connection is not None
        return self._connection

    def _sound_connection(self) -> sqlite3.Connection:
        """The shared connection, outside any transaction: a fresh one if needed."""
        if self._connection is not None and self._connection.in_transaction:
            self._discard_connection()
        if self._connection is None:
            self._connection = self._connector.open_connection()
        return self._connection

    def _commit_unjoined_batch(self) -> None:
        """A writer leaves without joining: commit the open batch if no one else will."""
        if self._open_batch and self._queued == 0 and not self._committing:
            self._commit(self._open_batch)

    def _undo_writer(
        self, connection: sqlite3.Connection, batch: int, error: BaseException
    ) -> None:
        """Roll back this writer's statements only; if that fails, or SQLite dropped the
        whole transaction, the batch fails for every writer in it."""
        try:
            if connection.in_transaction:
                connection.execute("ROLLBACK TO writer")
                connection.execute("RELEASE writer")
                return
            reason = f"transaction aborted, nothing written: {error}"
        except sqlite3.Error as undo_error:
            reason = f"transaction aborted, nothing written: {undo_error}"
        self._abort(batch, reason)

    def _release_writer(self, connection: sqlite3.Connection, batch: int) -> None:
        try:
            if connection.in_transaction:
                connection.execute("RELEASE writer")
                return
            reason = "transaction aborted by SQLite, nothing written"
        except sqlite3.Error as error:
            reason = f"transaction aborted, nothing written: {error}"
        self._abort(batch, reason)

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
        except sqlite3.Error as error:
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
        except sqlite3.Error:
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
