"""Databases and backups move between our caucased and the reference, in both directions.

A database written by one implementation is served by the other (drop-in replacement), and a
backup written by one is listed by the other's caucase-key-id, restored by the other's
caucased-manage and served: users, pending CSRs and revocations survive.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    key_pem,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)
from tests.support.wait import poll

pytestmark = [pytest.mark.slow, pytest.mark.interop]
DIRECTIONS = [
    pytest.param(("ours", "reference"), id="ours-to-reference"),
    pytest.param(("reference", "ours"), id="reference-to-ours"),
]
REVOKED_SERIAL = 777


@pytest.fixture
def bins(reference_bin: Path) -> dict[str, Path]:
    return {"ours": OUR_BIN, "reference": reference_bin}


@dataclass
class State:
    """What a first server left behind, to look for on the second."""

    user: Path
    pending_id: str
    ca_pem: bytes


def populate(server: RunningServer, workdir: Path) -> State:
    user = make_user(server, workdir / "user.pem")
    _, csr = make_key_and_csr("pending-service")
    status, headers, _ = request(
        server, "PUT", "/cas/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201
    revoke = json.dumps({"payload": json.dumps({"revoke_serial": REVOKED_SERIAL}), "digest": None})
    status, _, _ = request(
        server, "PUT", "/cas/crt/revoke", revoke.encode(),
        {"Content-Type": "application/json"}, https=True, cert_file=user,
    )  # fmt: skip
    assert status == 204
    ca_pem = request(server, "GET", "/cas/crt/ca.crt.pem")[2]
    return State(user, headers["Location"], ca_pem)


def authenticates(server: RunningServer, cert_file: Path) -> bool:
    try:
        status, _, _ = request(server, "GET", "/cas/csr", https=True, cert_file=cert_file)
    except OSError:  # a certificate the TLS layer refuses
        return False
    return status == 200


def check_state(server: RunningServer, state: State, user: Path) -> None:
    status, _, body = request(server, "GET", "/cas/csr", https=True, cert_file=user)
    assert status == 200
    assert state.pending_id in {item["id"] for item in json.loads(body)}
    assert request(server, "GET", "/cas/crt/ca.crt.pem")[2] == state.ca_pem
    crl = x509.load_pem_x509_crl(request(server, "GET", "/cas/crl")[2])
    assert REVOKED_SERIAL in {entry.serial_number for entry in crl}


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_database_is_a_drop_in(
    direction: tuple[str, str], bins: dict[str, Path], tmp_path: Path
) -> None:
    writer, reader = direction
    first = start_caucased([bins[writer] / "caucased"], tmp_path)
    try:
        state = populate(first, tmp_path)
    finally:
        first.stop()
    second = start_caucased([bins[reader] / "caucased"], tmp_path, http_port=first.http_port)
    try:
        check_state(second, state, state.user)
    finally:
        second.stop()


def wait_for_backup(directory: Path, server: RunningServer) -> Path:
    found = poll(
        lambda: sorted(directory.glob("*.sql.caucased")),
        "a backup",
        timeout=60,
        process=server.process,
    )
    return found[0]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_backup_is_listed_restored_and_served(
    direction: tuple[str, str], bins: dict[str, Path], tmp_path: Path
) -> None:
    writer, reader = direction
    source, backups, restored = tmp_path / "source", tmp_path / "backups", tmp_path / "restored"
    backups.mkdir()
    first = start_caucased([bins[writer] / "caucased"], source)
    try:
        state = populate(first, source)
    finally:
        first.stop()
    # With a user now in the database, the first backup is due at once.
    first = start_caucased(
        [bins[writer] / "caucased"], source, ["--backup-directory", str(backups)],
        http_port=first.http_port,
    )  # fmt: skip
    try:
        backup = wait_for_backup(backups, first)
    finally:
        first.stop()

    user_crt = x509.load_pem_x509_certificates(state.user.read_bytes())[0]
    user_key_id = user_crt.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    listed = subprocess.run(
        [str(bins[reader] / "caucase-key-id"), "--backup", str(backup)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert listed.splitlines() == [str(backup), f"  b'{user_key_id.value.digest.hex()}'"]

    restored.mkdir()
    new_key, new_csr = make_key_and_csr("user-again")
    (restored / "new.csr.pem").write_bytes(new_csr)
    subprocess.run(
        [str(bins[reader] / "caucased-manage"), "--db", str(restored / "caucase.sqlite"),
         "--restore-backup", str(backup), str(state.user),
         str(restored / "new.csr.pem"), str(restored / "new.crt.pem")],
        capture_output=True, check=True,
    )  # fmt: skip
    new_user = restored / "new-user.pem"
    new_user.write_bytes(key_pem(new_key) + (restored / "new.crt.pem").read_bytes())

    second = start_caucased([bins[reader] / "caucased"], restored, http_port=first.http_port)
    try:
        check_state(second, state, new_user)
        assert not authenticates(second, state.user), "the restoring user's old cert still works"
    finally:
        second.stop()
