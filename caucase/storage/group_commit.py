"""Group commit: concurrent writers of one SQLite file share transactions (issue 7).

Each writer's statements run inside a SAVEPOINT of the file's open transaction, on one
shared connection, one writer at a time. The last writer of a batch commits it (one
synchronous=FULL commit for the whole batch) while new writers queue for the next batch;
every writer returns only once the commit covering its statements succeeded, so nothing
is acknowledged before it is durable. A writer whose statements fail is rolled back to
its savepoint alone; a failed commit fails every writer of the batch.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator

KEPT_FAILURES = 64


class BatchFailed(sqlite3.OperationalError):
    """The commit of a batch this writer belonged to failed: its writes are lost."""


class GroupCommitter:
    """Write transactions of one database file within this process."""

    def __init__(self, db_path: str, connect: Callable[[str], sqlite3.Connection]) -> None:
        self._db_path = db_path
        self._connect = connect
        self._condition = threading.Condition(threading.Lock())
        self._connection: sqlite3.Connection | None = None
        self._file_identity: tuple[int, int] | None = None
        self._local = threading.local()
        self._open_batch = 0
        self._last_batch = 0
        self._finished_through = 0
        self._failures: dict[int, str] = {}
        self._committing = False
        self._queued = 0

    def _fresh_connection(self) -> sqlite3.Connection:
        """The shared connection, reopened when the file was replaced since it was opened."""
        status = os.stat(self._db_path)
        identity = (status.st_dev, status.st_ino)
        if self._connection is None or identity != self._file_identity:
            if self._connection is not None:
                self._connection.close()
            self._connection = self._connect(self._db_path)
            self._file_identity = identity
        return self._connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Statements of one writer; returns once they are committed, raises otherwise.

        A nested use by the same writer joins its transaction."""
        joined: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if joined is not None:
            yield joined
            return
        failure: BaseException | None = None
        with self._condition:
            self._queued += 1
            while self._committing:
                self._condition.wait()
            self._queued -= 1
            connection, batch = self._join_batch()
            self._local.connection = connection
            try:
                yield connection
            except BaseException as error:
                failure = error
                self._undo_writer(connection, batch, error)
            else:
                connection.execute("RELEASE writer")
            finally:
                self._local.connection = None
            self._finish(connection, batch)
            lost = self._failures.get(batch)
        if failure is not None:
            raise failure
        if lost is not None:
            raise BatchFailed(f"commit failed, nothing written: {lost}")

    def _join_batch(self) -> tuple[sqlite3.Connection, int]:
        """The open batch, or a new one; a failure never strands the writers waiting."""
        try:
            if self._open_batch and self._connection is not None:
                connection = self._connection
            else:
                connection = self._fresh_connection()
                connection.execute("BEGIN IMMEDIATE")
                self._last_batch += 1
                self._open_batch = self._last_batch
            connection.execute("SAVEPOINT writer")
        except BaseException:
            if self._open_batch and self._queued == 0 and self._connection is not None:
                self._commit(self._connection, self._open_batch)
            raise
        return connection, self._open_batch

    def _undo_writer(
        self, connection: sqlite3.Connection, batch: int, error: BaseException
    ) -> None:
        """Roll back this writer's statements only; if SQLite dropped the whole
        transaction, the batch fails for every writer in it."""
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK TO writer")
                connection.execute("RELEASE writer")
                return
            except sqlite3.Error:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
        self._end_batch(batch, f"transaction aborted: {error}")

    def _finish(self, connection: sqlite3.Connection, batch: int) -> None:
        """Commit the batch if no writer waits to join it, else wait for its commit."""
        if self._open_batch == batch and self._queued == 0:
            self._commit(connection, batch)
        while self._finished_through < batch:
            self._condition.wait()

    def _commit(self, connection: sqlite3.Connection, batch: int) -> None:
        self._committing = True
        self._condition.release()
        error: str | None = None
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as commit_error:
            error = str(commit_error)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        finally:
            self._condition.acquire()
            self._end_batch(batch, error)
            self._committing = False

    def _end_batch(self, batch: int, error: str | None) -> None:
        if error is not None:
            self._failures[batch] = error
            for old in [number for number in self._failures if number < batch - KEPT_FAILURES]:
                del self._failures[old]
        self._open_batch = 0
        self._finished_through = batch
        self._condition.notify_all()
