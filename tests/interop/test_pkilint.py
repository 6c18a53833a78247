"""Every document caucased issues passes the RFC 5280 lint of pkilint (no WARNING or worse)."""

from __future__ import annotations

import datetime
import json
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, bytes]]:
    """One of every kind of document our caucased issues, by name."""
    workdir = tmp_path_factory.mktemp("pkilint")
    server = start_caucased([OUR_BIN / "caucased"], workdir, ["--service-auto-approve-count", "1"])
    try:
        yield collect(server, workdir)
    finally:
        server.stop()


def collect(server: RunningServer, workdir: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    user = make_user(server, workdir / "user.pem")
    found["user certificate"] = (
        b"-----BEGIN CERTIFICATE" + (user.read_bytes().split(b"-----BEGIN CERTIFICATE", 1)[1])
    )
    _, csr = make_key_and_csr("auto.example.com")
    found["auto-signed service certificate"] = issue(server, csr)
    found["service certificate from a rich template"] = sign_with_template(server, user)
    for authority in ("cas", "cau"):
        found[f"{authority} CA certificate"] = request(
            server, "GET", f"/{authority}/crt/ca.crt.pem"
        )[2]
        found[f"{authority} empty CRL"] = request(server, "GET", f"/{authority}/crl")[2]
    revoke = json.dumps({"payload": json.dumps({"revoke_serial": 12345}), "digest": None})
    status, _, _ = request(
        server, "PUT", "/cas/crt/revoke", revoke.encode(),
        {"Content-Type": "application/json"}, https=True, cert_file=user,
    )  # fmt: skip
    assert status == 204
    found["cas CRL with an entry"] = request(server, "GET", "/cas/crl")[2]
    found["HTTPS certificate"] = ssl.get_server_certificate(
        ("127.0.0.1", server.https_port)
    ).encode()
    with sqlite3.connect(workdir / "caucase.sqlite") as connection:
        (https_ca,) = connection.execute("SELECT crt FROM http_casca").fetchone()
    found["HTTPS CA certificate"] = bytes(https_ca)
    return found


def issue(server: RunningServer, csr: bytes) -> bytes:
    status, headers, _ = request(
        server, "PUT", "/cas/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201
    status, _, crt = request(server, "GET", "/cas/crt/" + headers["Location"])
    assert status == 200
    return crt


def sign_with_template(server: RunningServer, user: Path) -> bytes:
    """A pending CSR signed by a user with a template carrying KU, EKU and SAN."""
    _, csr = make_key_and_csr("pending.example.com")
    status, headers, _ = request(
        server, "PUT", "/cas/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201
    csr_id = headers["Location"]
    template_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    template = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")]))
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.com")]), False)
        .sign(template_key, hashes.SHA256())
    )
    status, _, _ = request(
        server, "PUT", "/cas/crt/" + csr_id, template.public_bytes(Encoding.PEM),
        {"Content-Type": "application/pkcs10"}, https=True, cert_file=user,
    )  # fmt: skip
    assert status == 204
    status, _, crt = request(server, "GET", "/cas/crt/" + csr_id)
    assert status == 200
    return crt


def lint(command: list[str], document: bytes, tmp_path: Path) -> str:
    path = tmp_path / "document.pem"
    path.write_bytes(document)
    result = subprocess.run(
        [str(OUR_BIN / command[0]), "lint", *command[1:], "-s", "WARNING", str(path)],
        capture_output=True,
        text=True,
    )
    return (result.stdout + result.stderr).strip()


CERTIFICATES = [
    "user certificate",
    "auto-signed service certificate",
    "service certificate from a rich template",
    "cas CA certificate",
    "cau CA certificate",
    "HTTPS certificate",
    "HTTPS CA certificate",
]
CRLS = ["cas empty CRL", "cau empty CRL", "cas CRL with an entry"]


@pytest.mark.parametrize("name", CERTIFICATES)
def test_certificate_passes_pkix_lint(
    documents: dict[str, bytes], name: str, tmp_path: Path
) -> None:
    assert lint(["lint_pkix_cert"], documents[name], tmp_path) == ""


@pytest.mark.parametrize("name", CRLS)
def test_crl_passes_pkix_lint(documents: dict[str, bytes], name: str, tmp_path: Path) -> None:
    assert b"-----BEGIN X509 CRL" in documents[name]
    assert lint(["lint_crl", "-t", "CRL", "-p", "PKIX"], documents[name], tmp_path) == ""


def test_lint_reports_a_broken_certificate(tmp_path: Path) -> None:
    """The lint really runs: a certificate with an empty KeyUsage is reported."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broken")])
    now = datetime.datetime.now(datetime.timezone.utc)
    broken = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, False, False, False, False), True
        )
        .sign(key, hashes.SHA256())
    )
    assert "ERROR" in lint(["lint_pkix_cert"], broken.public_bytes(Encoding.PEM), tmp_path)
