"""A live deployment copied to another engine (caucased-manage --copy-to): SQLite to
PostgreSQL, PostgreSQL to SQLite, or to another database of the same engine.

The source is read from one snapshot, so caucased may keep serving it meanwhile; the
target must be empty (a new SQLite file, or a PostgreSQL database without tables) and is
filled in one transaction, or left as it was."""

from __future__ import annotations

from caucase.exceptions import StorageError
from caucase.storage.copy import fill
from caucase.storage.engine import create_database, describe, exists, open_database


def copy_database(source_location: str, target_location: str) -> tuple[int, int]:
    """Copy every table and index; return (tables, rows). FileExistsError when the target
    is not empty, StorageError when the source does not exist."""
    if not exists(source_location):
        raise StorageError(f"{describe(source_location)!r} does not exist")
    source = open_database(source_location)
    try:
        target = create_database(target_location)
        try:
            with source.snapshot() as snapshot, target.writing() as connection:
                counts = fill(
                    connection,
                    snapshot,
                    lambda table: target.column_types(connection, table) or [],
                )
        except BaseException:
            target.remove()
            raise
        target.close()
    finally:
        source.close()
    return counts
