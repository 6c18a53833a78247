"""The whole lifecycle with every key type, for CA keys and client keys: a matrix.

One caucased per CA key type (`--key-type`), its administrator holding a key of that type
(so every type authenticates on the HTTPS port). For each client key type, our `caucase`
submits a CSR, the administrator signs it, the holder renews it into a key of the same and
of another type, revokes it by key, the administrator revokes another by serial; `openssl
verify -crl_check` checks every certificate against the CA and CRL stores the tool keeps.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from caucase.crypto import keys, x509util
from tests.support.servers import OUR_BIN, RunningServer, start_caucased
from tests.support.wsgi_support import name

pytestmark = pytest.mark.slow

TYPES = list(keys.KeyType)
IDS = [key_type.value for key_type in TYPES]
CAUCASE = str(OUR_BIN / "caucase")


def write_key_and_csr(directory: Path, stem: str, key_type: keys.KeyType) -> tuple[Path, Path]:
    """`<stem>.key` (0600) and `<stem>.csr` for a fresh key of `key_type`."""
    key = keys.generate(keys.KeySpec(key_type))
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(stem))
    csr = builder.sign(key, keys.signature_hash(key))
    key_path, csr_path = directory / f"{stem}.key", directory / f"{stem}.csr"
    key_path.write_bytes(keys.dump_private_key(key))
    key_path.chmod(0o600)
    csr_path.write_bytes(x509util.dump_certificate_request(csr))
    return key_path, csr_path


def run_caucase(server: RunningServer, workdir: Path, *args: str) -> str:
    """Our `caucase` with the default stores in `workdir`; its stdout (exit status 0)."""
    result = subprocess.run(
        [CAUCASE, "--ca-url", server.http_url, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def openssl_verify(workdir: Path, crt_path: Path) -> str:
    stores = ["-CAfile", "cas.crt.pem", "-CRLfile", "cas.crl.pem"]
    result = subprocess.run(
        ["openssl", "verify", "-crl_check", *stores, str(crt_path)],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr


def certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    return x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE") :])


def key_type_of(path: Path) -> keys.KeyType:
    return keys.kind(keys.load_private_key(path.read_bytes()).public_key())


class Deployment:
    """A caucased of one CA key type and the working directory of its clients."""

    def __init__(self, server: RunningServer, workdir: Path, ca_type: keys.KeyType) -> None:
        self.server = server
        self.workdir = workdir
        self.ca_type = ca_type
        key_path, csr_path = write_key_and_csr(workdir, "admin", ca_type)
        csr_id = run_caucase(server, workdir, "--mode", "user", "--send-csr", str(csr_path))
        self.admin = key_path
        run_caucase(
            server, workdir, "--mode", "user", "--get-crt", csr_id.split()[0], str(key_path)
        )

    def caucase(self, *args: str) -> str:
        return run_caucase(self.server, self.workdir, *args)

    def issue(self, stem: str, key_type: keys.KeyType) -> Path:
        """A service certificate for a new key of `key_type`, signed by the administrator;
        key and certificate in `<stem>.key`."""
        key_path, csr_path = write_key_and_csr(self.workdir, stem, key_type)
        csr_id = self.caucase("--send-csr", str(csr_path)).split()[0]
        self.caucase("--user-key", str(self.admin), "--sign-csr", csr_id)
        self.caucase("--get-crt", csr_id, str(key_path))
        return key_path


@pytest.fixture(scope="module", params=TYPES, ids=[f"ca-{name}" for name in IDS])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    ca_type: keys.KeyType = request.param
    workdir = tmp_path_factory.mktemp(f"ca-{ca_type.value}")
    server = start_caucased(
        [OUR_BIN / "caucased"], workdir / "server", ["--key-type", ca_type.value]
    )
    try:
        yield Deployment(server, workdir, ca_type)
    finally:
        server.stop()


def test_ca_and_server_keys_have_the_configured_type(deployment: Deployment) -> None:
    deployment.caucase("--update-user")
    for store in ("cas.crt.pem", "cau.crt.pem"):
        (ca_crt,) = x509.load_pem_x509_certificates((deployment.workdir / store).read_bytes())
        assert keys.kind(ca_crt.public_key()) is deployment.ca_type
    assert key_type_of(deployment.server.workdir / "server.key.pem") is deployment.ca_type
    assert keys.kind(certificate(deployment.admin).public_key()) is deployment.ca_type


@pytest.mark.parametrize("client_type", TYPES, ids=[f"client-{name}" for name in IDS])
def test_lifecycle(deployment: Deployment, client_type: keys.KeyType) -> None:
    workdir = deployment.workdir
    stem = f"{client_type.value}-service"
    key_path = deployment.issue(stem, client_type)
    assert "OK" in openssl_verify(workdir, key_path)
    first = certificate(key_path)
    assert keys.kind(first.public_key()) is client_type

    deployment.caucase("--threshold", "100", "--renew-crt", str(key_path), "")
    assert key_type_of(key_path) is client_type  # by default, the type of the old key
    renewed = certificate(key_path)
    assert renewed.serial_number != first.serial_number
    assert renewed.subject == first.subject
    assert "OK" in openssl_verify(workdir, key_path)

    other_type = TYPES[(TYPES.index(client_type) + 1) % len(TYPES)]
    deployment.caucase(
        "--threshold", "100", "--key-type", other_type.value, "--renew-crt", str(key_path), ""
    )
    assert key_type_of(key_path) is other_type
    assert keys.kind(certificate(key_path).public_key()) is other_type
    assert "OK" in openssl_verify(workdir, key_path)

    deployment.caucase("--revoke-crt", str(key_path), "")
    deployment.caucase()  # refreshes the CRL store
    assert "certificate revoked" in openssl_verify(workdir, key_path)

    by_serial = deployment.issue(f"{stem}-by-serial", client_type)
    serial = str(certificate(by_serial).serial_number)
    deployment.caucase("--user-key", str(deployment.admin), "--revoke-serial", serial)
    deployment.caucase()
    assert "certificate revoked" in openssl_verify(workdir, by_serial)
