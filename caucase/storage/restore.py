"""Restoring a backup: only the statement shapes a dump of ours or the reference holds.

A backup is not signed: whoever holds a user's certificate can write one that user's key
opens, so its SQL is never trusted. Each statement must start with an allowed keyword,
and an SQLite authorizer lets through only what rebuilding the known tables needs:
BEGIN/COMMIT, CREATE TABLE and CREATE INDEX on the known tables, INSERT into them.
Anything else (ATTACH, VACUUM INTO, triggers, views, SELECT, functions, other tables,
pragmas but the one newer Pythons' dumps start with) is refused and nothing is written.

A backup restores into an SQLite file, or into an empty PostgreSQL database: there, the
statements run in an in-memory SQLite database first (under the same guard), which is then
copied over (caucase.storage.copy).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterable, Iterator

from caucase.exceptions import BackupError
from caucase.storage import inventory, renewal
from caucase.storage.acme_schema import ACME_TABLES
from caucase.storage.copy import SQLiteSource, fill
from caucase.storage.database import Database
from caucase.storage.engine import Engine, create_database, describe
from caucase.storage.schema import (
    ISSUED_CRL_SUFFIX,
    LEGACY_CRL_SUFFIX,
    REASON_SUFFIX,
    TABLE_PREFIXES,
    TABLE_SUFFIXES,
)

# Tables a backup may create and fill. Extend it when a release adds a table.
RESTORABLE_TABLES = frozenset(
    prefix + suffix
    for prefix in TABLE_PREFIXES
    for suffix in (
        *TABLE_SUFFIXES,
        LEGACY_CRL_SUFFIX,
        ISSUED_CRL_SUFFIX,
        REASON_SUFFIX,
        renewal.SUFFIX,
        inventory.SUFFIX,
    )
) | frozenset(("caucased_cors_secret", "caucased_claim", *ACME_TABLES))
STATEMENT_KEYWORDS = ("BEGIN", "COMMIT", "CREATE", "INSERT", "PRAGMA")
_KEYWORD = re.compile(r"\s*([A-Za-z]+)")
_ACTION_NAMES = {
    getattr(sqlite3, "SQLITE_" + name): name.replace("_", " ")
    for name in [
        "ALTER_TABLE",
        "ANALYZE",
        "ATTACH",
        "CREATE_INDEX",
        "CREATE_TABLE",
        "CREATE_TEMP_INDEX",
        "CREATE_TEMP_TABLE",
        "CREATE_TEMP_TRIGGER",
        "CREATE_TEMP_VIEW",
        "CREATE_TRIGGER",
        "CREATE_VIEW",
        "CREATE_VTABLE",
        "DELETE",
        "DETACH",
        "DROP_INDEX",
        "DROP_TABLE",
        "DROP_TEMP_INDEX",
        "DROP_TEMP_TABLE",
        "DROP_TEMP_TRIGGER",
        "DROP_TEMP_VIEW",
        "DROP_TRIGGER",
        "DROP_VIEW",
        "DROP_VTABLE",
        "FUNCTION",
        "INSERT",
        "PRAGMA",
        "READ",
        "RECURSIVE",
        "REINDEX",
        "SAVEPOINT",
        "SELECT",
        "TRANSACTION",
        "UPDATE",
    ]
}
# SQLite itself reads and writes its schema table while creating a table or an index.
_SCHEMA_TABLE = "sqlite_master"
# Python 3.13+ dumps of a database with foreign key violations start with this pragma.
_ALLOWED_PRAGMAS = {("foreign_keys", "OFF"), ("foreign_keys", "0")}


class _StatementGuard:
    """The authorizer callback; remembers why it refused, for the error message."""

    def __init__(self, tables: frozenset[str]) -> None:
        self._tables = tables
        self.refusal: str | None = None

    def _known(self, table: str | None, database: str | None, schema_too: bool) -> bool:
        if database != "main" or table is None:
            return False
        name = table.lower()
        return name in self._tables or (schema_too and name == _SCHEMA_TABLE)

    def _allows(self, action: int, first: str | None, second: str | None, db: str | None) -> bool:
        if action == sqlite3.SQLITE_TRANSACTION:
            return first in ("BEGIN", "COMMIT")
        if action == sqlite3.SQLITE_CREATE_TABLE:
            return self._known(first, db, schema_too=False)
        if action == sqlite3.SQLITE_CREATE_INDEX:
            return self._known(second, db, schema_too=False)
        if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_READ):
            return self._known(first, db, schema_too=True)
        if action == sqlite3.SQLITE_UPDATE:
            return db == "main" and (first or "").lower() == _SCHEMA_TABLE
        if action == sqlite3.SQLITE_REINDEX:
            return db == "main"
        if action == sqlite3.SQLITE_PRAGMA:
            return ((first or "").lower(), (second or "").upper()) in _ALLOWED_PRAGMAS
        return False

    def __call__(
        self, action: int, first: str | None, second: str | None, db: str | None, _: object
    ) -> int:
        if self._allows(action, first, second, db):
            return sqlite3.SQLITE_OK
        if self.refusal is None:
            detail = ", ".join(repr(value) for value in (first, second) if value is not None)
            name = _ACTION_NAMES.get(action, f"action {action}")
            self.refusal = name + (f" {detail}" if detail else "")
        return sqlite3.SQLITE_DENY


def _shown(statement: str) -> str:
    """The statement on one short line, for an error message."""
    text = " ".join(statement.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _execute(connection: sqlite3.Connection, statements: Iterable[str]) -> None:
    for statement in statements:
        guard = _StatementGuard(RESTORABLE_TABLES)
        keyword = _KEYWORD.match(statement)
        if keyword is None or keyword.group(1).upper() not in STATEMENT_KEYWORDS:
            raise BackupError(f"Restore refused, not a backup statement: {_shown(statement)}")
        connection.set_authorizer(guard)
        try:
            connection.execute(statement)
        except sqlite3.ProgrammingError:  # "You can only execute one statement at a time"
            raise BackupError(
                f"Restore refused, several statements in one: {_shown(statement)}"
            ) from None
        except sqlite3.Error as error:
            if guard.refusal is not None:
                raise BackupError(
                    f"Restore refused, {guard.refusal} is not allowed in a backup: "
                    f"{_shown(statement)}"
                ) from None
            raise BackupError(f"Restore failed: {error}") from error
        finally:
            connection.set_authorizer(None)
    if connection.in_transaction:
        raise BackupError("Restore failed: the dump ends inside a transaction")


def _restore_file(database: Database, statements: Iterable[str]) -> None:
    connection = database.open_connection()
    try:
        _execute(connection, statements)
    finally:
        database.close_connection(connection)


def _restore_elsewhere(database: Engine, statements: Iterable[str]) -> None:
    """Run the statements in memory, under the guard, then copy the result."""
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        _execute(memory, statements)
        with database.writing() as connection:
            fill(
                connection,
                SQLiteSource(memory),
                lambda table: database.column_types(connection, table) or [],
            )
    finally:
        memory.close()


@contextlib.contextmanager
def restored_database(location: str, statements: Iterable[str]) -> Iterator[Engine]:
    """A new database at `location` (an SQLite path that must not exist, or an empty
    PostgreSQL database: FileExistsError otherwise) rebuilt from dump statements; an SQLite
    file is held exclusively for the block.

    All or nothing: if a statement or the block fails, the database is removed (an SQLite
    file's connections closed first, its lock released last) and the error re-raised."""
    try:
        database = create_database(location)
    except FileExistsError:
        raise FileExistsError(f"{describe(location)!r} exists, not restoring.") from None
    try:
        if isinstance(database, Database):
            _restore_file(database, statements)
        else:
            _restore_elsewhere(database, statements)
        yield database
    except BaseException:
        database.remove()
        raise
    database.close()


def restore_database(location: str, statements: Iterable[str]) -> None:
    """restored_database, closed at once."""
    with restored_database(location, statements):
        pass
