"""Our storage and backup code against databases and backups made by the reference caucased."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase import backup
from caucase.storage import Storage, restore_database
from caucase.storage.schema import schema_statements
from tests.support.ca_helpers import generate_keys, make_csr
from tests.support.servers import start_caucased
from tests.support.wait import poll

pytestmark = pytest.mark.interop

PREFIXES = {"cau": True, "cas": False, "http_cas": False}
DEADLINE = 60.0


@dataclasses.dataclass
class ReferenceFiles:
    db: Path
    backup: Path
    user_key: rsa.RSAPrivateKey
    user_crt_pem: bytes


def has_every_ca(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return all(
                connection.execute(f"SELECT COUNT(*) FROM {prefix}ca").fetchone()[0] > 0
                for prefix in PREFIXES
            )
        finally:
            connection.close()
    except sqlite3.Error:
        return False


def submit_user(port: int, key: rsa.RSAPrivateKey) -> bytes:
    """The first CAU CSR is auto-approved: return its certificate."""
    base = f"http://127.0.0.1:{port}/cau"
    request = urllib.request.Request(
        base + "/csr",
        data=make_csr(key, "user"),
        method="PUT",
        headers={"Content-Type": "application/pkcs10"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        csr_id = int(response.headers["Location"])
    with urllib.request.urlopen(f"{base}/crt/{csr_id}", timeout=30) as response:
        crt_pem: bytes = response.read()
    return crt_pem


@pytest.fixture(scope="module")
def reference_files(
    reference_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> ReferenceFiles:
    workdir = tmp_path_factory.mktemp("reference")
    backups = workdir / "backups"
    backups.mkdir()
    (user_key,) = generate_keys(1)
    server = start_caucased([reference_bin / "caucased"], workdir)
    try:
        assert has_every_ca(workdir / "caucase.sqlite")
        user_crt_pem = submit_user(server.http_port, user_key)
    finally:
        server.stop()
    # With no backup yet, a backup is due at start-up, and now there is a user to encrypt for.
    server = start_caucased(
        [reference_bin / "caucased"],
        workdir,
        ["--backup-directory", str(backups)],
        http_port=server.http_port,
    )
    try:
        poll(lambda: any(backups.glob("*.sql.caucased")), "a backup", DEADLINE)
    finally:
        server.stop()
    (backup_path,) = backups.glob("*.sql.caucased")
    return ReferenceFiles(workdir / "caucase.sqlite", backup_path, user_key, user_crt_pem)


@pytest.fixture
def db_copy(reference_files: ReferenceFiles, tmp_path: Path) -> str:
    """Our storage switches the file to WAL: never touch the shared original."""
    copy = tmp_path / "db.sqlite"
    shutil.copyfile(reference_files.db, copy)
    return str(copy)


def key_id(key: rsa.RSAPrivateKey) -> str:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()


def test_reference_schema_text_is_ours(db_copy: str) -> None:
    connection = sqlite3.connect(db_copy)
    stored = dict(connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    connection.close()
    assert len(stored) == 18
    for prefix, unique in PREFIXES.items():
        for statement in schema_statements(prefix, unique):
            ours = statement.replace("CREATE TABLE IF NOT EXISTS ", "CREATE TABLE ")
            name = ours.split()[2]
            assert stored[name] == ours


def test_our_storage_reads_reference_cas_and_users(
    db_copy: str, reference_files: ReferenceFiles
) -> None:
    now = int(time.time())
    for prefix, unique in PREFIXES.items():
        storage = Storage(db_copy, prefix, enforce_unique_key_id=unique)
        ((key_pem, crt_pem),) = storage.get_ca_key_pairs(now)
        key = serialization.load_pem_private_key(key_pem, password=None)
        crt = x509.load_pem_x509_certificate(crt_pem)
        assert key.public_key() == crt.public_key()
        storage.close()
    cau = Storage(db_copy, "cau", enforce_unique_key_id=True)
    user_key_id = key_id(reference_files.user_key)
    assert cau.get_certificate_by_key_id(user_key_id) == reference_files.user_crt_pem
    assert reference_files.user_crt_pem in list(cau.iter_certificates())
    assert cau.get_pending_csr_list() == []
    assert cau.get_locked_auto_sign_amount() is None
    cau.close()


def test_our_reader_decrypts_reference_backup(
    reference_files: ReferenceFiles, tmp_path: Path
) -> None:
    with open(reference_files.backup, "rb") as source:
        assert backup.read_key_ids(source) == [key_id(reference_files.user_key)]
    with open(reference_files.backup, "rb") as source:
        statements = list(backup.read_backup(source, reference_files.user_key))
    assert statements[0] == "BEGIN TRANSACTION;"
    assert statements[-1] == "COMMIT;"
    restored = str(tmp_path / "restored.sqlite")
    restore_database(restored, iter(statements))
    storage = Storage(restored, "cau", enforce_unique_key_id=True)
    # Our dump of the rebuilt file reproduces the reference's dump statement for statement,
    # plus the CREATE INDEX statements of the indexes our storage adds (performance), our
    # tables of issued CRLs (empty until a CRL is served) and of revocation reasons, and our
    # renewal index and inventory, filled from the restored certificates when our storage
    # opened it.
    ours = list(storage.dump())
    own_tables = ("CREATE TABLE cau_issued_crl ", "CREATE TABLE cau_revocation_reason ")
    renewal_index = [s for s in ours if "cau_renewal" in s.split("(")[0]]
    inventory = [s for s in ours if "cau_inventory" in s.split("(")[0]]
    assert [
        s
        for s in ours
        if not s.startswith(("CREATE INDEX ", *own_tables))
        and s not in renewal_index
        and s not in inventory
    ] == statements
    assert len([s for s in ours if s.startswith(own_tables)]) == 2
    assert {s.split()[2] for s in ours if s.startswith("CREATE INDEX ")} == {
        "caucrt_expiration_date",
        "caucrt_pending",
        "caurevoked_expiration_date",
        "cau_renewal_not_after",
        "cau_inventory_not_after",
    }
    user_serial = x509.load_pem_x509_certificate(reference_files.user_crt_pem).serial_number
    assert sum(s.startswith('INSERT INTO "cau_renewal"') for s in renewal_index) == 1
    assert f"'{user_serial}'" in next(s for s in renewal_index if s.startswith("INSERT"))
    (listed,) = [s for s in inventory if s.startswith('INSERT INTO "cau_inventory"')]
    assert f"'{user_serial}'" in listed and "'unknown'" in listed
    user_key_id = key_id(reference_files.user_key)
    assert storage.get_certificate_by_key_id(user_key_id) == reference_files.user_crt_pem
    storage.close()


def write_our_backup(db: str, recipients: list[x509.Certificate], path: Path) -> None:
    storage = Storage(db, "cau", enforce_unique_key_id=True)
    with open(path, "wb") as output:
        assert backup.write_backup(output, storage.dump(), recipients) == len(recipients)
    storage.close()


def test_reference_key_id_lists_our_backup(
    reference_bin: Path, db_copy: str, reference_files: ReferenceFiles, tmp_path: Path
) -> None:
    user_crt = x509.load_pem_x509_certificate(reference_files.user_crt_pem)
    other_key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "other")])
    other_crt = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(other_key.public_key())
        .serial_number(2)
        .not_valid_before(user_crt.not_valid_before_utc)
        .not_valid_after(user_crt.not_valid_after_utc)
        .sign(other_key, hashes.SHA256())
    )
    path = tmp_path / "ours.sql.caucased"
    write_our_backup(db_copy, [user_crt, other_crt], path)
    result = subprocess.run(
        [str(reference_bin / "caucase-key-id"), "--backup", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.splitlines() == [
        str(path),
        f"  b'{key_id(reference_files.user_key)}'",
        f"  b'{key_id(other_key)}'",
    ]


def test_reference_restores_our_backup(
    reference_bin: Path, db_copy: str, reference_files: ReferenceFiles, tmp_path: Path
) -> None:
    user_crt = x509.load_pem_x509_certificate(reference_files.user_crt_pem)
    backup_path = tmp_path / "ours.sql.caucased"
    write_our_backup(db_copy, [user_crt], backup_path)
    key_path = tmp_path / "user.key.pem"
    key_path.write_bytes(
        reference_files.user_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        + reference_files.user_crt_pem
    )
    new_key = rsa.generate_private_key(65537, 2048)
    (tmp_path / "renew.csr.pem").write_bytes(make_csr(new_key, "ignored"))
    subprocess.run(
        [
            str(reference_bin / "caucased-manage"),
            "--db",
            str(tmp_path / "restored.sqlite"),
            "--restore-backup",
            str(backup_path),
            str(key_path),
            str(tmp_path / "renew.csr.pem"),
            str(tmp_path / "renewed.crt.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    renewed = x509.load_pem_x509_certificate((tmp_path / "renewed.crt.pem").read_bytes())
    assert renewed.public_key() == new_key.public_key()
    assert renewed.subject == user_crt.subject
    restored = Storage(str(tmp_path / "restored.sqlite"), "cau", enforce_unique_key_id=True)
    assert [serial for serial, _ in restored.get_revoked(int(time.time()))] == [
        user_crt.serial_number
    ]
    restored.close()


def test_reference_runs_on_a_database_we_created(reference_bin: Path, tmp_path: Path) -> None:
    db = tmp_path / "caucase.sqlite"
    for prefix, unique in PREFIXES.items():
        storage = Storage(str(db), prefix, enforce_unique_key_id=unique)
        storage.lock_auto_sign_amount(0)
        storage.close()
    server = start_caucased([reference_bin / "caucased"], tmp_path)
    try:
        assert has_every_ca(db)
    finally:
        server.stop()
    assert query_journal_mode(db) == "wal"
    cas = Storage(str(db), "cas")
    assert len(cas.get_ca_key_pairs(int(time.time()))) == 1
    assert cas.get_locked_auto_sign_amount() == 0
    cas.close()


def query_journal_mode(db: Path) -> str:
    connection = sqlite3.connect(db)
    try:
        mode: str = connection.execute("PRAGMA journal_mode").fetchone()[0]
        return mode
    finally:
        connection.close()
