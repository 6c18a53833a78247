"""Our renewal index table beside the reference's tables: the reference caucased 0.9.17 runs
on a database holding it, backs it up, and our restore brings it back."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import pytest

from caucase import backup
from caucase.ca import CertificateAuthority
from caucase.crypto import x509util
from caucase.storage import Storage, restore_database
from tests.support.ca_helpers import generate_keys, make_csr, name
from tests.support.servers import start_caucased
from tests.support.wait import poll
from tests.test_reference_db import DEADLINE, submit_user

pytestmark = pytest.mark.interop


def _renewal_serials(db: Path) -> list[str]:
    connection = sqlite3.connect(db)
    try:
        return [row[0] for row in connection.execute("SELECT serial FROM cas_renewal")]
    finally:
        connection.close()


def test_reference_backs_up_our_renewal_index_and_we_restore_it(
    reference_bin: Path, tmp_path: Path
) -> None:
    db = tmp_path / "caucase.sqlite"
    service_key, user_key = generate_keys(2)
    for prefix in ("cau", "http_cas"):
        Storage(str(db), prefix, enforce_unique_key_id=prefix == "cau").close()
    storage = Storage(str(db), "cas")
    cas = CertificateAuthority(storage, name("Caucase CAS at 127.0.0.1"), 2048, 93)
    certificate = x509util.load_certificate(
        cas.create_certificate(cas.append_csr(make_csr(service_key, "svc")))
    )
    storage.close()
    assert _renewal_serials(db) == [str(certificate.serial_number)]

    backups = tmp_path / "backups"
    backups.mkdir()
    server = start_caucased([reference_bin / "caucased"], tmp_path)
    try:
        submit_user(server.http_port, user_key)
    finally:
        server.stop()
    server = start_caucased(
        [reference_bin / "caucased"],
        tmp_path,
        ["--backup-directory", str(backups)],
        http_port=server.http_port,
    )
    try:
        poll(lambda: any(backups.glob("*.sql.caucased")), "a backup", DEADLINE)
    finally:
        server.stop()

    (backup_path,) = backups.glob("*.sql.caucased")
    with open(backup_path, "rb") as source:
        statements = list(backup.read_backup(source, user_key))
    assert any(statement.startswith('INSERT INTO "cas_renewal"') for statement in statements)
    restored = tmp_path / "restored.sqlite"
    restore_database(str(restored), iter(statements))
    assert _renewal_serials(restored) == [str(certificate.serial_number)]
    reopened = Storage(str(restored), "cas")
    found = reopened.renewal_index.find(
        x509util.authority_key_id(certificate), certificate.serial_number
    )
    reopened.close()
    assert found is not None
    assert found.not_after == int(certificate.not_valid_after_utc.timestamp())
    assert found.not_after > datetime.datetime.now(datetime.timezone.utc).timestamp()
