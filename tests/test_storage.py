"""Storage: round trips, reference-compatible schema and storage classes, limits, purges."""

from __future__ import annotations

import datetime
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from caucase import exceptions
from caucase.storage import Database, Storage, restore_database

NOW = 1_800_000_000
DAY = 86400
KEY_ID_A = "a1" * 20
KEY_ID_B = "b2" * 20

EXPECTED_CRT_DDL = (
    "CREATE TABLE {prefix}crt (\n"
    "          id INTEGER PRIMARY KEY,\n"
    "          key_id TEXT {unique},\n"
    "          expiration_date INTEGER,\n"
    "          csr TEXT,\n"
    "          crt TEXT\n"
    "        )"
)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "caucase.sqlite")


@pytest.fixture
def database(db_path: str) -> Iterator[Database]:
    with Database(db_path) as database:
        yield database


@pytest.fixture
def cas(database: Database) -> Storage:
    return Storage(database, "cas", max_csr_amount=3)


@pytest.fixture
def cau(database: Database) -> Storage:
    return Storage(database, "cau", enforce_unique_key_id=True)


def query(db_path: str, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple]:
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def test_schema_text_follows_reference_layout(cas: Storage, cau: Storage, db_path: str) -> None:
    rows = dict(query(db_path, "SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert rows["cascrt"] == EXPECTED_CRT_DDL.format(prefix="cas", unique="")
    assert rows["caucrt"] == EXPECTED_CRT_DDL.format(prefix="cau", unique="UNIQUE")
    assert rows["casrevoked"] == (
        "CREATE TABLE casrevoked (\n"
        "          serial TEXT PRIMARY KEY,\n"
        "          revocation_date INTEGER,\n"
        "          expiration_date INTEGER\n"
        "        )"
    )
    creation_order = [
        name
        for (name,) in query(
            db_path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid"
        )
    ]
    suffixes = ["ca", "crt", "revoked", "counter", "config_once", "config"]
    reason_tables = ["cas_revocation_reason", "cau_revocation_reason"]
    reference_order = [name for name in creation_order if name not in reason_tables]
    assert reference_order == ["cas" + s for s in suffixes] + ["cau" + s for s in suffixes]
    assert set(creation_order) - set(reference_order) == set(reason_tables)
    autoindexes = query(
        db_path,
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'sqlite_autoindex%'",
    )
    # 4 per prefix, the UNIQUE key_id of cau only, and each revocation reason table's key.
    assert len(autoindexes) == 11
    # Our own indexes (performance); cau's UNIQUE key_id needs no second one.
    indexes = {
        name
        for (name,) in query(
            db_path,
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
        )
    }
    assert indexes == {
        "cascrt_expiration_date",
        "cascrt_pending",
        "cascrt_key_id",
        "casrevoked_expiration_date",
        "caucrt_expiration_date",
        "caucrt_pending",
        "caurevoked_expiration_date",
    }


def test_reopening_keeps_data_and_schema(cas: Storage, db_path: str) -> None:
    cas.append_ca_key_pair(NOW + DAY, b"key", b"crt")
    again = Storage(db_path, "cas")
    assert again.get_ca_key_pairs(NOW) == [(b"key", b"crt")]
    again.close()


def test_file_and_wal_side_files_are_private(tmp_path: Path) -> None:
    previous_umask = os.umask(0o022)
    try:
        path = tmp_path / "db.sqlite"
        storage = Storage(str(path), "cas")
        storage.append_ca_key_pair(NOW, b"key", b"crt")
        assert query(str(path), "PRAGMA journal_mode") == [("wal",)]
        for name in ("db.sqlite", "db.sqlite-wal", "db.sqlite-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        storage.close()
    finally:
        os.umask(previous_umask)


def test_ca_key_pairs_ordered_and_expired_purged(cas: Storage, db_path: str) -> None:
    cas.append_ca_key_pair(NOW + 2 * DAY, b"key2", b"crt2")
    cas.append_ca_key_pair(NOW - 1, b"old-key", b"old-crt")
    cas.append_ca_key_pair(NOW + DAY, b"key1", b"crt1")
    assert cas.get_ca_key_pairs(NOW) == [(b"key1", b"crt1"), (b"key2", b"crt2")]
    assert query(db_path, "SELECT COUNT(*) FROM casca") == [(2,)]
    assert query(db_path, "SELECT DISTINCT typeof(key), typeof(crt) FROM casca") == [
        ("blob", "blob")
    ]


def test_pem_columns_are_blobs_and_text_rows_still_read(cas: Storage, db_path: str) -> None:
    csr_id, _ = cas.append_csr(b"csr-pem", KEY_ID_A, NOW)
    cas.store_certificate(csr_id, b"crt-pem", NOW)
    types = query(
        db_path,
        "SELECT typeof(id), typeof(key_id), typeof(expiration_date), typeof(csr), typeof(crt)"
        " FROM cascrt",
    )
    assert types == [("integer", "blob", "integer", "blob", "blob")]
    connection = sqlite3.connect(db_path)
    with connection:
        connection.execute(
            "INSERT INTO cascrt VALUES (7, ?, ?, 'text-csr', 'text-crt')", (KEY_ID_B, NOW + DAY)
        )
        connection.execute("INSERT INTO casca VALUES (?, 'text-key', 'text-crt')", (NOW + DAY,))
    connection.close()
    assert cas.get_csr(7) == b"text-csr"
    assert cas.get_certificate(7, NOW) == b"text-crt"
    assert cas.get_certificate_by_key_id(KEY_ID_B) == b"text-crt"
    assert cas.get_ca_key_pairs(NOW) == [(b"text-key", b"text-crt")]
    assert cas.append_csr(b"text-csr", KEY_ID_B, NOW) == (7, None)


def test_csr_lifecycle(cas: Storage) -> None:
    csr_id, counted = cas.append_csr(b"csr", KEY_ID_A, NOW)
    assert 0 <= csr_id < 2**63
    assert counted == 1
    assert cas.get_csr(csr_id) == b"csr"
    assert cas.get_pending_csr_list() == [(csr_id, b"csr")]
    with pytest.raises(exceptions.NotFound):
        cas.get_certificate(csr_id, NOW)
    cas.store_certificate(csr_id, b"crt", NOW)
    assert cas.get_pending_csr_list() == []
    assert cas.get_csr(csr_id) == b"csr"
    assert cas.get_certificate(csr_id, NOW) == b"crt"
    assert cas.get_certificate_by_key_id(KEY_ID_A) == b"crt"
    assert list(cas.iter_certificates()) == [b"crt"]
    with pytest.raises(exceptions.NotFound):
        cas.store_certificate(csr_id, b"again", NOW)
    with pytest.raises(exceptions.NotFound):
        cas.delete_pending_csr(csr_id)
    with pytest.raises(exceptions.NotFound):
        cas.get_csr(csr_id + 1)
    with pytest.raises(exceptions.NotFound):
        cas.get_certificate_by_key_id(KEY_ID_B)


def test_pending_list_ascending_and_rejection(cas: Storage) -> None:
    ids = [cas.append_csr(b"csr%d" % n, KEY_ID_A, NOW)[0] for n in range(3)]
    assert [csr_id for csr_id, _ in cas.get_pending_csr_list()] == sorted(ids)
    cas.delete_pending_csr(ids[1])
    with pytest.raises(exceptions.NotFound):
        cas.get_csr(ids[1])
    with pytest.raises(exceptions.NotFound):
        cas.delete_pending_csr(ids[1])
    assert len(cas.get_pending_csr_list()) == 2


def test_identical_csr_is_deduplicated_without_counting(cas: Storage, db_path: str) -> None:
    first = cas.append_csr(b"same", KEY_ID_A, NOW)
    assert cas.append_csr(b"same", KEY_ID_A, NOW) == (first[0], None)
    cas.store_certificate(first[0], b"crt", NOW)
    assert cas.append_csr(b"same", KEY_ID_A, NOW) == (first[0], None)
    assert query(db_path, "SELECT value FROM cascounter WHERE name = 'received_csr'") == [(1,)]


def test_quota_refuses_without_counting_and_override_bypasses(cas: Storage, db_path: str) -> None:
    assert [cas.append_csr(b"csr%d" % n, KEY_ID_A, NOW)[1] for n in range(3)] == [1, 2, 3]
    with pytest.raises(exceptions.NoStorage):
        cas.append_csr(b"one too many", KEY_ID_A, NOW)
    renewal_id, counted = cas.append_csr(b"renewal", KEY_ID_A, NOW, override_limits=True)
    assert counted is None
    assert cas.get_csr(renewal_id) == b"renewal"
    assert query(db_path, "SELECT value FROM cascounter WHERE name = 'received_csr'") == [(3,)]
    assert len(cas.get_pending_csr_list()) == 4


def test_unique_key_id_clash_is_a_caucase_error(cau: Storage, db_path: str) -> None:
    cau.append_csr(b"first", KEY_ID_A, NOW)
    with pytest.raises(exceptions.KeyAlreadyUsed):
        cau.append_csr(b"second, same key", KEY_ID_A, NOW)
    with pytest.raises(exceptions.KeyAlreadyUsed):
        cau.append_csr(b"renewal, same key", KEY_ID_A, NOW, override_limits=True)
    assert query(db_path, "SELECT COUNT(*) FROM caucrt") == [(1,)]
    assert query(db_path, "SELECT value FROM caucounter WHERE name = 'received_csr'") == [(1,)]


def test_non_unique_prefix_accepts_key_reuse(cas: Storage) -> None:
    cas.append_csr(b"first", KEY_ID_A, NOW)
    cas.append_csr(b"second", KEY_ID_A, NOW)
    assert len(cas.get_pending_csr_list()) == 2


def test_keep_times_and_purge_on_insert(db_path: str) -> None:
    storage = Storage(db_path, "cas", crt_keep_time=1, crt_read_keep_time=0.05)
    signed, _ = storage.append_csr(b"signed", KEY_ID_A, NOW)
    read, _ = storage.append_csr(b"read", KEY_ID_A, NOW)
    pending, _ = storage.append_csr(b"pending", KEY_ID_A, NOW)
    storage.store_certificate(signed, b"crt1", NOW)
    storage.store_certificate(read, b"crt2", NOW)
    storage.get_certificate(read, NOW + 100)
    expirations = dict(query(db_path, "SELECT id, expiration_date FROM cascrt"))
    assert expirations == {signed: NOW + DAY, read: NOW + 100 + 4320, pending: None}
    storage.get_certificate(read, NOW + 200)  # a later read never extends the keep time
    assert query(db_path, "SELECT expiration_date FROM cascrt WHERE id = ?", (read,)) == [
        (NOW + 100 + 4320,)
    ]
    storage.append_csr(b"trigger purge", KEY_ID_A, NOW + 5000)
    remaining = {row[0] for row in query(db_path, "SELECT id FROM cascrt")}
    assert signed in remaining and pending in remaining and read not in remaining
    storage.append_csr(b"trigger purge again", KEY_ID_A, NOW + DAY + 1)
    remaining = {row[0] for row in query(db_path, "SELECT id FROM cascrt")}
    assert signed not in remaining and pending in remaining
    storage.close()


def test_revocations_and_crl_bookkeeping(cas: Storage, db_path: str) -> None:
    assert cas.get_crl_state() == (0, None)
    cas.revoke(2**200, NOW, NOW + DAY)
    cas.revoke(5, NOW, NOW + 10)
    with pytest.raises(exceptions.Found):
        cas.revoke(5, NOW, NOW + DAY)
    assert cas.get_crl_state() == (2, None)
    assert query(db_path, "SELECT DISTINCT typeof(serial) FROM casrevoked") == [("text",)]
    assert cas.get_revoked(NOW) == [(2**200, NOW), (5, NOW)]
    assert cas.get_revoked(NOW + 11) == [(2**200, NOW)]
    assert cas.revoke_many([7, 2**200, 8], NOW, NOW + DAY) == (2, 1)
    assert cas.get_crl_state() == (4, None)
    assert cas.start_crl_generation(NOW - 10) == 5
    assert cas.get_crl_state() == (5, NOW - 10)
    assert query(db_path, "SELECT typeof(value) FROM casconfig") == [("text",)]
    cas.set_crl_state(42, NOW)
    assert cas.get_crl_state() == (42, NOW)


def test_revoked_serials_are_looked_up_like_get_revoked_lists_them(
    cas: Storage, db_path: str
) -> None:
    cas.revoke(2**200, NOW, NOW + DAY)
    cas.revoke(5, NOW, NOW + 10)
    connection = sqlite3.connect(db_path)
    with connection:
        connection.execute("INSERT INTO casrevoked VALUES ('0x10', ?, NULL)", (NOW,))
        connection.execute("INSERT INTO casrevoked VALUES ('7', ?, NULL)", (NOW,))
    connection.close()
    revoked = cas.revoked_serials(NOW)
    assert 2**200 in revoked and 5 in revoked and 7 in revoked
    assert 16 not in revoked and 6 not in revoked and "5" not in revoked
    assert 5 not in cas.revoked_serials(NOW + 11)  # expired: get_revoked purges it
    assert sorted(serial for serial, _ in cas.get_revoked(NOW + 11)) == [7, 2**200]


def test_revoked_lookup_is_one_primary_key_search(cas: Storage, database: Database) -> None:
    for serial in range(1000):
        cas.revoke(serial, NOW, NOW + DAY)
    statements: list[str] = []
    with database.reading() as connection:  # the pool lends it again next: LIFO
        connection.set_trace_callback(statements.append)
    assert 500 in cas.revoked_serials(NOW)
    with database.reading() as connection:
        connection.set_trace_callback(None)
        (lookup,) = statements
        plan = connection.execute("EXPLAIN QUERY PLAN " + lookup).fetchall()
    assert [row[3] for row in plan] == [
        "SEARCH casrevoked USING INDEX sqlite_autoindex_casrevoked_1 (serial=?)"
    ]


def test_poisoned_serials_are_skipped_and_logged_once(
    cas: Storage, db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    connection = sqlite3.connect(db_path)
    with connection:
        for serial in ("12", "-5", "0x10", "1.5", "True", "0"):
            connection.execute("INSERT INTO casrevoked VALUES (?, ?, ?)", (serial, NOW, NOW + 9))
    connection.close()
    with caplog.at_level(logging.WARNING, logger="caucase.storage.sqlite"):
        assert cas.get_revoked(NOW) == [(12, NOW), (0, NOW)]
        assert cas.get_revoked(NOW) == [(12, NOW), (0, NOW)]
    assert len(caplog.records) == 4


def test_auto_sign_amount_first_lock_wins(cas: Storage, db_path: str) -> None:
    assert cas.get_locked_auto_sign_amount() is None
    cas.lock_auto_sign_amount(3)
    cas.lock_auto_sign_amount(9)
    assert cas.get_locked_auto_sign_amount() == 3
    assert query(db_path, "SELECT value, typeof(value) FROM casconfig_once") == [("3", "text")]


def make_crl_pem(this_update: datetime.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "legacy")])
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(this_update)
        .next_update(this_update + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def test_legacy_crl_table_migrated_and_dropped(db_path: str) -> None:
    newest = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    older = newest - datetime.timedelta(days=10)
    connection = sqlite3.connect(db_path)
    with connection:
        connection.execute(
            "CREATE TABLE cascrl (id INTEGER PRIMARY KEY, expiration_date INTEGER, crl TEXT)"
        )
        connection.execute("INSERT INTO cascrl VALUES (1, 20, ?)", (make_crl_pem(newest),))
        connection.execute("INSERT INTO cascrl VALUES (2, 10, ?)", (make_crl_pem(older),))
    connection.close()
    storage = Storage(db_path, "cas")
    assert storage.get_crl_state() == (0, int(newest.timestamp()))
    assert query(db_path, "SELECT name FROM sqlite_master WHERE name = 'cascrl'") == []
    storage.close()


def test_empty_legacy_crl_table_is_left_alone(db_path: str) -> None:
    connection = sqlite3.connect(db_path)
    connection.execute("CREATE TABLE cascrl (expiration_date INTEGER, crl TEXT)")
    connection.close()
    storage = Storage(db_path, "cas")
    assert storage.get_crl_state() == (0, None)
    assert query(db_path, "SELECT name FROM sqlite_master WHERE name = 'cascrl'") == [("cascrl",)]
    storage.close()


def test_concurrent_writers_from_threads_all_land(cas: Storage) -> None:
    errors: list[BaseException] = []

    def submit(worker: int) -> None:
        try:
            for n in range(20):
                cas.revoke(worker * 1000 + n, NOW, NOW + DAY)
                cas.append_csr(b"w%d-%d" % (worker, n), KEY_ID_A, NOW, override_limits=True)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=submit, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cas.get_revoked(NOW)) == 160
    assert len(cas.get_pending_csr_list()) == 160
    assert cas.get_crl_state()[0] == 160


def test_dump_covers_every_prefix_in_reference_format(cas: Storage, cau: Storage) -> None:
    cas.append_csr(b"csr", KEY_ID_A, NOW)
    cau.lock_auto_sign_amount(1)
    statements = list(cau.dump())
    assert statements[0] == "BEGIN TRANSACTION;"
    assert statements[-1] == "COMMIT;"
    assert "INSERT INTO \"cauconfig_once\" VALUES('auto_sign_csr_amount','1');" in statements
    csr_rows = [s for s in statements if s.startswith('INSERT INTO "cascrt"')]
    assert len(csr_rows) == 1
    assert csr_rows[0].endswith(f",X'{KEY_ID_A.encode().hex().upper()}',NULL,X'637372',NULL);")


def test_dump_is_one_snapshot_despite_concurrent_writes(cas: Storage) -> None:
    for n in range(50):
        cas.revoke(n, NOW, NOW + DAY)
    dump = cas.dump()
    head = [next(dump) for _ in range(3)]
    writer = threading.Thread(target=lambda: cas.revoke(999, NOW, NOW + DAY))
    writer.start()
    writer.join()
    statements = head + list(dump)
    revoked = [s for s in statements if s.startswith('INSERT INTO "casrevoked"')]
    assert len(revoked) == 50
    assert len(cas.get_revoked(NOW)) == 51


def test_restore_round_trip(cas: Storage, cau: Storage, tmp_path: Path) -> None:
    cas.append_ca_key_pair(NOW + DAY, b"key", b"crt")
    cau.append_csr(b"user csr", KEY_ID_A, NOW)
    cau.revoke(77, NOW, NOW + DAY)
    target = str(tmp_path / "restored.sqlite")
    previous_umask = os.umask(0o022)
    try:
        restore_database(target, cau.dump())
    finally:
        os.umask(previous_umask)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    with Database(target) as restored_database:
        restored = Storage(restored_database, "cau", enforce_unique_key_id=True)
        assert restored.get_revoked(NOW) == [(77, NOW)]
        assert restored.get_pending_csr_list()[0][1] == b"user csr"
        restored_cas = Storage(restored_database, "cas")
        assert restored_cas.get_ca_key_pairs(NOW) == [(b"key", b"crt")]
        assert list(restored.dump()) == list(cau.dump())


def test_restore_refuses_existing_path(cas: Storage, db_path: str) -> None:
    with pytest.raises(FileExistsError, match="exists, not restoring"):
        restore_database(db_path, cas.dump())
    assert cas.get_crl_state() == (0, None)


def test_restore_failure_leaves_no_file(cas: Storage, tmp_path: Path) -> None:
    cas.revoke(1, NOW, NOW + DAY)
    statements = list(cas.dump())
    broken = [*statements[:-1], "INSERT INTO nowhere VALUES (1);", statements[-1]]
    target = tmp_path / "restored.sqlite"
    with pytest.raises(exceptions.CaucaseError, match="nowhere"):
        restore_database(str(target), iter(broken))
    assert list(tmp_path.glob("restored*")) == []


def test_restore_failure_from_statement_source_leaves_no_file(
    cas: Storage, tmp_path: Path
) -> None:
    def truncated() -> object:
        yield from list(cas.dump())[:-1]
        raise exceptions.BackupError("Short read, backup truncated ?")

    target = tmp_path / "restored.sqlite"
    with pytest.raises(exceptions.BackupError):
        restore_database(str(target), truncated())  # type: ignore[arg-type]
    assert not target.exists()


def test_restore_of_uncommitted_dump_is_refused(cas: Storage, tmp_path: Path) -> None:
    target = tmp_path / "restored.sqlite"
    with pytest.raises(exceptions.CaucaseError, match="inside a transaction"):
        restore_database(str(target), iter(list(cas.dump())[:-1]))
    assert not target.exists()
