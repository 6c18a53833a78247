"""SQLite connections of the storage: private file creation, the pool, the committers.

Connections come from a pool (request threads are short-lived, one per HTTP connection,
so a pool spares each of them opening its own), and writes go through the file's group
committer (caucase.storage.group_commit).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator

from caucase.storage.group_commit import GroupCommitter

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
    connection.execute("PRAGMA synchronous=FULL")
    return connection


# Writers of one database file within this process share a group committer: they queue
# on it instead of polling SQLite's busy handler (which sleeps for milliseconds at a time),
# and concurrent writers share one synchronous commit.
_committers: dict[str, GroupCommitter] = {}
_committers_guard = threading.Lock()


def committer_for(db_path: str) -> GroupCommitter:
    path = os.path.realpath(db_path)
    with _committers_guard:
        committer = _committers.get(path)
        if committer is None:
            committer = _committers[path] = GroupCommitter(path, connect)
        return committer


class ConnectionPool:
    """Idle connections to one database file, lent to one thread at a time."""

    def __init__(self, db_path: str) -> None:
        self._db_path = db_path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            create_private_file(self._db_path)
            connection = connect(self._db_path)
        try:
            yield connection
        finally:
            with self._lock:
                keep = len(self._idle) < MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(connection)
            if not keep:
                connection.close()

    def close(self) -> None:
        """Close the idle connections (new ones are opened if used again)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
