"""pebble (Debian's ``pebble`` package), a small ACME server, as a second opinion.

The harness of real ACME clients is proven against it first: when a client works with
pebble and the same flags fail against caucased, the difference is ours. It serves HTTPS
with a certificate from a throw-away root made here (``ServerPKI``), the one file the clients
are told to trust, and asks pebble-challtestsrv for every name it validates.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.servers import free_port
from tests.support.wait import poll

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass(frozen=True)
class ServerPKI:
    """A root CA (``ca``: what clients trust) and a server certificate it signed for
    127.0.0.1 and localhost (``certificate``, ``key``)."""

    ca: Path
    certificate: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> ServerPKI:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME test root")])
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name).issuer_name(root_name).public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
            )
            .sign(root_key, hashes.SHA256())
        )  # fmt: skip
        server_key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        server = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(root_name).public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            )
            .sign(root_key, hashes.SHA256())
        )  # fmt: skip
        pki = cls(directory / "ca.pem", directory / "server.crt.pem", directory / "server.key.pem")
        pki.ca.write_bytes(root.public_bytes(serialization.Encoding.PEM))
        pki.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        _write_key(server_key, pki.key)
        return pki

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Pebble:
    process: subprocess.Popen[bytes]
    port: int
    management_port: int
    pki: ServerPKI
    log: Path

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def root_pem(self) -> bytes:
        """The root of the chains pebble issues (regenerated at each start)."""
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=self.pki.client_context(), timeout=10) as answer:
            return bytes(answer.read())

    def certificate_status(self, serial: int) -> str:
        """ "Valid" or "Revoked", from pebble's management API."""
        url = f"https://127.0.0.1:{self.management_port}/cert-status-by-serial/{serial:x}"
        with urllib.request.urlopen(url, context=self.pki.client_context(), timeout=10) as answer:
            return str(json.loads(answer.read())["Status"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_pebble(
    workdir: Path,
    pki: ServerPKI,
    *,
    dns_server: str,
    http_port: int,
    tls_port: int,
    eab_keys: Mapping[str, str],
) -> Iterator[Pebble]:
    """pebble on 127.0.0.1 requiring EAB with `eab_keys` (kid -> base64url HMAC key),
    validating http-01 on `http_port` and tls-alpn-01 on `tls_port` of the names that
    `dns_server` resolves; without its random sleeps, nonce rejections and reuse."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, management_port = free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(pki.certificate),
            "privateKey": str(pki.key),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": True,
            "externalAccountMACKeys": dict(eab_keys),
        }
    }
    config_path = workdir / "pebble-config.json"
    config_path.write_text(json.dumps(config))
    environment = dict(
        os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0"
    )
    log = workdir / "pebble.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [PEBBLE, "-config", str(config_path), "-dnsserver", dns_server],
            stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=workdir,
        )  # fmt: skip
    pebble = Pebble(process, port, management_port, pki, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"pebble exited:\n{log.read_text()}")
        return _listening(port) and _listening(management_port)

    try:
        poll(ready, "pebble to listen")
        yield pebble
    finally:
        pebble.stop()
