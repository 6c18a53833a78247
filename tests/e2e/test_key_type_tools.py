"""Key types in the tools around the lifecycle: backups and restore with EC users, CA import
and export, the updater renewing EC and Ed25519 keys, option errors, and the reference
release reading what we write (or saying, through our client, what it cannot do)."""

from __future__ import annotations

import datetime
import json
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from caucase.crypto import keys, x509util
from caucase.storage import Storage
from tests.e2e.helpers import CAUCASED, MANAGE, certificate_of
from tests.e2e.test_updater import UpdaterProcess
from tests.support.servers import OUR_BIN, RunningServer, request, start_caucased
from tests.support.wait import poll
from tests.support.wsgi_support import name

pytestmark = pytest.mark.slow

RECIPIENT_TYPES = [keys.KeyType.RSA, keys.KeyType.EC_P256, keys.KeyType.EC_P384]
ED25519_SKIPPED = "Backups are not encrypted for 'CN=ed25519 user'"


def new_key_and_csr(
    directory: Path, stem: str, key_type: keys.KeyType
) -> tuple[keys.PrivateKey, Path, Path]:
    key = keys.generate(keys.KeySpec(key_type))
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(stem))
    csr_path, key_path = directory / f"{stem}.csr", directory / f"{stem}.key"
    csr = builder.sign(key, keys.signature_hash(key))
    csr_path.write_bytes(x509util.dump_certificate_request(csr))
    key_path.write_bytes(keys.dump_private_key(key))
    key_path.chmod(0o600)
    return key, key_path, csr_path


def auto_signed(server: RunningServer, authority: str, csr_path: Path, key_path: Path) -> Path:
    """Submit a CSR the server auto-approves; append its certificate to the key file."""
    status, headers, _ = request(
        server,
        "PUT",
        f"/{authority}/csr",
        csr_path.read_bytes(),
        {"Content-Type": "application/pkcs10"},
    )
    assert status == 201, status
    status, _, crt = request(server, "GET", f"/{authority}/crt/{headers['Location']}")
    assert status == 200, f"not auto-approved ({status})"
    with key_path.open("ab") as output:
        output.write(crt)
    return key_path


def run(command: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        check=False,
    )


# Backups with users of every key type


@dataclass(frozen=True)
class MixedBackup:
    workdir: Path
    users: dict[keys.KeyType, Path]
    backups: list[Path]
    stderr: str


@pytest.fixture(scope="module")
def mixed_backup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedBackup]:
    """A caucased with one user of each key type, then two backups made by one process."""
    workdir = tmp_path_factory.mktemp("mixed")
    backups = workdir / "backups"
    backups.mkdir()
    approve = ["--user-auto-approve-count", "4"]
    first = start_caucased(CAUCASED, workdir, approve)
    users = {}
    try:
        for key_type in keys.KeyType:
            _, key_path, csr_path = new_key_and_csr(workdir, f"{key_type.value} user", key_type)
            users[key_type] = auto_signed(first, "cau", csr_path, key_path)
    finally:
        assert first.stop() == 0
    # 8.64 s between backups: the second one shows the Ed25519 user is reported only once.
    args = [*approve, "--backup-directory", str(backups), "--backup-period", "0.0001"]
    second = start_caucased(CAUCASED, workdir, args)
    try:
        poll(lambda: sorted(backups.glob("*.sql.caucased"))[1:], "two backups", 60)
    finally:
        assert second.stop() == 0
    yield MixedBackup(workdir, users, sorted(backups.glob("*.sql.caucased")), second.stderr())


def header(path: Path) -> dict:  # type: ignore[type-arg]
    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[8:12])
    return json.loads(data[12 : 12 + length])  # type: ignore[no-any-return]


def key_id_of(path: Path) -> str:
    return keys.key_id(certificate_of_key_file(path).public_key())


def certificate_of_key_file(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    return x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE") :])


def test_rsa_and_ec_users_are_recipients_and_ed25519_is_reported_once(
    mixed_backup: MixedBackup,
) -> None:
    entries = header(mixed_backup.backups[0])["key_list"]
    ciphers = {entry["id"]: entry["cipher"]["name"] for entry in entries}
    assert ciphers == {
        key_id_of(mixed_backup.users[keys.KeyType.RSA]): "rsa_oaep_sha1_mgf1_sha1",
        key_id_of(mixed_backup.users[keys.KeyType.EC_P256]): "ecdh_es_hkdf_sha256_aes256_kw",
        key_id_of(mixed_backup.users[keys.KeyType.EC_P384]): "ecdh_es_hkdf_sha256_aes256_kw",
    }
    assert mixed_backup.stderr.count(ED25519_SKIPPED) == 1
    assert "no key agreement" in mixed_backup.stderr
    result = run([OUR_BIN / "caucase-key-id", "--backup", mixed_backup.backups[0]], Path("/"))
    assert result.stdout.splitlines()[1:] == [f"  b'{entry['id']}'" for entry in entries]


@pytest.mark.parametrize("key_type", [keys.KeyType.EC_P256, keys.KeyType.EC_P384])
def test_an_ec_user_restores_the_backup(
    mixed_backup: MixedBackup, tmp_path: Path, key_type: keys.KeyType
) -> None:
    new_key, _, csr_path = new_key_and_csr(tmp_path, "replacement", key_type)
    restored = tmp_path / "restored"
    restored.mkdir()
    db, crt = restored / "caucase.sqlite", tmp_path / "new.crt"
    user = mixed_backup.users[key_type]
    result = run(
        [MANAGE, "--db", db, "--restore-backup", mixed_backup.backups[0], user, csr_path, crt],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert keys.key_id(certificate_of(crt).public_key()) == keys.key_id(new_key.public_key())
    credential = tmp_path / "new.pem"
    credential.write_bytes(keys.dump_private_key(new_key) + crt.read_bytes())
    server = start_caucased(CAUCASED, restored)
    try:
        assert request(server, "GET", "/cau/csr", https=True, cert_file=credential)[0] == 200
        assert request(server, "GET", "/cau/csr", https=True, cert_file=user)[0] == 401
    finally:
        assert server.stop() == 0


def test_an_ed25519_user_cannot_restore(mixed_backup: MixedBackup, tmp_path: Path) -> None:
    _, _, csr_path = new_key_and_csr(tmp_path, "replacement", keys.KeyType.ED25519)
    db, crt = tmp_path / "db.sqlite", tmp_path / "new.crt"
    user = mixed_backup.users[keys.KeyType.ED25519]
    result = run(
        [MANAGE, "--db", db, "--restore-backup", mixed_backup.backups[0], user, csr_path, crt],
        tmp_path,
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "Ed25519 keys cannot decrypt backups" in result.stderr
    assert not db.exists()


@pytest.mark.interop
def test_reference_lists_and_restores_a_backup_holding_ec_entries(
    mixed_backup: MixedBackup, reference_bin: Path, tmp_path: Path
) -> None:
    backup_path = mixed_backup.backups[0]
    ours = run([OUR_BIN / "caucase-key-id", "--backup", backup_path], tmp_path)
    reference = run([reference_bin / "caucase-key-id", "--backup", backup_path], tmp_path)
    assert (reference.returncode, reference.stdout) == (0, ours.stdout)
    assert len(reference.stdout.splitlines()) == 1 + len(RECIPIENT_TYPES)
    new_key, _, csr_path = new_key_and_csr(tmp_path, "replacement", keys.KeyType.RSA)
    db, crt = tmp_path / "db.sqlite", tmp_path / "new.crt"
    files = [mixed_backup.users[keys.KeyType.RSA], csr_path, crt]
    result = run(
        [reference_bin / "caucased-manage", "--db", db, "--restore-backup", backup_path, *files],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert keys.key_id(certificate_of(crt).public_key()) == keys.key_id(new_key.public_key())
    assert certificate_of(crt).subject == certificate_of_key_file(files[0]).subject


# CA import and export


def ca_pair(key_type: keys.KeyType, common_name: str) -> bytes:
    """A self-signed CA key pair of `key_type`, as another caucase would export it."""
    key = keys.generate(keys.KeySpec(key_type))
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = x509util.make_ca_certificate(key, name(common_name), now, datetime.timedelta(days=372))
    return x509util.dump_certificate(crt) + keys.dump_private_key(key)


def _cas_ca_list(db: Path) -> list[x509.Certificate]:
    storage = Storage(str(db), "cas")
    try:
        pairs = storage.get_ca_key_pairs(int(time.time()))
    finally:
        storage.close()
    return [x509util.load_certificate(crt) for _, crt in pairs]


def test_ec_and_ed25519_ca_pairs_import_export_and_serve(tmp_path: Path) -> None:
    pairs = tmp_path / "cas.pem"
    pairs.write_bytes(
        ca_pair(keys.KeyType.EC_P384, "Imported EC CA")
        + ca_pair(keys.KeyType.ED25519, "Imported Ed25519 CA")
    )
    db = tmp_path / "server" / "caucase.sqlite"
    db.parent.mkdir()
    result = run([MANAGE, "--db", db, "--import-ca", pairs], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Imported 2 CA certificates" in result.stdout
    imported = _cas_ca_list(db)
    assert [keys.kind(crt.public_key()) for crt in imported] == [
        keys.KeyType.EC_P384,
        keys.KeyType.ED25519,
    ]
    exported = tmp_path / "exported.pem"
    result = subprocess.run(
        [MANAGE, "--db", str(db), "--export-ca", str(exported)],
        input="secret\nsecret\n",
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = exported.read_bytes()
    assert b"-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED" in text
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in text
    server = start_caucased(CAUCASED, db.parent, ["--service-auto-approve-count", "1"])
    try:
        served = request(server, "GET", "/cas/crt/ca.crt.pem")[2]
        assert x509util.load_certificate(served) == imported[0]
        _, key_path, csr_path = new_key_and_csr(tmp_path, "service", keys.KeyType.EC_P256)
        leaf = certificate_of_key_file(auto_signed(server, "cas", csr_path, key_path))
        assert leaf.issuer in {crt.subject for crt in imported}
    finally:
        assert server.stop() == 0


def test_unacceptable_ca_keys_are_skipped_at_import(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    now = datetime.datetime.now(datetime.timezone.utc)
    life = datetime.timedelta(days=30)
    crt = x509util.make_ca_certificate(key, name("k1"), now, life)  # type: ignore[arg-type]
    pem = tmp_path / "k1.pem"
    pem.write_bytes(
        x509util.dump_certificate(crt)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    result = run([MANAGE, "--db", tmp_path / "db.sqlite", "--import-ca", pem], tmp_path)
    assert "Skipping private key from" in result.stdout
    assert "unsupported elliptic curve secp256k1" in result.stdout
    assert result.returncode == 1
    assert "No CA certificate imported" in result.stderr


# The updater and the one-shot client with EC and Ed25519 keys


@pytest.mark.parametrize("key_type", [keys.KeyType.EC_P256, keys.KeyType.ED25519])
def test_the_updater_renews_ec_and_ed25519_keys(tmp_path: Path, key_type: keys.KeyType) -> None:
    """Defect 10: an EC-keyed updater used to exit at renewal time."""
    # 0.001 day = 86.4 s of validity; a 0.0009 day threshold renews a fresh certificate.
    server = start_caucased(
        [OUR_BIN / "caucased"],
        tmp_path / "server",
        ["--service-auto-approve-count", "1", "--service-crt-validity", "0.001"],
    )
    try:
        key, key_path, csr_path = new_key_and_csr(tmp_path, "svc", key_type)
        stores = ["--ca-url", server.http_url, "--cas-ca", "cas.crt.pem", "--ca", "cas.crt.pem"]
        updater = UpdaterProcess(
            tmp_path,
            *stores,
            "--crl",
            "cas.crl.pem",
            "--crt",
            "svc.crt",
            "--key",
            key_path.name,
            "--csr",
            csr_path.name,
            "--threshold",
            "0.0009",
        )
        try:
            output = updater.wait_for("Next wake-up at", count=2)
            assert updater.terminate() == 0
        finally:
            updater.kill()
    finally:
        server.stop()
    assert "Renewing svc.crt" in output.splitlines()
    renewed = certificate_of(tmp_path / "svc.crt")
    new_key = keys.load_private_key(key_path.read_bytes())
    assert renewed.subject == name("svc")
    assert keys.key_id(renewed.public_key()) == keys.key_id(new_key.public_key())
    assert keys.key_id(new_key.public_key()) != keys.key_id(key.public_key())
    assert keys.kind(new_key.public_key()) is key_type


@pytest.mark.interop
def test_our_client_says_why_a_reference_server_refuses_an_ec_renewal(
    reference_bin: Path, tmp_path: Path
) -> None:
    server = start_caucased(
        [reference_bin / "caucased"], tmp_path / "server", ["--service-auto-approve-count", "1"]
    )
    try:
        _, key_path, csr_path = new_key_and_csr(tmp_path, "svc", keys.KeyType.EC_P256)
        auto_signed(server, "cas", csr_path, key_path)
        renew = ["--threshold", "100", "--renew-crt"]
        result = run(
            [OUR_BIN / "caucase", "--ca-url", server.http_url, *renew, key_path, ""],
            tmp_path,
        )
    finally:
        server.stop()
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "(HTTP 500)" in line
    assert "caucase 0.9.17 servers only verify RSA signatures" in line


# Option errors


@pytest.mark.parametrize(
    "command",
    [
        [OUR_BIN / "caucased", "--netloc", "127.0.0.1:1"],
        [OUR_BIN / "caucase", "--ca-url", "http://127.0.0.1:1"],
        [OUR_BIN / "caucase-updater", "--ca-url", "x", "--cas-ca", "a", "--ca", "a", "--crl", "b"],
        [OUR_BIN / "caucase-rerequest", "--template", "t", "--csr", "c", "--key", "k"],
        [OUR_BIN / "caucased-manage"],
    ],
    ids=["caucased", "caucase", "caucase-updater", "caucase-rerequest", "caucased-manage"],
)
def test_key_len_with_a_non_rsa_type_is_a_usage_error(
    tmp_path: Path, command: list[str | Path]
) -> None:
    result = run([*command, "--key-type", "ec-p256", "--key-len", "4096"], tmp_path)
    assert result.returncode == 2
    assert "--key-len is an RSA size: it cannot be used with ec-p256" in result.stderr
    assert "Traceback" not in result.stderr


def test_key_id_prints_the_id_of_an_ed25519_key(tmp_path: Path) -> None:
    key, key_path, _ = new_key_and_csr(tmp_path, "ed", keys.KeyType.ED25519)
    result = run([OUR_BIN / "caucase-key-id", "--private-key", key_path], tmp_path)
    assert result.stdout == f"{key_path} b'{keys.key_id(key.public_key())}'\n"


# Changing --key-type on an existing database


def test_a_new_key_type_waits_for_the_rollover_but_the_https_key_changes_at_once(
    tmp_path: Path,
) -> None:
    first = start_caucased(CAUCASED, tmp_path)
    try:
        before = request(first, "GET", "/cas/crt/ca.crt.pem")[2]
    finally:
        assert first.stop() == 0
    second = start_caucased(
        CAUCASED, tmp_path, ["--key-type", "ec-p256"], http_port=first.http_port
    )
    try:
        assert request(second, "GET", "/cas/crt/ca.crt.pem")[2] == before
        assert request(second, "GET", "/cas/crt/ca.crt.json")[2] == b"[]"
        served = x509.load_pem_x509_certificate(
            ssl.get_server_certificate(("127.0.0.1", second.https_port)).encode()
        )
        stderr = second.stderr()
    finally:
        assert second.stop() == 0
    assert keys.kind(served.public_key()) is keys.KeyType.EC_P256
    for label in ("CAU", "CAS"):
        assert (
            f"{label} CA key is RSA-2048: new {label} CAs will be ECDSA P-256 from the next "
            "rollover, due "
        ) in stderr
        assert f"(caucased-manage --renew-ca {label.lower()} starts it now)" in stderr
