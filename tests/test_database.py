"""The database owner: every descriptor released on close, database failures raised as
StorageError, and the exclusive lock refusing a second caucased (or caucased-manage)."""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from caucase.exceptions import CaucaseError, StorageError
from caucase.storage import Database, DatabaseInUse, Storage
from caucase.storage import connection as storage_connection
from tests.support.servers import OUR_BIN, free_port_pair, start_caucased

NOW = 1_800_000_000
DAY = 86400


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "caucase.sqlite")


@pytest.fixture
def database(db_path: str) -> Iterator[Database]:
    with Database(db_path) as database:
        yield database


def use(storage: Storage, serial: int) -> None:
    """A write (the group committer's connection), a read (a pooled one), and now and
    then a dump (a connection of its own)."""
    storage.revoke(serial, NOW, NOW + DAY)
    assert storage.get_revoked(NOW)
    if serial % 25 == 1:
        assert list(storage.dump())


def test_open_and_close_500_storages_releases_every_descriptor(tmp_path: Path) -> None:
    """125 storages opening their own database, 375 sharing an exclusive owner by three."""
    gc.collect()  # what earlier tests dropped must not be counted as freed here
    before = open_descriptors()
    for index in range(125):
        storage = Storage(str(tmp_path / f"own-{index % 50}.sqlite"), "cas")
        use(storage, index)
        storage.close()
        with Database(str(tmp_path / f"shared-{index % 50}.sqlite"), exclusive=True) as shared:
            for prefix in ("cau", "cas", "http_cas"):
                use(Storage(shared, prefix), index)
    assert open_descriptors() == before


def test_connections_in_use_are_closed_when_given_back(database: Database) -> None:
    gc.collect()
    before = open_descriptors()
    storage = Storage(database, "cas")
    use(storage, 1)
    with database.reading() as reader:
        database.close()
        reader.execute("SELECT 1").fetchone()
    with pytest.raises(StorageError, match="closed"):
        storage.get_revoked(NOW)
    with pytest.raises(StorageError, match="closed"):
        storage.revoke(2, NOW, NOW + DAY)
    assert open_descriptors() < before


def test_a_dropped_owner_is_freed_at_once(db_path: str) -> None:
    """No reference cycle keeps the connections of an owner nobody closed."""
    gc.collect()
    gc.disable()
    try:
        before = open_descriptors()
        use(Storage(Database(db_path), "cas"), 1)
        assert open_descriptors() == before
    finally:
        gc.enable()


def test_second_exclusive_owner_is_refused_until_the_first_closes(db_path: str) -> None:
    first = Database(db_path, exclusive=True)
    with pytest.raises(DatabaseInUse, match="in use by another caucased"):
        Database(db_path, exclusive=True)
    Storage(Database(db_path), "cas").close()  # readers and tests need no lock
    first.close()
    Database(db_path, exclusive=True).close()


def test_lock_outlives_the_last_connection_only(db_path: str) -> None:
    """Closing the lock descriptor drops SQLite's POSIX locks too: it stays open while a
    connection of the owner lives, even after close()."""
    owner = Database(db_path, exclusive=True)
    with owner.reading():
        owner.close()
        with pytest.raises(DatabaseInUse):
            Database(db_path, exclusive=True)
    Database(db_path, exclusive=True).close()


def test_lock_dies_with_its_process(db_path: str) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from caucase.storage import Database; "
            f"held = Database({db_path!r}, exclusive=True); "
            "print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(DatabaseInUse):
            Database(db_path, exclusive=True)
    finally:
        holder.kill()
        holder.wait()
    Database(db_path, exclusive=True).close()


def test_busy_past_the_timeout_is_a_storage_error(
    database: Database, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_connection, "BUSY_TIMEOUT", 0.05)
    storage = Storage(database, "cas")
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError, match="locked") as caught:
            storage.revoke(1, NOW, NOW + DAY)
        assert isinstance(caught.value.__cause__, sqlite3.Error)
    finally:
        other.execute("ROLLBACK")
        other.close()
    storage.revoke(1, NOW, NOW + DAY)
    assert storage.get_revoked(NOW) == [(1, NOW)]


def test_a_backup_dump_failing_is_a_storage_error(database: Database, db_path: str) -> None:
    """What caucased's backup task gets when the database fails under it."""
    storage = Storage(database, "cau")
    with database.reading() as connection:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    with open(db_path, "r+b") as damaged:
        damaged.write(b"not a database header")
    with pytest.raises(StorageError, match="not a database"):
        list(storage.dump())
    database.close()
    with pytest.raises(StorageError, match="closed"):
        list(storage.dump())


def test_corrupt_file_is_a_storage_error(db_path: str) -> None:
    Path(db_path).write_bytes(b"not a database, " * 512)
    with pytest.raises(StorageError, match="not a database"):
        Storage(db_path, "cas")


def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open database"):
        Database(str(tmp_path / "missing" / "caucase.sqlite"))


@pytest.mark.parametrize(
    ("replacement", "message"), [(False, "unusable"), (True, "replaced")], ids=["gone", "new"]
)
def test_no_write_lands_in_a_file_gone_from_its_path(
    database: Database, db_path: str, replacement: bool, message: str
) -> None:
    storage = Storage(database, "cas")
    storage.revoke(1, NOW, NOW + DAY)
    for suffix in ("", "-wal", "-shm"):
        os.unlink(db_path + suffix)
    if replacement:
        Storage(db_path, "cas").close()
    with pytest.raises(StorageError, match=message):
        storage.revoke(2, NOW, NOW + DAY)


def test_storage_errors_are_caucase_errors_and_not_sqlite_errors(database: Database) -> None:
    """What caucased's background tasks and the HTTP layer catch."""
    storage = Storage(database, "cas")
    database.close()
    with pytest.raises(CaucaseError) as caught:
        storage.get_crl_state()
    assert not isinstance(caught.value, sqlite3.Error)


def test_concurrent_readers_and_writers_share_one_owner(database: Database) -> None:
    storages = [Storage(database, prefix) for prefix in ("cau", "cas", "http_cas")]
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(20):
                storage = storages[(worker + n) % 3]
                storage.revoke(worker * 100 + n, NOW, NOW + DAY)
                assert worker * 100 + n in storage.revoked_serials(NOW)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(len(storage.get_revoked(NOW)) for storage in storages) == 120


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


@pytest.mark.slow
def test_second_caucased_and_writing_manage_are_refused(tmp_path: Path) -> None:
    server = start_caucased([OUR_BIN / "caucased"], tmp_path)
    db = str(tmp_path / "caucase.sqlite")
    try:
        second = run_command(
            str(OUR_BIN / "caucased"),
            "--db",
            db,
            "--server-key",
            str(tmp_path / "second.key.pem"),
            "--netloc",
            f"127.0.0.1:{free_port_pair()}",
        )
        # A CRL the running CAS signed: manage reads and checks it before the database.
        crl = tmp_path / "cas.crl.pem"
        with urllib.request.urlopen(server.http_url + "/cas/crl", timeout=30) as reply:
            crl.write_bytes(reply.read())
        manage = run_command(
            str(OUR_BIN / "caucased-manage"), "--db", db, "--import-crl", str(crl)
        )
    finally:
        assert server.stop() == 0
    for result in (second, manage):
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "is in use by another caucased" in lines[0], result.stderr
    assert not (tmp_path / "second.key.pem").exists()
    after = run_command(str(OUR_BIN / "caucased-manage"), "--db", db, "--import-crl", str(crl))
    assert "in use" not in after.stderr
