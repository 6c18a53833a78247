"""caucased-manage as a real process: restore a real backup and serve it, CA import and
export, CRL import, and failures that leave nothing behind."""

from __future__ import annotations

import datetime
import json
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase import __version__
from caucase.crypto import keys, x509util
from caucase.storage import Storage
from tests.e2e.helpers import CAUCASED, MANAGE, certificate_of
from tests.support.ca_helpers import generate_keys, self_signed
from tests.support.servers import key_pem, make_key_and_csr, make_user, request, start_caucased
from tests.support.wait import poll


@dataclass(frozen=True)
class Populated:
    """A database with one user and a CAS CA, and a backup of it."""

    workdir: Path
    user: Path
    backup: Path
    cas_ca_pem: bytes

    @property
    def db(self) -> Path:
        return self.workdir / "caucase.sqlite"


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    workdir = tmp_path_factory.mktemp("populated")
    backups = workdir / "backups"
    backups.mkdir()
    first = start_caucased(CAUCASED, workdir)
    try:
        user = make_user(first, workdir / "user.pem")
        cas_ca_pem = request(first, "GET", "/cas/crt/ca.crt.pem")[2]
    finally:
        assert first.stop() == 0
    second = start_caucased(CAUCASED, workdir, ["--backup-directory", str(backups)])
    try:
        found = poll(lambda: list(backups.glob("*.sql.caucased")), "a backup")
    finally:
        assert second.stop() == 0
    yield Populated(workdir, user, found[0], cas_ca_pem)


def manage(args: list[str], cwd: Path, stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    """Run caucased-manage without a terminal, so passphrases are read from stdin
    (None: stdin is /dev/null, as under cron)."""
    return subprocess.run(
        [MANAGE, *args],
        cwd=cwd,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def new_csr(path: Path) -> rsa.RSAPrivateKey:
    key, csr = make_key_and_csr("ignored subject")
    path.write_bytes(csr)
    return key


def test_restore_then_serve_with_the_new_user_certificate(
    populated: Populated, tmp_path: Path
) -> None:
    key = new_csr(tmp_path / "new.csr")
    restored = tmp_path / "restored"
    restored.mkdir()
    db, crt = restored / "caucase.sqlite", tmp_path / "new.crt"
    args = ["--db", str(db), "--restore-backup", str(populated.backup)]
    result = manage([*args, str(populated.user), str(tmp_path / "new.csr"), str(crt)], tmp_path)
    assert result.returncode == 0, result.stderr
    # stdout stays as the reference's (empty); one confirmation line on stderr.
    assert result.stdout == ""
    assert result.stderr.startswith(f"Restored {db} from {populated.backup}")
    assert result.stderr.count("\n") == 1
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    new_crt = certificate_of(crt)
    old_crt = certificate_of(populated.user)
    assert new_crt.subject == old_crt.subject
    assert keys.key_id(new_crt.public_key()) == keys.key_id(key.public_key())
    credential = tmp_path / "new.pem"
    credential.write_bytes(key_pem(key) + crt.read_bytes())
    server = start_caucased(CAUCASED, restored)
    try:
        assert request(server, "GET", "/cau/csr", https=True, cert_file=credential)[0] == 200
        status = request(server, "GET", "/cau/csr", https=True, cert_file=populated.user)[0]
        assert status == 401
        assert request(server, "GET", "/cas/crt/ca.crt.pem")[2] == populated.cas_ca_pem
    finally:
        assert server.stop() == 0


def test_restore_writes_what_it_changed_to_the_audit_log(
    populated: Populated, tmp_path: Path
) -> None:
    new_csr(tmp_path / "new.csr")
    db, crt, log = tmp_path / "db.sqlite", tmp_path / "new.crt", tmp_path / "audit.log"
    args = ["--db", str(db), "--audit-log", str(log), "--restore-backup", str(populated.backup)]
    result = manage([*args, str(populated.user), str(tmp_path / "new.csr"), str(crt)], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["event"] for line in lines] == [
        "audit-log-opened", "database-restored", "crt-renewed", "crt-revoked", "audit-log-closed",
    ]  # fmt: skip
    assert lines[3]["method"] == "restore"
    assert lines[3]["serial"] == str(certificate_of(populated.user).serial_number)
    assert manage(["--verify-audit-log", str(log)], tmp_path).returncode == 0


def test_restore_with_a_foreign_key_leaves_nothing(populated: Populated, tmp_path: Path) -> None:
    new_csr(tmp_path / "new.csr")
    stranger = tmp_path / "stranger.key"
    stranger.write_bytes(key_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    db, crt = tmp_path / "db.sqlite", tmp_path / "new.crt"
    args = ["--db", str(db), "--restore-backup", str(populated.backup), str(stranger)]
    result = manage([*args, str(tmp_path / "new.csr"), str(crt)], tmp_path)
    assert_clean_failure(result, "candidate")
    assert not db.exists()
    assert not crt.exists()


def test_restore_of_a_tampered_backup_leaves_nothing(populated: Populated, tmp_path: Path) -> None:
    new_csr(tmp_path / "new.csr")
    tampered = tmp_path / "tampered.sql.caucased"
    data = bytearray(populated.backup.read_bytes())
    data[-40] ^= 1
    tampered.write_bytes(bytes(data))
    db, crt = tmp_path / "db.sqlite", tmp_path / "new.crt"
    args = ["--db", str(db), "--restore-backup", str(tampered), str(populated.user)]
    result = manage([*args, str(tmp_path / "new.csr"), str(crt)], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert not db.exists()
    assert not crt.exists()


def test_restore_refuses_an_existing_database(populated: Populated, tmp_path: Path) -> None:
    new_csr(tmp_path / "new.csr")
    db = tmp_path / "db.sqlite"
    db.write_bytes(b"")
    args = ["--db", str(db), "--restore-backup", str(populated.backup), str(populated.user)]
    result = manage([*args, str(tmp_path / "new.csr"), str(tmp_path / "new.crt")], tmp_path)
    assert_clean_failure(result, "exists, not restoring.")
    assert db.read_bytes() == b""


def _copy_db(populated: Populated, tmp_path: Path) -> Path:
    db = tmp_path / "copy.sqlite"
    shutil.copy(populated.db, db)
    return db


def test_export_then_import_round_trip(populated: Populated, tmp_path: Path) -> None:
    exported = tmp_path / "ca.pem"
    answers = "secret\nsecret\n"
    result = manage(
        ["--db", str(_copy_db(populated, tmp_path)), "--export-ca", str(exported)],
        tmp_path,
        answers,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    text = exported.read_bytes()
    assert b"Proc-Type: 4,ENCRYPTED" in text
    assert x509.load_pem_x509_certificate(text) == x509.load_pem_x509_certificate(
        populated.cas_ca_pem
    )
    fresh = tmp_path / "fresh.sqlite"
    result = manage(["--db", str(fresh), "--import-ca", str(exported)], tmp_path, "secret\n")
    assert result.returncode == 0, result.stderr
    assert "Imported 1 CA certificates" in result.stdout
    storage = Storage(str(fresh), "cas")
    try:
        pairs = storage.get_ca_key_pairs(int(time.time()))
    finally:
        storage.close()
    assert [x509util.load_certificate(crt) for _, crt in pairs] == [
        x509.load_pem_x509_certificate(populated.cas_ca_pem)
    ]


def test_export_asks_again_on_mismatch(populated: Populated, tmp_path: Path) -> None:
    exported = tmp_path / "ca.pem"
    db = _copy_db(populated, tmp_path)
    result = manage(["--db", str(db), "--export-ca", str(exported)], tmp_path, "a\nb\nc\nc\n")
    assert result.returncode == 0, result.stderr
    assert "Error: Input does not match, retrying" in result.stdout
    assert exported.exists()


def test_export_refuses_an_existing_file(populated: Populated, tmp_path: Path) -> None:
    exported = tmp_path / "ca.pem"
    exported.write_bytes(b"keep me")
    result = manage(["--db", str(populated.db), "--export-ca", str(exported)], tmp_path)
    assert result.returncode == 2
    assert "file exists" in result.stderr
    assert exported.read_bytes() == b"keep me"


@pytest.fixture(scope="module")
def exported(populated: Populated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CAS CA of `populated`, exported with the passphrase "secret" from a file."""
    workdir = tmp_path_factory.mktemp("exported")
    secret = workdir / "secret.txt"
    secret.write_text("secret\n")
    db = workdir / "copy.sqlite"
    shutil.copy(populated.db, db)
    path = workdir / "ca.pem"
    args = ["--db", str(db), "--export-ca", str(path), "--passphrase-file", str(secret)]
    result = manage(args, workdir, stdin=None)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    return path


def test_passphrase_file_imports_without_asking(
    exported: Path, populated: Populated, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret\n")
    fresh = tmp_path / "fresh.sqlite"
    args = ["--db", str(fresh), "--import-ca", str(exported), "--passphrase-file", str(secret)]
    result = manage(args, tmp_path, stdin=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Imported 1 CA certificates\n"
    assert result.stderr == ""
    storage = Storage(str(fresh), "cas")
    try:
        crt_pem = storage.get_ca_key_pairs(int(time.time()))[0][1]
    finally:
        storage.close()
    assert crt_pem == populated.cas_ca_pem


def test_export_without_terminal_nor_input_fails_in_one_line(tmp_path: Path) -> None:
    fresh, exported = tmp_path / "fresh.sqlite", tmp_path / "ca.pem"
    result = manage(["--db", str(fresh), "--export-ca", str(exported)], tmp_path, stdin=None)
    assert_clean_failure(result, "--passphrase-file")
    assert list(tmp_path.iterdir()) == []


def test_import_without_terminal_nor_input_fails_in_one_line(
    exported: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh.sqlite"
    result = manage(["--db", str(fresh), "--import-ca", str(exported)], tmp_path, stdin=None)
    assert_clean_failure(result, "--passphrase-file")
    assert list(tmp_path.iterdir()) == []


def test_import_with_a_wrong_passphrase_creates_no_database(
    exported: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh.sqlite"
    result = manage(["--db", str(fresh), "--import-ca", str(exported)], tmp_path, "wrong\n")
    assert_clean_failure(result, "Wrong passphrase for key at ")
    assert list(tmp_path.iterdir()) == []


def test_import_with_a_wrong_passphrase_file_creates_no_database(
    exported: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("wrong\n")
    fresh = tmp_path / "fresh.sqlite"
    args = ["--db", str(fresh), "--import-ca", str(exported), "--passphrase-file", str(wrong)]
    result = manage(args, tmp_path, stdin=None)
    assert_clean_failure(result, "does not decrypt the key at ")
    assert [path.name for path in tmp_path.iterdir()] == ["wrong.txt"]


def test_a_refused_crl_import_creates_no_database(exported: Path, tmp_path: Path) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    crl = tmp_path / "foreign.crl.pem"
    crl.write_bytes(_crl(stranger, x509.Name([]), [9]))
    fresh = tmp_path / "fresh.sqlite"
    args = ["--db", str(fresh), "--import-ca", str(exported), "--import-crl", str(crl)]
    result = manage(args, tmp_path, "secret\n")
    assert_clean_failure(result, "not issued by any CA")
    assert [path.name for path in tmp_path.iterdir()] == ["foreign.crl.pem"]


def test_help_offers_a_passphrase_file(tmp_path: Path) -> None:
    result = manage(["--help"], tmp_path)
    assert "--passphrase-file FILE" in result.stdout
    assert "asked on the" in result.stdout


def test_import_skips_certificates_that_are_not_cas(tmp_path: Path) -> None:
    (key,) = generate_keys(1)
    leaf = self_signed(key, "leaf")
    pem = tmp_path / "leaf.pem"
    pem.write_bytes(key_pem(key) + x509util.dump_certificate(leaf))
    result = manage(["--db", str(tmp_path / "db.sqlite"), "--import-ca", str(pem)], tmp_path)
    assert f"Skipping non-CA certificate from {str(pem)!r}, block 0, " in result.stdout
    assert_clean_failure(result, "No CA certificate imported")


def _crl(issuer_key: rsa.RSAPrivateKey, issuer: x509.Name, serials: list[int]) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
        .add_extension(x509.CRLNumber(42), critical=False)
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return x509util.dump_crl(builder.sign(issuer_key, hashes.SHA256()))


def test_import_crl_revokes_its_serials_once(populated: Populated, tmp_path: Path) -> None:
    db = _copy_db(populated, tmp_path)
    storage = Storage(str(db), "cas")
    try:
        key_pem_bytes, crt_pem = storage.get_ca_key_pairs(int(time.time()))[0]
        ca_key = keys.load_private_key(key_pem_bytes)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        crl = tmp_path / "old.crl.pem"
        crl.write_bytes(_crl(ca_key, x509util.load_certificate(crt_pem).subject, [5, 7]))
        first = manage(["--db", str(db), "--import-crl", str(crl)], tmp_path)
        assert first.returncode == 0, first.stderr
        assert "Set CRL number to 42 and last update to " in first.stdout
        assert "Revoked 2 certificates (0 were already revoked)" in first.stdout
        again = manage(["--db", str(db), "--import-crl", str(crl)], tmp_path)
        assert "Revoked 0 certificates (2 were already revoked)" in again.stdout
        revoked = {serial for serial, _ in storage.get_revoked(int(time.time()))}
        assert {5, 7} <= revoked
        assert storage.get_crl_state()[0] == 42
    finally:
        storage.close()


def test_import_crl_from_another_ca_fails(populated: Populated, tmp_path: Path) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    crl = tmp_path / "foreign.crl.pem"
    crl.write_bytes(_crl(stranger, x509.Name([]), [9]))
    result = manage(
        ["--db", str(_copy_db(populated, tmp_path)), "--import-crl", str(crl)], tmp_path
    )
    assert_clean_failure(result, "not issued by any CA")


def test_version(tmp_path: Path) -> None:
    result = manage(["--version"], tmp_path)
    assert (result.returncode, result.stdout) == (0, __version__ + "\n")


@pytest.mark.interop
def test_restore_a_backup_made_by_the_reference_server(
    reference_bin: Path, tmp_path: Path
) -> None:
    reference = [str(reference_bin / "caucased")]
    origin = tmp_path / "origin"
    backups = origin / "backups"
    backups.mkdir(parents=True)
    first = start_caucased(reference, origin)
    try:
        user = make_user(first, origin / "user.pem")
    finally:
        first.stop()
    second = start_caucased(reference, origin, ["--backup-directory", str(backups)])
    try:
        found = poll(lambda: list(backups.glob("*.sql.caucased")), "a reference backup")
    finally:
        second.stop()
    key = new_csr(tmp_path / "new.csr")
    restored = tmp_path / "restored"
    restored.mkdir()
    crt = tmp_path / "new.crt"
    args = ["--db", str(restored / "caucase.sqlite"), "--restore-backup", str(found[0])]
    result = manage([*args, str(user), str(tmp_path / "new.csr"), str(crt)], tmp_path)
    assert result.returncode == 0, result.stderr
    credential = tmp_path / "new.pem"
    credential.write_bytes(key_pem(key) + crt.read_bytes())
    server = start_caucased(CAUCASED, restored)
    try:
        assert request(server, "GET", "/cau/csr", https=True, cert_file=credential)[0] == 200
        assert request(server, "GET", "/cau/csr", https=True, cert_file=user)[0] == 401
    finally:
        assert server.stop() == 0


@pytest.mark.interop
def test_reference_manage_restores_our_backup(
    populated: Populated, reference_bin: Path, tmp_path: Path
) -> None:
    new_csr(tmp_path / "new.csr")
    db = tmp_path / "db.sqlite"
    result = subprocess.run(
        [
            str(reference_bin / "caucased-manage"),
            "--db",
            str(db),
            "--restore-backup",
            str(populated.backup),
            str(populated.user),
            str(tmp_path / "new.csr"),
            str(tmp_path / "new.crt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert certificate_of(tmp_path / "new.crt").subject == certificate_of(populated.user).subject
