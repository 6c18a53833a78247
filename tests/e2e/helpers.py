"""Helpers shared by the caucased and caucased-manage end-to-end tests."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from cryptography import x509

from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    client_context,
    key_pem,
    make_key_and_csr,
    request,
)

CAUCASED = [str(OUR_BIN / "caucased")]
MANAGE = str(OUR_BIN / "caucased-manage")
CAUCASE = OUR_BIN / "caucase"


def caucase(
    server: RunningServer, cwd: Path, *args: str | Path
) -> subprocess.CompletedProcess[str]:
    """Our `caucase` against `server`, run in `cwd`; its result, whatever its status."""
    return subprocess.run(
        [str(CAUCASE), "--ca-url", server.http_url, *map(str, args)],
        cwd=cwd, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def served_certificate(server: RunningServer) -> x509.Certificate:
    """The certificate the HTTPS listener presents right now."""
    with (
        socket.create_connection((server.host, server.https_port), timeout=10) as raw,
        client_context().wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def submit_csr(server: RunningServer, authority: str, csr: bytes) -> str:
    status, headers, _ = request(
        server, "PUT", f"/{authority}/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201, status
    return headers["Location"]


def signed_credential(
    server: RunningServer, authority: str, admin: Path, path: Path, name: str
) -> tuple[Path, x509.Certificate]:
    """A key + certificate file for a CSR signed by `admin` (a user credential file)."""
    key, csr = make_key_and_csr(name)
    csr_id = submit_csr(server, authority, csr)
    status, _, _ = request(
        server, "PUT", f"/{authority}/crt/{csr_id}", b"", https=True, cert_file=admin
    )
    assert status == 204, status
    status, _, crt = request(server, "GET", f"/{authority}/crt/{csr_id}")
    assert status == 200, status
    path.write_bytes(key_pem(key) + crt)
    path.chmod(0o600)
    return path, x509.load_pem_x509_certificate(crt)


def revoke_serial(server: RunningServer, admin: Path, authority: str, serial: int) -> int:
    """Status of an authenticated revocation by serial (null envelope)."""
    body = json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None})
    status, _, _ = request(
        server,
        "PUT",
        f"/{authority}/crt/revoke",
        body.encode(),
        {"Content-Type": "application/json"},
        https=True,
        cert_file=admin,
    )
    return status


def certificate_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())
