"""openssl verifies, with the CA and CRL files our caucase client writes, certificates issued
before and after a real CA rollover of a running caucased (old and new CA both in the store).

The server and the client run on one faked clock (tests.support.faketime), which the test
carries through the rollover: with 10-day service certificates the CAS CA lives 40 days, is
renewed once 20 days are left, and the new CA signs from 10 days after its birth. openssl,
on the real clock, checks at a time inside the newest CRL's window (`-attime`), which is
also inside every certificate's validity.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.faketime import FakeTime, Role
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)

VALIDITY_DAYS = 10


@pytest.fixture
def clock(tmp_path: Path) -> FakeTime:
    return FakeTime(tmp_path / "clock")


@pytest.fixture
def caucased(tmp_path: Path, clock: FakeTime) -> Iterator[RunningServer]:
    server = start_caucased(
        [OUR_BIN / "caucased"],
        tmp_path / "server",
        ["--service-crt-validity", str(VALIDITY_DAYS), "--service-auto-approve-count", "1000"],
        env=clock.env(Role.SERVER),
    )
    yield server
    server.stop()


def issue(server: RunningServer, directory: Path, name: str) -> tuple[Path, x509.Certificate]:
    _, csr = make_key_and_csr(name)
    status, headers, _ = request(
        server, "PUT", "/cas/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201
    status, _, pem = request(server, "GET", "/cas/crt/" + headers["Location"])
    assert status == 200
    path = directory / f"{name}.crt.pem"
    path.write_bytes(pem)
    return path, x509.load_pem_x509_certificate(pem)


def refresh_stores(
    server: RunningServer, directory: Path, clock: FakeTime
) -> list[x509.Certificate]:
    """Run our one-shot client to bring cas.crt.pem and cas.crl.pem up to date."""
    subprocess.run(
        [str(OUR_BIN / "caucase"), "--ca-url", server.http_url],
        cwd=directory, check=True, capture_output=True, timeout=60,
        env=clock.env(Role.CLIENT),
    )  # fmt: skip
    return x509.load_pem_x509_certificates((directory / "cas.crt.pem").read_bytes())


def load_crls(path: Path) -> list[x509.CertificateRevocationList]:
    blocks = re.findall(
        rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\n", path.read_bytes(), re.S
    )
    return [x509.load_pem_x509_crl(block) for block in blocks]


def openssl_verify(directory: Path, crt: Path) -> str:
    crls = load_crls(directory / "cas.crl.pem")
    check_time = max(crl.last_update_utc for crl in crls).timestamp() + 5
    result = subprocess.run(
        ["openssl", "verify", "-crl_check", "-attime", str(int(check_time)),
         "-CAfile", "cas.crt.pem", "-CRLfile", "cas.crl.pem", str(crt)],
        cwd=directory, capture_output=True, text=True,
    )  # fmt: skip
    return (result.stdout + result.stderr).strip()


def signer_key_id(crt: x509.Certificate) -> bytes:
    identifier = crt.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert identifier.key_identifier is not None
    return identifier.key_identifier


def subject_key_id(crt: x509.Certificate) -> bytes:
    return crt.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_certificates_verify_across_a_ca_rollover(
    caucased: RunningServer, clock: FakeTime, tmp_path: Path
) -> None:
    work = tmp_path / "client"
    work.mkdir()
    user = make_user(caucased, work / "user.pem")
    (first_ca,) = refresh_stores(caucased, work, clock)

    # Passive phase: the client store gains the new CA, the old one still signs.
    clock.advance(days=2 * VALIDITY_DAYS + 1)
    cas = refresh_stores(caucased, work, clock)
    assert len(cas) == 2 and cas[0] == first_ca
    passive_path, passive = issue(caucased, work, "passive")
    assert signer_key_id(passive) == subject_key_id(first_ca)
    refresh_stores(caucased, work, clock)
    assert len(load_crls(work / "cas.crl.pem")) == 2
    assert openssl_verify(work, passive_path).endswith("OK")

    # Active phase: the new CA signs, and its certificates verify with the same files.
    clock.advance(days=VALIDITY_DAYS + 1)
    active_path, active_crt = issue(caucased, work, "active")
    assert signer_key_id(active_crt) == subject_key_id(cas[1])
    refresh_stores(caucased, work, clock)
    assert openssl_verify(work, active_path).endswith("OK")

    # And a revocation reaches the verifier through the same files.
    payload = json.dumps({"revoke_serial": active_crt.serial_number})
    status, _, _ = request(
        caucased, "PUT", "/cas/crt/revoke",
        json.dumps({"payload": payload, "digest": None}).encode(),
        {"Content-Type": "application/json"}, https=True, cert_file=user,
    )  # fmt: skip
    assert status == 204
    refresh_stores(caucased, work, clock)
    assert "certificate revoked" in openssl_verify(work, active_path)
