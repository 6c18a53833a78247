"""A database holding ACME state (credentials, accounts, orders, revocation reasons) is
still the reference's: its caucased runs on it and backs it up, and a backup of it restores
with our caucased-manage and with the reference's, the ACME rows included."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.acme_library import LibraryClient, directory_url, https_ca_bundle, mint_eab
from tests.support.servers import OUR_BIN, make_key_and_csr, make_user, start_caucased
from tests.support.wait import poll

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ACME_ROWS = {
    "cas_acme_eab": 1,
    "cas_acme_account": 1,
    "cas_acme_order": 2,
    "cas_acme_authz": 2,
    "cas_revocation_reason": 1,
}


def rows(db: Path) -> dict[str, int]:
    connection = sqlite3.connect(db)
    try:
        return {
            table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ACME_ROWS
        }
    finally:
        connection.close()


def backup_of(command: Sequence[Path], workdir: Path, port: int) -> Path:
    """Start caucased with a backup directory: a backup is due at once (a user exists)."""
    backups = workdir / "backups"
    backups.mkdir(exist_ok=True)
    server = start_caucased(command, workdir, ["--backup-directory", str(backups)], http_port=port)
    try:
        poll(lambda: any(backups.glob("*.sql.caucased")), "a backup", 60)
    finally:
        server.stop()
    (backup,) = backups.glob("*.sql.caucased")
    return backup


def restore(manage: Path, backup: Path, user: Path, target: Path) -> None:
    _, csr = make_key_and_csr("restorer")
    csr_path = target.with_suffix(".csr.pem")
    csr_path.write_bytes(csr)
    subprocess.run(
        [str(manage), "--db", str(target), "--restore-backup", str(backup), str(user),
         str(csr_path), str(target.with_suffix(".crt.pem"))],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def acme_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """Our caucased's workdir after two ACME issuances and one revocation, its user."""
    workdir = tmp_path_factory.mktemp("acme-db")
    server = start_caucased([OUR_BIN / "caucased"], workdir)
    try:
        user = make_user(server, workdir / "user.pem")
        bundle = https_ca_bundle(server, workdir / "https-ca.pem")
        credential = mint_eab(server, user, "*.svc.test")
        client = LibraryClient.register(directory_url(server), bundle, credential)
        client.issue("a.svc.test")
        _, chain = client.issue("b.svc.test")
        client.revoke(chain, 4)
    finally:
        server.stop()
    assert rows(workdir / "caucase.sqlite") == ACME_ROWS
    return workdir, user, server.http_port


def test_our_backup_restores_the_acme_state_with_both_manages(
    acme_state: tuple[Path, Path, int], reference_bin: Path, tmp_path: Path
) -> None:
    workdir, user, port = acme_state
    copy = tmp_path / "ours"
    shutil.copytree(workdir, copy)
    backup = backup_of([OUR_BIN / "caucased"], copy, port)

    for name, manage in (("ours", OUR_BIN), ("reference", reference_bin)):
        target = tmp_path / f"restored-{name}.sqlite"
        restore(manage / "caucased-manage", backup, user, target)
        assert rows(target) == ACME_ROWS, name


def test_the_reference_runs_on_and_backs_up_a_database_with_acme_state(
    acme_state: tuple[Path, Path, int], reference_bin: Path, tmp_path: Path
) -> None:
    workdir, user, port = acme_state
    copy = tmp_path / "reference"
    shutil.copytree(workdir, copy)
    backup = backup_of([reference_bin / "caucased"], copy, port)

    target = tmp_path / "restored.sqlite"
    restore(OUR_BIN / "caucased-manage", backup, user, target)
    assert rows(target) == ACME_ROWS
    server = start_caucased([OUR_BIN / "caucased"], copy, http_port=port)
    try:
        credential = mint_eab(server, user, "*.svc.test")
        bundle = https_ca_bundle(server, copy / "https-ca.pem")
        _, chain = LibraryClient.register(directory_url(server), bundle, credential).issue(
            "c.svc.test"
        )
        assert x509.load_pem_x509_certificates(chain.encode())
    finally:
        server.stop()
