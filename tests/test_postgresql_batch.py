"""Group commit on PostgreSQL: a node's writers naming one lock share transactions, and a
writer's failure voids its own statements only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from caucase.exceptions import StorageError
from caucase.storage import IntegrityError
from caucase.storage.postgresql import PostgresDatabase
from caucase.storage.postgresql_connection import PostgresConnection
from tests.test_postgresql import race

WRITERS = 16
LOCK = "test:batch"


@pytest.fixture
def database(postgres_url: str) -> Iterator[PostgresDatabase]:
    with PostgresDatabase(postgres_url) as database:
        with database.writing() as connection:
            connection.execute("CREATE TABLE t (name TEXT PRIMARY KEY, tx INTEGER NOT NULL)")
        yield database


class Taken(Exception):
    """The name is stored already (raised from the writer's block, as storage modules do)."""


def insert(database: PostgresDatabase, name: str) -> None:
    """A row naming the transaction that wrote it, written under the lock."""
    with database.writing(lock=LOCK) as connection:
        try:
            connection.execute("INSERT INTO t VALUES (?, txid_current())", (name,))
        except IntegrityError as error:
            raise Taken(name) from error


def stored(database: PostgresDatabase) -> dict[str, int]:
    with database.reading() as connection:
        rows = connection.execute("SELECT name, tx FROM t").fetchall()
    return {name: tx for name, tx in rows}


def test_concurrent_writers_of_one_lock_commit_together(database: PostgresDatabase) -> None:
    results = race(WRITERS, lambda index: insert(database, f"w{index}"))
    assert results == [None] * WRITERS
    rows = stored(database)
    assert sorted(rows) == sorted(f"w{index}" for index in range(WRITERS))
    # Writers arriving during a commit join the next batch: fewer transactions than rows.
    assert len(set(rows.values())) < WRITERS


def test_a_failing_writer_leaves_the_others_of_its_batch_committed(
    database: PostgresDatabase,
) -> None:
    insert(database, "taken")

    def write(index: int) -> None:
        insert(database, "taken" if index % 2 else f"w{index}")

    results = race(WRITERS, write)
    assert all(isinstance(results[index], Taken) for index in range(1, WRITERS, 2))
    assert [results[index] for index in range(0, WRITERS, 2)] == [None] * (WRITERS // 2)
    expected = {"taken", *(f"w{index}" for index in range(0, WRITERS, 2))}
    assert set(stored(database)) == expected


def test_a_writer_ignoring_its_failed_statement_is_refused_and_writes_nothing(
    database: PostgresDatabase,
) -> None:
    insert(database, "taken")
    refused = pytest.raises(StorageError, match="failed statement, nothing written")
    with refused, database.writing(lock=LOCK) as connection:
        connection.execute("INSERT INTO t VALUES (?, 0)", ("mine",))
        with contextlib.suppress(IntegrityError):
            connection.execute("INSERT INTO t VALUES (?, 0)", ("taken",))
    insert(database, "next")
    assert set(stored(database)) == {"taken", "next"}


def test_bookkeeping_is_written_at_once_outside_every_batch_and_lock(
    database: PostgresDatabase, postgres_url: str
) -> None:
    """While another session holds the lock a batch would take, bookkeeping still lands
    (it waits on no batch), alone in its own transaction, visible as soon as it returns."""
    with contextlib.closing(PostgresConnection(postgres_url)) as holder:
        holder.begin(lock=LOCK)
        database.write_bookkeeping("INSERT INTO t VALUES (?, txid_current())", ("kept",))
        assert "kept" in stored(database)
        holder.rollback()
    insert(database, "batch")
    rows = stored(database)
    assert rows["kept"] != rows["batch"]


def test_bookkeeping_inside_a_transaction_is_part_of_it(database: PostgresDatabase) -> None:
    with database.writing() as connection:
        connection.execute("INSERT INTO t VALUES (?, txid_current())", ("writer",))
        database.write_bookkeeping("INSERT INTO t VALUES (?, txid_current())", ("kept",))
    rows = stored(database)
    assert rows["kept"] == rows["writer"]
