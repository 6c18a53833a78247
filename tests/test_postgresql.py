"""The PostgreSQL engine: portable SQL rewritten for it, several nodes on one database
(each a PostgresDatabase with its own connections, as each caucased has), outages, copies
between engines, and a storage module written for SQLite running unchanged on both."""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caucase import exceptions
from caucase.ca import CertificateAuthority
from caucase.crypto import keys, x509util
from caucase.exceptions import StorageError
from caucase.http.cors import SharedCorsKeyStore, decode_token, encode_token
from caucase.storage import Engine, IntegrityError, Storage, open_database
from caucase.storage.cluster import ClusterState
from caucase.storage.migrate import copy_database
from caucase.storage.postgresql import PostgresDatabase
from caucase.storage.postgresql_sql import placeholders, schema_change
from tests.conftest import FakeClock
from tests.support.ca_helpers import CA_SUBJECT, CRT_LIFE, crl_number, generate_keys, make_csr
from tests.support.postgres import PostgresServer, running_server
from tests.support.servers import free_port_pair
from tests.support.wait import poll

NOW = 1_800_000_000
DAY = 86400
NODES = 3
T = TypeVar("T")


@pytest.fixture
def nodes(postgres_url: str) -> Iterator[list[PostgresDatabase]]:
    """Three engines on one database: three caucased as far as storage can tell."""
    engines = [PostgresDatabase(postgres_url) for _ in range(NODES)]
    yield engines
    for engine in engines:
        engine.close()


def race(count: int, action: Callable[[int], T]) -> list[T | BaseException]:
    """Run action(0..count-1) in threads released together; each result or error."""
    barrier = threading.Barrier(count)
    results: list[T | BaseException] = [RuntimeError("did not run")] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = action(index)
        except BaseException as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# Portable SQL as PostgreSQL takes it


def test_placeholders_outside_quotes_become_psycopg_ones() -> None:
    sql = "SELECT '?', \"a?\", ? FROM t WHERE x LIKE '%a' AND y = ?"
    assert placeholders(sql) == "SELECT '?', \"a?\", %s FROM t WHERE x LIKE '%%a' AND y = %s"


def test_create_table_gets_postgresql_types() -> None:
    change = schema_change(
        "CREATE TABLE IF NOT EXISTS cas_acme_thing (\n"
        "  id INTEGER PRIMARY KEY, data BLOB, name TEXT NOT NULL, score REAL,\n"
        "  UNIQUE (name, score))"
    )
    assert change is not None and (change.kind, change.name) == ("table", "cas_acme_thing")
    assert "id BIGINT PRIMARY KEY" in change.sql and "data BYTEA" in change.sql
    assert "name TEXT NOT NULL" in change.sql and "score DOUBLE PRECISION" in change.sql
    assert "UNIQUE (name, score)" in change.sql
    # The reference declares TEXT where caucase stores bytes: BYTEA here.
    reference = schema_change(
        "CREATE TABLE cascrt (id INTEGER PRIMARY KEY, key_id TEXT, csr TEXT)"
    )
    assert reference is not None
    assert "key_id BYTEA" in reference.sql and "csr BYTEA" in reference.sql
    index = schema_change(
        "CREATE INDEX IF NOT EXISTS cascrt_pending ON cascrt (id) WHERE crt IS NULL"
    )
    assert index is not None and (index.kind, index.table) == ("index", "cascrt")
    assert schema_change("SELECT 1") is None


# A storage module of another issue, written once in portable SQL


class AlreadyThere(Exception):
    pass


class Inventory:
    """What an other storage module looks like: its own table, portable SQL only."""

    def __init__(self, database: Engine) -> None:
        self._database = database
        with database.writing() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS cas_inventory (serial TEXT PRIMARY KEY, "
                "seen INTEGER NOT NULL, der BLOB, revoked INTEGER NOT NULL)"
            )
            connection.execute(
                "CREATE INDEX IF NOT EXISTS cas_inventory_seen ON cas_inventory (seen)"
            )

    def record(self, serial: int, seen: int, der: bytes, revoked: bool) -> None:
        with self._database.writing(lock="cas:inventory") as connection:
            connection.execute(
                "INSERT INTO cas_inventory (serial, seen, der, revoked) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (serial) DO UPDATE SET seen = excluded.seen",
                (str(serial), seen, der, revoked),
            )

    def add_once(self, serial: int, seen: int) -> bool:
        """A constraint violation is caught around its statement and leaves the block as
        an error of the module's own: the transaction is then rolled back on both engines."""
        try:
            with self._database.writing() as connection:
                try:
                    connection.execute(
                        "INSERT INTO cas_inventory (serial, seen, der, revoked) "
                        "VALUES (?, ?, ?, ?)",
                        (str(serial), seen, None, False),
                    )
                except IntegrityError as error:
                    raise AlreadyThere from error
        except AlreadyThere:
            return False
        return True

    def summary(self, since: int) -> tuple[int, int, bytes | None]:
        with self._database.reading() as connection:
            count, total = connection.execute(
                "SELECT COUNT(*), SUM(seen) FROM cas_inventory WHERE seen >= ?", (since,)
            ).fetchone()
            row = connection.execute(
                "SELECT der FROM cas_inventory WHERE revoked = ? ORDER BY serial LIMIT 1",
                (True,),
            ).fetchone()
        return count, total, None if row is None else row[0]


def test_a_storage_module_in_portable_sql_runs_on_both_engines(
    db_location: str, tmp_path: Path
) -> None:
    database = open_database(db_location)
    try:
        inventory = Inventory(database)
        Inventory(database)  # a second node, or a restart: the schema is there
        inventory.record(7, NOW, b"\x00der", revoked=True)
        inventory.record(7, NOW + 5, b"\x00der", revoked=True)
        inventory.record(8, NOW + 1, b"other", revoked=False)
        assert inventory.add_once(9, NOW)
        assert not inventory.add_once(9, NOW)
        assert inventory.summary(NOW) == (3, 3 * NOW + 6, b"\x00der")
        statements = list(database.dump())
    finally:
        database.close()
    # The dump holds it in the SQLite dialect: an SQLite file rebuilt from it serves it.
    assert "CREATE TABLE cas_inventory (serial TEXT PRIMARY KEY, " in "\n".join(statements)
    assert "INSERT INTO \"cas_inventory\" VALUES('7',1800000005,X'00646572',1);" in statements
    restored = str(tmp_path / "restored.sqlite")
    connection = sqlite3.connect(restored, isolation_level=None)
    for statement in statements:
        connection.execute(statement)
    connection.close()
    with contextlib.closing(open_database(restored)) as again:
        assert Inventory(again).summary(NOW) == (3, 3 * NOW + 6, b"\x00der")


# Several nodes on one database


def test_nodes_racing_through_a_rollover_store_one_ca(nodes: list[PostgresDatabase]) -> None:
    storages = [Storage(node, "cas") for node in nodes]
    version = storages[0].get_ca_version()
    stored = race(
        NODES * 4,
        lambda index: storages[index % NODES].append_next_ca_key_pair(
            version, NOW + DAY, b"key%d" % index, b"crt%d" % index
        ),
    )
    assert sorted(stored, key=repr).count(True) == 1
    assert all(result in (True, False) for result in stored)
    assert len(storages[1].get_ca_key_pairs(NOW)) == 1


def test_pending_quota_and_deduplication_are_exact_across_nodes(
    nodes: list[PostgresDatabase],
) -> None:
    storages = [Storage(node, "cas", max_csr_amount=5) for node in nodes]
    results = race(
        12, lambda index: storages[index % NODES].append_csr(b"csr%d" % index, "a1" * 20, NOW)
    )
    accepted = [result for result in results if isinstance(result, tuple)]
    refused = [result for result in results if isinstance(result, exceptions.NoStorage)]
    assert (len(accepted), len(refused)) == (5, 7)
    assert sorted(counted for _, counted in accepted) == [1, 2, 3, 4, 5]
    same = race(
        6,
        lambda index: storages[index % NODES].append_csr(
            b"identical", "b2" * 20, NOW, override_limits=True
        ),
    )
    assert len({result[0] for result in same if isinstance(result, tuple)}) == 1
    assert all(isinstance(result, tuple) for result in same)


def test_revocations_of_every_node_count_exactly(nodes: list[PostgresDatabase]) -> None:
    storages = [Storage(node, "cau", enforce_unique_key_id=True) for node in nodes]
    results = race(30, lambda index: storages[index % NODES].revoke(index % 10, NOW, NOW + DAY))
    # Each accepted revocation returns the crl_number it set: 1 to 10, one each.
    numbers = sorted(result for result in results if isinstance(result, int))
    assert numbers == list(range(1, 11))
    assert all(isinstance(result, (int, exceptions.Found)) for result in results)
    assert storages[2].get_crl_state() == (10, None)


def authority(node: Engine, clock: FakeClock, key_type: keys.KeyType) -> CertificateAuthority:
    return CertificateAuthority(
        Storage(node, "cas"), CA_SUBJECT, keys.KeySpec(key_type), CRT_LIFE, clock=clock
    )


def test_every_node_serves_the_one_crl_of_each_number(
    nodes: list[PostgresDatabase], clock: FakeClock
) -> None:
    """ECDSA signatures differ at each signing: equal bytes mean one signing per number."""
    first = authority(nodes[0], clock, keys.KeyType.EC_P256)
    others = [authority(node, clock, keys.KeyType.EC_P256) for node in nodes[1:]]
    assert len({ca.get_ca_certificate() for ca in [first, *others]}) == 1
    initial = first.get_crl_bundle()
    assert all(ca.get_crl_bundle() == initial for ca in others)
    first.revoke_serial(1234)
    revoked = others[0].get_crl_bundle()
    assert revoked != initial
    assert first.get_crl_bundle() == revoked == others[1].get_crl_bundle()
    crl = x509.load_pem_x509_crl(revoked)
    assert [entry.serial_number for entry in crl] == [1234]
    clock.advance(days=CRT_LIFE * 0.33 / 2 + 1)  # past half the CRL life: a new number
    renewed = race(NODES, lambda index: [first, *others][index].get_crl_bundle())
    assert len(set(renewed)) == 1
    crl = x509.load_pem_x509_crl(renewed[0])
    assert crl_number(crl) == 3


def test_a_rollover_is_made_once_and_seen_by_every_node(
    nodes: list[PostgresDatabase], clock: FakeClock
) -> None:
    authorities = [authority(node, clock, keys.KeyType.EC_P256) for node in nodes]
    assert len(authorities[0].get_ca_certificate_list()) == 1
    clock.advance(days=CRT_LIFE * 2 + 1)  # the newest CA has two certificate lives left
    lists = race(NODES, lambda index: authorities[index].get_ca_certificate_list())
    assert all(len(ca_list) == 2 for ca_list in lists)
    assert len({tuple(ca_list) for ca_list in lists}) == 1
    assert len(Storage(nodes[0], "cas").get_ca_key_pairs(0)) == 2


def test_an_auto_signed_csr_comes_from_the_ca_another_node_just_made_active(
    nodes: list[PostgresDatabase], clock: FakeClock
) -> None:
    """A node signs auto-approved CSRs from the CA list as it last read it, and its
    transaction checks the CA rows: a CA another node stored meanwhile, active at once (as
    an imported one can be), signs the very next certificate."""
    authorities = [
        CertificateAuthority(
            Storage(node, "cas"),
            CA_SUBJECT,
            keys.KeySpec(keys.KeyType.EC_P256),
            CRT_LIFE,
            clock=clock,
            auto_sign_csr_amount=5,
        )
        for node in nodes[:2]
    ]
    first_key, second_key = generate_keys(2)
    crt = x509.load_pem_x509_certificate(
        authorities[1].get_certificate(authorities[1].append_csr(make_csr(first_key)))
    )
    assert crt.issuer == CA_SUBJECT
    imported_subject = x509.Name(
        [x509.NameAttribute(x509.NameOID.COMMON_NAME, "Caucase CAS imported")]
    )
    key = keys.generate(keys.KeySpec(keys.KeyType.EC_P256))
    imported = x509util.make_ca_certificate(
        key,
        imported_subject,
        clock() - datetime.timedelta(days=CRT_LIFE * 2),
        datetime.timedelta(days=CRT_LIFE * 10),
    )
    Storage(nodes[0], "cas").append_ca_key_pair(
        int(imported.not_valid_after_utc.timestamp()),
        keys.dump_private_key(key),
        x509util.dump_certificate(imported),
    )
    crt = x509.load_pem_x509_certificate(
        authorities[1].get_certificate(authorities[1].append_csr(make_csr(second_key)))
    )
    assert crt.issuer == imported_subject


def test_a_certificate_signed_on_one_node_authenticates_on_another(
    nodes: list[PostgresDatabase], clock: FakeClock
) -> None:
    signer, checker = (authority(node, clock, keys.KeyType.RSA) for node in nodes[:2])
    (key,) = generate_keys(1)
    csr_id = signer.append_csr(make_csr(key))
    assert [csr for csr, _ in checker.get_csr_list()] == [csr_id]
    crt = x509.load_pem_x509_certificate(checker.create_certificate(csr_id))
    signer.verify_certificate(crt)
    checker.revoke_certificate(crt.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(exceptions.CertificateVerificationError, match="revoked"):
        signer.verify_certificate(crt)


def test_cors_secrets_and_backup_turns_are_shared(
    nodes: list[PostgresDatabase], clock: FakeClock
) -> None:
    stores = [SharedCorsKeyStore(ClusterState(node), clock) for node in nodes]
    token = encode_token(stores[0].signing_secret(), "https://app", True)
    assert decode_token(stores[1].verification_secrets(), token, "https://app") is True
    assert stores[2].signing_secret() == stores[0].signing_secret()
    clock.advance(days=200)  # past half a secret's life: one node adds the next one
    rotated = race(NODES, lambda index: stores[index].signing_secret())
    assert len(set(rotated)) == 1
    assert len(stores[1].verification_secrets()) == 2
    turns = [ClusterState(node) for node in nodes]
    claims = race(NODES, lambda index: turns[index].claim_turn("backup", NOW, DAY))
    assert sorted(claim[0] for claim in claims) == [False, False, True]
    assert {claim[1] for claim in claims} == {NOW + DAY}
    turns[0].release_turn("backup", NOW)
    assert turns[1].claim_turn("backup", NOW + 1, DAY) == (True, NOW + 1 + DAY)


# Outages


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start."""
    with running_server() as server:
        yield server


def test_an_unreachable_server_is_a_storage_error_until_it_is_back(
    own_server: PostgresServer,
) -> None:
    url = own_server.new_database()
    with PostgresDatabase(url) as database:
        storage = Storage(database, "cas")
        storage.revoke(1, NOW, NOW + DAY)
        own_server.stop()
        with pytest.raises(StorageError):
            storage.revoke(2, NOW, NOW + DAY)
        with pytest.raises(StorageError):
            storage.get_revoked(NOW)
        own_server.start()
        poll(lambda: _answers(storage), "the engine to reconnect")
        storage.revoke(2, NOW, NOW + DAY)
        assert [serial for serial, _ in storage.get_revoked(NOW)] == [1, 2]
    with pytest.raises(StorageError):
        PostgresDatabase(own_server.url("no_such_database"))


def _answers(storage: Storage) -> bool:
    try:
        storage.get_crl_state()
    except StorageError:
        return False
    return True


# Copies between engines


def test_copies_between_engines_keep_every_row_and_type(
    postgres_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    source = str(tmp_path / "source.sqlite")
    ca = CertificateAuthority(Storage(source, "cas"), CA_SUBJECT, 2048, CRT_LIFE, clock=clock)
    (key,) = generate_keys(1)
    ca.create_certificate(ca.append_csr(make_csr(key)))
    ca.revoke_serial(99)
    crl = ca.get_crl_bundle()
    with contextlib.closing(open_database(source)) as database:
        with database.writing() as connection:  # a row as the reference writes it
            connection.execute("INSERT INTO cascrt VALUES (5, 'key', 7, 'text csr', NULL)")
        original = list(database.dump())
    tables, rows = copy_database(source, postgres_url)
    # The six of the reference, issued CRLs, revocation reasons, renewal index, inventory.
    assert tables == 10 and rows > 5
    back = str(tmp_path / "back.sqlite")
    copy_database(postgres_url, back)
    with contextlib.closing(open_database(back)) as database:
        copied = list(database.dump())
    # TEXT where bytes belong becomes bytes on PostgreSQL: the one difference.
    text_row = "INSERT INTO \"cascrt\" VALUES(5,'key',7,'text csr',NULL);"
    bytes_row = "INSERT INTO \"cascrt\" VALUES(5,X'6B6579',7,X'7465787420637372',NULL);"
    assert text_row in original and bytes_row in copied
    assert sorted(set(original) - {text_row}) == sorted(set(copied) - {bytes_row})
    assert len(original) == len(copied)
    again = CertificateAuthority(
        Storage(postgres_url, "cas"), CA_SUBJECT, 2048, CRT_LIFE, clock=clock
    )
    assert again.get_crl_bundle() == crl
    with pytest.raises(FileExistsError, match="not empty"):
        copy_database(source, postgres_url)
    with pytest.raises(FileExistsError):
        copy_database(source, back)


def test_without_psycopg_a_url_is_one_clear_line(tmp_path: Path) -> None:
    """The plain install has no PostgreSQL driver: caucased says what to install."""
    code = (
        "import sys; sys.modules['psycopg'] = None; "
        "from caucase.cli.server import main; sys.exit(main(sys.argv[1:]))"
    )
    netloc = f"127.0.0.1:{free_port_pair()}"
    command = [sys.executable, "-c", code, "--netloc", netloc, "--db", "postgresql://x@/y"]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.endswith("pip install 'caucase[postgresql]'\n"), result.stderr
    assert result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
