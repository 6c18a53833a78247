"""Storage: round trips, reference-compatible schema and storage classes, limits, purges,
dumps and restores, on both engines (SQLite and PostgreSQL): every test runs on each.

Values are observed through the engine itself (portable SQL), or through the engine's dump
loaded into an in-memory SQLite database: the dump is the contract (what the reference
restores), and it shows each value's SQLite type."""

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
from caucase.storage import (
    Engine,
    StaleCAList,
    Storage,
    exists,
    open_database,
    restore_database,
)
from tests.support.postgres import PostgresServer

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
def database(db_location: str) -> Iterator[Engine]:
    database = open_database(db_location)
    yield database
    database.close()


@pytest.fixture
def cas(database: Engine) -> Storage:
    return Storage(database, "cas", max_csr_amount=3)


@pytest.fixture
def cau(database: Engine) -> Storage:
    return Storage(database, "cau", enforce_unique_key_id=True)


@pytest.fixture
def other_location(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second, empty database of the same engine (restore targets)."""
    if engine == "sqlite":
        yield str(tmp_path / "restored.sqlite")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.new_database()
    yield url
    server.drop_database(url)


def query(database: Engine, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple]:
    """Rows of a portable statement, read through the engine."""
    with database.reading() as connection:
        return [tuple(row) for row in connection.execute(sql, parameters).fetchall()]


def execute(database: Engine, sql: str, parameters: tuple[object, ...] = ()) -> None:
    """A portable statement written through the engine, as another writer would."""
    with database.writing() as connection:
        connection.execute(sql, parameters)


def dumped(database: Engine, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple]:
    """Rows of an SQLite statement over the engine's dump, loaded into memory."""
    memory = sqlite3.connect(":memory:")
    try:
        for statement in database.dump():
            memory.execute(statement)
        return memory.execute(sql, parameters).fetchall()
    finally:
        memory.close()


def table_creation_order(database: Engine) -> list[str]:
    """Tables in the order the storage created them."""
    if not database.strict_types:
        return [
            name
            for (name,) in query(
                database, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid"
            )
        ]
    return [
        name
        for (name,) in query(
            database, "SELECT name FROM caucase_schema WHERE kind = 'table' ORDER BY position"
        )
    ]


def has_table(database: Engine, name: str) -> bool:
    with database.reading() as connection:
        return database.has_table(connection, name)


def test_schema_text_follows_reference_layout(
    cas: Storage, cau: Storage, database: Engine
) -> None:
    rows = dict(dumped(database, "SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert rows["cascrt"] == EXPECTED_CRT_DDL.format(prefix="cas", unique="")
    assert rows["caucrt"] == EXPECTED_CRT_DDL.format(prefix="cau", unique="UNIQUE")
    assert rows["casrevoked"] == (
        "CREATE TABLE casrevoked (\n"
        "          serial TEXT PRIMARY KEY,\n"
        "          revocation_date INTEGER,\n"
        "          expiration_date INTEGER\n"
        "        )"
    )
    suffixes = [
        *("ca", "crt", "revoked", "counter", "config_once", "config"),
        *("_issued_crl", "_revocation_reason", "_renewal", "_inventory"),
    ]
    assert table_creation_order(database) == [
        prefix + suffix for prefix in ("cas", "cau") for suffix in suffixes
    ]
    autoindexes = dumped(
        database,
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'sqlite_autoindex%'",
    )
    # 4 per prefix, plus the UNIQUE key_id of cau only, plus the primary keys of our issued
    # CRLs, revocation reasons, renewal index and inventory.
    assert len(autoindexes) == 17
    # Our own indexes (performance); cau's UNIQUE key_id needs no second one.
    indexes = {
        name
        for (name,) in dumped(
            database,
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
        "cas_renewal_not_after",
        "cau_renewal_not_after",
        "cas_inventory_not_after",
        "cau_inventory_not_after",
    }


def test_reopening_keeps_data_and_schema(cas: Storage, db_location: str) -> None:
    cas.append_ca_key_pair(NOW + DAY, b"key", b"crt")
    again = Storage(db_location, "cas")
    assert again.get_ca_key_pairs(NOW) == [(b"key", b"crt")]
    again.close()


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_file_and_wal_side_files_are_private(tmp_path: Path, engine: str) -> None:
    """SQLite's own files (PostgreSQL keeps its files to itself)."""
    previous_umask = os.umask(0o022)
    try:
        path = tmp_path / "db.sqlite"
        storage = Storage(str(path), "cas")
        storage.append_ca_key_pair(NOW, b"key", b"crt")
        connection = sqlite3.connect(path)
        assert connection.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        connection.close()
        for name in ("db.sqlite", "db.sqlite-wal", "db.sqlite-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        storage.close()
    finally:
        os.umask(previous_umask)


def test_ca_key_pairs_ordered_and_expired_purged(cas: Storage, database: Engine) -> None:
    cas.append_ca_key_pair(NOW + 2 * DAY, b"key2", b"crt2")
    cas.append_ca_key_pair(NOW - 1, b"old-key", b"old-crt")
    cas.append_ca_key_pair(NOW + DAY, b"key1", b"crt1")
    assert cas.get_ca_key_pairs(NOW) == [(b"key1", b"crt1"), (b"key2", b"crt2")]
    assert query(database, "SELECT COUNT(*) FROM casca") == [(2,)]
    assert dumped(database, "SELECT DISTINCT typeof(key), typeof(crt) FROM casca") == [
        ("blob", "blob")
    ]


def test_ca_version_changes_with_every_added_or_purged_row(cas: Storage) -> None:
    empty = cas.get_ca_version()
    assert empty == (0, None)
    assert cas.append_next_ca_key_pair(empty, NOW + DAY, b"key1", b"crt1")
    first = cas.get_ca_version()
    assert first == (1, NOW + DAY)
    # Another node's CA came first: a decision made on the empty table stores nothing.
    assert not cas.append_next_ca_key_pair(empty, NOW + 2 * DAY, b"key2", b"crt2")
    assert cas.get_ca_key_pairs(NOW) == [(b"key1", b"crt1")]
    cas.get_ca_key_pairs(NOW + DAY + 1)
    assert cas.get_ca_version() == (0, None)


def test_pem_columns_are_blobs_and_text_rows_still_read(cas: Storage, database: Engine) -> None:
    csr_id, _ = cas.append_csr(b"csr-pem", KEY_ID_A, NOW)
    cas.store_certificate(csr_id, b"crt-pem", NOW)
    types = dumped(
        database,
        "SELECT typeof(id), typeof(key_id), typeof(expiration_date), typeof(csr), typeof(crt)"
        " FROM cascrt",
    )
    assert types == [("integer", "blob", "integer", "blob", "blob")]
    # Rows as the reference (or a copy of its database) writes them: PEMs as TEXT.
    execute(
        database,
        "INSERT INTO cascrt VALUES (7, ?, ?, 'text-csr', 'text-crt')",
        (KEY_ID_B.encode() if database.strict_types else KEY_ID_B, NOW + DAY),
    )
    execute(database, "INSERT INTO casca VALUES (?, 'text-key', 'text-crt')", (NOW + DAY,))
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


def test_identical_csr_is_deduplicated_without_counting(cas: Storage, database: Engine) -> None:
    first = cas.append_csr(b"same", KEY_ID_A, NOW)
    assert cas.append_csr(b"same", KEY_ID_A, NOW) == (first[0], None)
    cas.store_certificate(first[0], b"crt", NOW)
    assert cas.append_csr(b"same", KEY_ID_A, NOW) == (first[0], None)
    assert query(database, "SELECT value FROM cascounter WHERE name = 'received_csr'") == [(1,)]


def test_quota_refuses_without_counting_and_override_bypasses(
    cas: Storage, database: Engine
) -> None:
    assert [cas.append_csr(b"csr%d" % n, KEY_ID_A, NOW)[1] for n in range(3)] == [1, 2, 3]
    with pytest.raises(exceptions.NoStorage):
        cas.append_csr(b"one too many", KEY_ID_A, NOW)
    renewal_id, counted = cas.append_csr(b"renewal", KEY_ID_A, NOW, override_limits=True)
    assert counted is None
    assert cas.get_csr(renewal_id) == b"renewal"
    assert query(database, "SELECT value FROM cascounter WHERE name = 'received_csr'") == [(3,)]
    assert len(cas.get_pending_csr_list()) == 4


def test_unique_key_id_clash_is_a_caucase_error(cau: Storage, database: Engine) -> None:
    cau.append_csr(b"first", KEY_ID_A, NOW)
    with pytest.raises(exceptions.KeyAlreadyUsed):
        cau.append_csr(b"second, same key", KEY_ID_A, NOW)
    with pytest.raises(exceptions.KeyAlreadyUsed):
        cau.append_csr(b"renewal, same key", KEY_ID_A, NOW, override_limits=True)
    assert query(database, "SELECT COUNT(*) FROM caucrt") == [(1,)]
    assert query(database, "SELECT value FROM caucounter WHERE name = 'received_csr'") == [(1,)]


def test_non_unique_prefix_accepts_key_reuse(cas: Storage) -> None:
    cas.append_csr(b"first", KEY_ID_A, NOW)
    cas.append_csr(b"second", KEY_ID_A, NOW)
    assert len(cas.get_pending_csr_list()) == 2


def test_keep_times_and_purge_on_insert(database: Engine) -> None:
    storage = Storage(database, "cas", crt_keep_time=1, crt_read_keep_time=0.05)
    signed, _ = storage.append_csr(b"signed", KEY_ID_A, NOW)
    read, _ = storage.append_csr(b"read", KEY_ID_A, NOW)
    pending, _ = storage.append_csr(b"pending", KEY_ID_A, NOW)
    storage.store_certificate(signed, b"crt1", NOW)
    storage.store_certificate(read, b"crt2", NOW)
    storage.get_certificate(read, NOW + 100)
    with pytest.raises(exceptions.NotFound):
        storage.get_certificate(pending, NOW + 100)  # a pending row keeps no keep time
    expirations = dict(query(database, "SELECT id, expiration_date FROM cascrt"))
    assert expirations == {signed: NOW + DAY, read: NOW + 100 + 4320, pending: None}
    storage.get_certificate(read, NOW + 200)  # a later read never extends the keep time
    assert query(database, "SELECT expiration_date FROM cascrt WHERE id = ?", (read,)) == [
        (NOW + 100 + 4320,)
    ]
    storage.append_csr(b"trigger purge", KEY_ID_A, NOW + 5000)
    remaining = {row[0] for row in query(database, "SELECT id FROM cascrt")}
    assert signed in remaining and pending in remaining and read not in remaining
    storage.append_csr(b"trigger purge again", KEY_ID_A, NOW + DAY + 1)
    remaining = {row[0] for row in query(database, "SELECT id FROM cascrt")}
    assert signed not in remaining and pending in remaining
    storage.close()


def test_purges_run_once_per_second_and_catch_up_the_next(database: Engine) -> None:
    """A purge in a second this storage already purged in is skipped; what another
    process left expired meanwhile goes with the first purge of a later second."""
    storage = Storage(database, "cas")
    other = Storage(database, "cas", crt_keep_time=0, crt_read_keep_time=0)
    storage.append_csr(b"first of the second", KEY_ID_A, NOW + 10)
    expired, _ = other.append_csr(b"expired", KEY_ID_A, NOW)
    other.store_certificate(expired, b"crt", NOW)
    storage.append_csr(b"same second", KEY_ID_A, NOW + 10)
    assert query(database, "SELECT id FROM cascrt WHERE id = ?", (expired,)) == [(expired,)]
    storage.append_csr(b"next second", KEY_ID_A, NOW + 11)
    assert query(database, "SELECT id FROM cascrt WHERE id = ?", (expired,)) == []
    other.close()
    storage.close()


def test_a_csr_signed_from_a_stale_ca_list_stores_nothing(cas: Storage) -> None:
    version = cas.get_ca_version()
    cas.append_ca_key_pair(NOW + DAY, b"key", b"crt")
    with pytest.raises(StaleCAList):
        cas.append_csr_signed(b"csr", KEY_ID_A, NOW, b"crt", 5, ca_version=version)
    assert cas.get_pending_csr_list() == []
    csr_id, received, stored = cas.append_csr_signed(
        b"csr", KEY_ID_A, NOW, b"crt", 5, ca_version=cas.get_ca_version()
    )
    assert (received, stored) == (1, True)  # the refused one counted nothing
    assert cas.get_certificate(csr_id, NOW) == b"crt"


def test_revocations_and_crl_bookkeeping(cas: Storage, database: Engine) -> None:
    assert cas.get_crl_state() == (0, None)
    cas.revoke(2**200, NOW, NOW + DAY)
    cas.revoke(5, NOW, NOW + 10)
    with pytest.raises(exceptions.Found):
        cas.revoke(5, NOW, NOW + DAY)
    assert cas.get_crl_state() == (2, None)
    assert dumped(database, "SELECT DISTINCT typeof(serial) FROM casrevoked") == [("text",)]
    assert cas.get_revoked(NOW) == [(2**200, NOW), (5, NOW)]
    assert cas.get_revoked(NOW + 11) == [(2**200, NOW)]
    assert cas.revoke_many([7, 2**200, 8], NOW, NOW + DAY) == (2, 1)
    assert cas.get_crl_state() == (4, None)
    assert cas.start_crl_generation(NOW - 10) == 5
    assert cas.get_crl_state() == (5, NOW - 10)
    assert dumped(database, "SELECT typeof(value) FROM casconfig") == [("text",)]
    cas.set_crl_state(42, NOW)
    assert cas.get_crl_state() == (42, NOW)


def test_revoked_serials_are_looked_up_like_get_revoked_lists_them(
    cas: Storage, database: Engine
) -> None:
    cas.revoke(2**200, NOW, NOW + DAY)
    cas.revoke(5, NOW, NOW + 10)
    execute(database, "INSERT INTO casrevoked VALUES ('0x10', ?, NULL)", (NOW,))
    execute(database, "INSERT INTO casrevoked VALUES ('7', ?, NULL)", (NOW,))
    revoked = cas.revoked_serials(NOW)
    assert 2**200 in revoked and 5 in revoked and 7 in revoked
    assert 16 not in revoked and 6 not in revoked and "5" not in revoked
    assert 5 not in cas.revoked_serials(NOW + 11)  # expired: get_revoked purges it
    assert sorted(serial for serial, _ in cas.get_revoked(NOW + 11)) == [7, 2**200]


def test_revoked_lookup_is_one_primary_key_search(cas: Storage, database: Engine) -> None:
    for serial in range(1000):
        cas.revoke(serial, NOW, NOW + DAY)
    lookup = (
        "SELECT 1 FROM casrevoked WHERE serial = ? "
        "AND (expiration_date IS NULL OR expiration_date >= ?)"
    )
    if database.strict_types:
        (plan,) = query(database, "EXPLAIN " + lookup, ("500", NOW))[0]
        assert plan.startswith("Index Scan using casrevoked_pkey on casrevoked"), plan
        assert 500 in cas.revoked_serials(NOW)
        return
    statements: list[str] = []
    with database.reading() as connection:  # the pool lends it again next: LIFO
        connection.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    assert 500 in cas.revoked_serials(NOW)
    with database.reading() as connection:
        connection.set_trace_callback(None)  # type: ignore[attr-defined]
        (traced,) = statements
        plan = connection.execute("EXPLAIN QUERY PLAN " + traced).fetchall()
    assert [row[3] for row in plan] == [
        "SEARCH casrevoked USING INDEX sqlite_autoindex_casrevoked_1 (serial=?)"
    ]


def test_poisoned_serials_are_skipped_and_logged_once(
    cas: Storage, database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    for offset, serial in enumerate(("12", "-5", "0x10", "1.5", "True", "0")):
        # Distinct dates give the same order on both engines (PostgreSQL orders by date).
        execute(
            database, "INSERT INTO casrevoked VALUES (?, ?, ?)", (serial, NOW + offset, NOW + 9)
        )
    with caplog.at_level(logging.WARNING, logger="caucase.storage.revocations"):
        assert cas.get_revoked(NOW) == [(12, NOW), (0, NOW + 5)]
        assert cas.get_revoked(NOW) == [(12, NOW), (0, NOW + 5)]
    assert len(caplog.records) == 4


def test_auto_sign_amount_first_lock_wins(cas: Storage, database: Engine) -> None:
    assert cas.get_locked_auto_sign_amount() is None
    cas.lock_auto_sign_amount(3)
    cas.lock_auto_sign_amount(9)
    assert cas.get_locked_auto_sign_amount() == 3
    assert dumped(database, "SELECT value, typeof(value) FROM casconfig_once") == [("3", "text")]


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


def test_legacy_crl_table_migrated_and_dropped(database: Engine) -> None:
    newest = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    older = newest - datetime.timedelta(days=10)
    execute(
        database,
        "CREATE TABLE cascrl (id INTEGER PRIMARY KEY, expiration_date INTEGER, crl TEXT)",
    )
    execute(database, "INSERT INTO cascrl VALUES (1, 20, ?)", (make_crl_pem(newest),))
    execute(database, "INSERT INTO cascrl VALUES (2, 10, ?)", (make_crl_pem(older),))
    storage = Storage(database, "cas")
    assert storage.get_crl_state() == (0, int(newest.timestamp()))
    assert not has_table(database, "cascrl")
    assert [s for s in storage.dump() if "cascrl" in s] == []


def test_empty_legacy_crl_table_is_left_alone(database: Engine) -> None:
    execute(database, "CREATE TABLE cascrl (expiration_date INTEGER, crl TEXT)")
    storage = Storage(database, "cas")
    assert storage.get_crl_state() == (0, None)
    assert has_table(database, "cascrl")


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


def test_issued_crls_are_stored_per_authority_and_replaced(cas: Storage) -> None:
    assert cas.get_issued_crls() == {}
    with cas.crl_generation():
        cas.store_issued_crl(2**159, (1, NOW, b"crl one"))
        cas.store_issued_crl(5, (1, NOW, b"crl two"))
    with cas.crl_generation():
        cas.store_issued_crl(2**159, (2, NOW + 10, b"crl one, again"))
        cas.forget_issued_crls(NOW + 1)
    assert cas.get_issued_crls() == {2**159: (2, NOW + 10, b"crl one, again")}


def test_restore_round_trip(cas: Storage, cau: Storage, other_location: str, engine: str) -> None:
    cas.append_ca_key_pair(NOW + DAY, b"key", b"crt")
    cau.append_csr(b"user csr", KEY_ID_A, NOW)
    cau.revoke(77, NOW, NOW + DAY)
    previous_umask = os.umask(0o022)
    try:
        restore_database(other_location, cau.dump())
    finally:
        os.umask(previous_umask)
    if engine == "sqlite":
        assert stat.S_IMODE(os.stat(other_location).st_mode) == 0o600
    restored_database = open_database(other_location)
    try:
        restored = Storage(restored_database, "cau", enforce_unique_key_id=True)
        assert restored.get_revoked(NOW) == [(77, NOW)]
        assert restored.get_pending_csr_list()[0][1] == b"user csr"
        restored_cas = Storage(restored_database, "cas")
        assert restored_cas.get_ca_key_pairs(NOW) == [(b"key", b"crt")]
        assert list(restored.dump()) == list(cau.dump())
    finally:
        restored_database.close()


def test_restore_refuses_existing_path(cas: Storage, db_location: str) -> None:
    with pytest.raises(FileExistsError, match="exists, not restoring"):
        restore_database(db_location, cas.dump())
    assert cas.get_crl_state() == (0, None)


def test_restore_failure_leaves_no_file(cas: Storage, other_location: str) -> None:
    cas.revoke(1, NOW, NOW + DAY)
    statements = list(cas.dump())
    broken = [*statements[:-1], "INSERT INTO nowhere VALUES (1);", statements[-1]]
    with pytest.raises(exceptions.CaucaseError, match="nowhere"):
        restore_database(other_location, iter(broken))
    assert not exists(other_location)


def test_restore_failure_from_statement_source_leaves_no_file(
    cas: Storage, other_location: str
) -> None:
    def truncated() -> object:
        yield from list(cas.dump())[:-1]
        raise exceptions.BackupError("Short read, backup truncated ?")

    with pytest.raises(exceptions.BackupError):
        restore_database(other_location, truncated())  # type: ignore[arg-type]
    assert not exists(other_location)


def test_restore_of_uncommitted_dump_is_refused(cas: Storage, other_location: str) -> None:
    with pytest.raises(exceptions.CaucaseError, match="inside a transaction"):
        restore_database(other_location, iter(list(cas.dump())[:-1]))
    assert not exists(other_location)
