"""The operator's story with every pairing of client tools and server: ours and the reference.

Each cell runs the same scenario with one implementation's `caucase` and `caucase-updater`
against the other's (or its own) `caucased`: bootstrap a user, bootstrap a service with the
updater, submit, list, sign, fetch, renew, check with openssl, revoke and see the CRL.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.servers import OUR_BIN, RunningServer, key_pem, make_key_and_csr, start_caucased
from tests.support.wait import poll

pytestmark = [pytest.mark.slow, pytest.mark.interop]
DEADLINE = 60.0

PAIRS = [
    pytest.param(("reference", "ours"), id="reference-tools-our-server"),
    pytest.param(("ours", "reference"), id="our-tools-reference-server"),
    pytest.param(("ours", "ours"), id="our-tools-our-server"),
    pytest.param(("reference", "reference"), id="reference-tools-reference-server"),
    # The reference tools (RSA keys only) against CA and HTTPS keys of other types.
    pytest.param(("reference", "ours", "ec-p256"), id="reference-tools-our-ec-p256-server"),
    pytest.param(("reference", "ours", "ed25519"), id="reference-tools-our-ed25519-server"),
]


@pytest.fixture(params=PAIRS)
def pairing(
    request: pytest.FixtureRequest, reference_bin: Path, tmp_path: Path
) -> Iterator[tuple[Path, RunningServer]]:
    tools, server_side, *key_type = request.param
    bins = {"ours": OUR_BIN, "reference": reference_bin}
    server = start_caucased(
        [bins[server_side] / "caucased"],
        tmp_path / "server",
        ["--service-auto-approve-count", "1", *(["--key-type", *key_type] if key_type else [])],
    )
    yield bins[tools], server
    server.stop()


class Tools:
    """Runs one implementation's client commands in a working directory."""

    def __init__(self, bin_dir: Path, server: RunningServer, cwd: Path) -> None:
        self.bin_dir, self.server, self.cwd = bin_dir, server, cwd

    def caucase(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin_dir / "caucase"), "--ca-url", self.server.http_url, *args],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def new_key_and_csr(self, name: str) -> tuple[Path, Path]:
        key, csr = make_key_and_csr(name)
        key_path, csr_path = self.cwd / f"{name}.pem", self.cwd / f"{name}.csr.pem"
        key_path.write_bytes(key_pem(key))
        csr_path.write_bytes(csr)
        return key_path, csr_path

    def openssl_verify(self, crt: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "verify", "-crl_check", "-CAfile", "cas.crt.pem",
             "-CRLfile", "cas.crl.pem", str(crt)],
            cwd=self.cwd, capture_output=True, text=True,
        )  # fmt: skip


def certificate(path: Path) -> x509.Certificate:
    (crt,) = x509.load_pem_x509_certificates(
        b"-----BEGIN CERTIFICATE" + path.read_bytes().split(b"-----BEGIN CERTIFICATE", 1)[1]
    )
    return crt


def wait_for_certificate(path: Path, process: subprocess.Popen[bytes]) -> None:
    poll(
        lambda: b"BEGIN CERTIFICATE" in path.read_bytes(),
        "the updater's bootstrap",
        DEADLINE,
        process=process,
    )


def test_operator_story(pairing: tuple[Path, RunningServer], tmp_path: Path) -> None:
    bin_dir, server = pairing
    cwd = tmp_path / "client"
    cwd.mkdir()
    tools = Tools(bin_dir, server, cwd)

    # The first CAS CSR is auto-approved: the updater bootstraps a service with it.
    updated_key, updated_csr = tools.new_key_and_csr("updated")
    updater = subprocess.Popen(
        [str(bin_dir / "caucase-updater"), "--ca-url", server.http_url,
         "--cas-ca", "cas.crt.pem", "--ca", "cas.crt.pem", "--crl", "cas.crl.pem",
         "--crt", str(updated_key), "--csr", str(updated_csr)],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_certificate(updated_key, updater)
    finally:
        updater.send_signal(signal.SIGTERM)
        updater.wait(30)

    # The first CAU CSR is auto-approved: the user.
    user_key, user_csr = tools.new_key_and_csr("user")
    user_id = tools.caucase("--mode", "user", "--send-csr", str(user_csr)).stdout.split()[0]
    fetched = tools.caucase("--mode", "user", "--get-crt", user_id, str(user_key))
    assert "automatically approved" in fetched.stdout

    # A service CSR waits for the user, who lists and signs it.
    service_key, service_csr = tools.new_key_and_csr("service")
    service_id = tools.caucase("--send-csr", str(service_csr)).stdout.split()[0]
    pending = tools.caucase("--get-crt", service_id, str(service_key), check=False)
    assert pending.returncode == 2 and "CSR still pending" in pending.stdout
    listing = tools.caucase("--user-key", str(user_key), "--list-csr").stdout
    assert service_id in listing and "CN=service" in listing
    tools.caucase("--user-key", str(user_key), "--sign-csr", service_id)
    fetched = tools.caucase("--get-crt", service_id, str(service_key))
    assert "manually approved" in fetched.stdout
    assert tools.openssl_verify(service_key).stdout.strip().endswith("OK")

    # Renewal by the key holder: a new key, the same subject.
    before = certificate(service_key)
    tools.caucase("--renew-crt", str(service_key), "", "--threshold", "1000")
    after = certificate(service_key)
    assert after.serial_number != before.serial_number
    assert after.subject == before.subject
    assert after.public_key() != before.public_key()

    # Revocation by the key holder, then by the user by serial: both land in the CRL.
    tools.caucase("--revoke-crt", str(service_key), "")
    verdict = tools.openssl_verify(service_key)
    assert verdict.returncode != 0 and "certificate revoked" in verdict.stdout + verdict.stderr
    tools.caucase("--user-key", str(user_key), "--revoke-serial", str(before.serial_number))
    crl = x509.load_pem_x509_crl((cwd / "cas.crl.pem").read_bytes())
    revoked = {entry.serial_number for entry in crl}
    assert {before.serial_number, after.serial_number} <= revoked
    assert tools.openssl_verify(updated_key).stdout.strip().endswith("OK")
