"""SQLite connections of the storage: private file creation, connection settings, the pool.

Connections come from a pool (request threads are short-lived, one per HTTP connection,
so a pool spares each of them opening its own), and writes go through the database's
group committer (caucase.storage.group_commit). Both get their connections from the
database's owner (caucase.storage.database), which counts them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Protocol

from caucase.exceptions import StorageError

BUSY_TIMEOUT = 30.0
MAX_IDLE_CONNECTIONS = 16


def create_private_file(path: str) -> None:
    """Create the file 0600 if missing, so that it never exists with wider permissions.

    Never opens an existing file: closing any descriptor of a file drops every POSIX lock
    this process holds on it, SQLite's included, and a connection closing next would then
    take itself for the last one and delete the WAL index under the others' feet."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def connect(path: str) -> sqlite3.Connection:
    """Autocommit connection: transactions are opened explicitly (BEGIN IMMEDIATE)."""
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    try:
        connection.execute("PRAGMA synchronous=FULL")
    except BaseException:
        connection.close()
        raise
    return connection


class Connector(Protocol):
    """Where the pool and the committer get connections, and give them back to be closed."""

    def open_connection(self) -> sqlite3.Connection: ...

    def close_connection(self, connection: sqlite3.Connection) -> None: ...


class ConnectionPool:
    """Idle connections to one database file, lent to one thread at a time."""

    def __init__(self, connector: Connector) -> None:
        self._connector = connector
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for the duration of the block; StorageError once closed."""
        with self._lock:
            if self._closed:
                raise StorageError("database is closed")
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connector.open_connection()
        try:
            yield connection
        finally:
            with self._lock:
                keep = (
                    not self._closed
                    and len(self._idle) < MAX_IDLE_CONNECTIONS
                    and not connection.in_transaction
                )
                if keep:
                    self._idle.append(connection)
            if not keep:
                self._connector.close_connection(connection)

    def close(self) -> None:
        """Close the idle connections; those lent out are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            self._connector.close_connection(connection)
