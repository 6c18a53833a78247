"""pkilint (PKIX) on what a caucased of every CA key type issues: CA certificates, leaves
of every key type, the HTTPS certificate and CRLs; nothing at WARNING or above. `openssl
verify -crl_check` accepts every leaf."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from caucase.crypto import keys, x509util
from tests.interop.test_pkilint import lint
from tests.support.servers import OUR_BIN, RunningServer, request, start_caucased
from tests.support.wsgi_support import name

pytestmark = pytest.mark.slow

TYPES = list(keys.KeyType)
DOCUMENTS = [
    "cas CA certificate",
    "cau CA certificate",
    "HTTPS CA certificate",
    "HTTPS certificate",
    *(f"{key_type.value} user certificate" for key_type in TYPES),
    *(f"{key_type.value} service certificate" for key_type in TYPES),
    "cas CRL with an entry",
    "cau empty CRL",
]


def csr_for(key: keys.PrivateKey, common_name: str) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(common_name))
    return x509util.dump_certificate_request(builder.sign(key, keys.signature_hash(key)))


def auto_signed(server: RunningServer, authority: str, csr: bytes) -> bytes:
    status, headers, _ = request(
        server, "PUT", f"/{authority}/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201
    status, _, crt = request(server, "GET", f"/{authority}/crt/{headers['Location']}")
    assert status == 200
    return crt


def collect(server: RunningServer, workdir: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    user_file = workdir / "user.pem"
    for key_type in TYPES:
        key = keys.generate(keys.KeySpec(key_type))
        user_crt = auto_signed(server, "cau", csr_for(key, f"{key_type.value} user"))
        found[f"{key_type.value} user certificate"] = user_crt
        if key_type is keys.KeyType.EC_P256:
            user_file.write_bytes(keys.dump_private_key(key) + user_crt)
            user_file.chmod(0o600)
        service = csr_for(keys.generate(keys.KeySpec(key_type)), f"{key_type.value}.example")
        found[f"{key_type.value} service certificate"] = auto_signed(server, "cas", service)
    for authority in ("cas", "cau"):
        found[f"{authority} CA certificate"] = request(
            server, "GET", f"/{authority}/crt/ca.crt.pem"
        )[2]
    found["cau empty CRL"] = request(server, "GET", "/cau/crl")[2]
    revoke = json.dumps({"payload": json.dumps({"revoke_serial": 12345}), "digest": None})
    status, _, _ = request(
        server, "PUT", "/cas/crt/revoke", revoke.encode(),
        {"Content-Type": "application/json"}, https=True, cert_file=user_file,
    )  # fmt: skip
    assert status == 204
    found["cas CRL with an entry"] = request(server, "GET", "/cas/crl")[2]
    server_file = (server.workdir / "server.key.pem").read_bytes()
    found["HTTPS certificate"] = server_file[server_file.index(b"-----BEGIN CERTIFICATE") :]
    with sqlite3.connect(server.workdir / "caucase.sqlite") as connection:
        (https_ca,) = connection.execute("SELECT crt FROM http_casca").fetchone()
    found["HTTPS CA certificate"] = bytes(https_ca)
    return found


@pytest.fixture(scope="module", params=TYPES, ids=[f"ca-{t.value}" for t in TYPES])
def documents(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, bytes]]:
    ca_type: keys.KeyType = request.param
    workdir = tmp_path_factory.mktemp(f"pkilint-{ca_type.value}")
    approve = ["--service-auto-approve-count", "9", "--user-auto-approve-count", "9"]
    server = start_caucased(
        [OUR_BIN / "caucased"], workdir, ["--key-type", ca_type.value, *approve]
    )
    try:
        yield collect(server, workdir)
    finally:
        server.stop()


@pytest.mark.parametrize("document", DOCUMENTS)
def test_pkix_lint_finds_nothing(
    documents: dict[str, bytes], document: str, tmp_path: Path
) -> None:
    command = ["lint_crl", "-t", "CRL", "-p", "PKIX"] if "CRL" in document else ["lint_pkix_cert"]
    assert lint(command, documents[document], tmp_path) == ""


def test_openssl_verifies_every_leaf_with_the_crl(
    documents: dict[str, bytes], tmp_path: Path
) -> None:
    (tmp_path / "ca.pem").write_bytes(documents["cas CA certificate"])
    (tmp_path / "crl.pem").write_bytes(documents["cas CRL with an entry"])
    for key_type in TYPES:
        leaf = tmp_path / f"{key_type.value}.pem"
        leaf.write_bytes(documents[f"{key_type.value} service certificate"])
        stores = ["-CAfile", "ca.pem", "-CRLfile", "crl.pem"]
        result = subprocess.run(
            ["openssl", "verify", "-crl_check", *stores, leaf.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.stdout == f"{leaf.name}: OK\n", result.stderr
