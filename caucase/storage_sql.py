"""SQLite plumbing of the storage: schema text, indexes, connections (ca-profile 5).

Connections come from a pool (request threads are short-lived, one per HTTP connection,
so a pool spares each of them opening its own), and writes go through the file's group
committer (caucase.group_commit).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator

from caucase.group_commit import GroupCommitter

BUSY_TIMEOUT = 30.0
MAX_IDLE_CONNECTIONS = 16

# Column lists in the reference order; the DDL text layout is part of the dump (errata 9).
_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ca", ("expiration_date INTEGER", "key TEXT", "crt TEXT")),
    (
        "crt",
        (
            "id INTEGER PRIMARY KEY",
            "key_id TEXT {unique}",
            "expiration_date INTEGER",
            "csr TEXT",
            "crt TEXT",
        ),
    ),
    ("revoked", ("serial TEXT PRIMARY KEY", "revocation_date INTEGER", "expiration_date INTEGER")),
    ("counter", ("name TEXT PRIMARY KEY", "value INTEGER")),
    ("config_once", ("name TEXT PRIMARY KEY", "value TEXT")),
    ("config", ("name TEXT PRIMARY KEY", "value TEXT")),
)


def schema_statements(table_prefix: str, enforce_unique_key_id: bool) -> list[str]:
    """The CREATE TABLE statements of one prefix, laid out like the reference's."""
    unique = "UNIQUE" if enforce_unique_key_id else ""
    statements = []
    for suffix, columns in _TABLES:
        body = ",\n".join(" " * 10 + column.format(unique=unique) for column in columns)
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table_prefix}{suffix} (\n{body}\n{' ' * 8})"
        )
    return statements


def index_statements(table_prefix: str, enforce_unique_key_id: bool) -> list[str]:
    """Indexes the reference lacks, so that no per-request query scans the crt table,
    and purging expired revocations does not scan the revoked table.

    SQLite maintains them whoever writes, and dumps carry them, so the reference still
    opens, backs up and restores these databases. A UNIQUE key_id is indexed already."""
    table = table_prefix + "crt"
    revoked = table_prefix + "revoked"
    statements = [
        f"CREATE INDEX IF NOT EXISTS {table}_expiration_date ON {table} (expiration_date)",
        f"CREATE INDEX IF NOT EXISTS {table}_pending ON {table} (id) WHERE crt IS NULL",
        f"CREATE INDEX IF NOT EXISTS {revoked}_expiration_date ON {revoked} (expiration_date)",
    ]
    if not enforce_unique_key_id:
        statements.append(f"CREATE INDEX IF NOT EXISTS {table}_key_id ON {table} (key_id)")
    return statements


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
