"""A minimal tls-alpn-01 responder (RFC 8737) of the tests' own: it negotiates
``acme-tls/1`` and shows a self-signed certificate with the acmeIdentifier extension.

Options make it answer wrongly in one precise way, to prove that the validator notices;
it records the SNI names it was asked for.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACME_TLS_PROTOCOL = "acme-tls/1"
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def challenge_certificate(
    names: Sequence[str], key_authorization: str, *, critical: bool = True
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) answering the challenge for `names` (one, normally)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode()).digest()
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme tls alpn")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest), critical
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass
class Responder:
    port: int
    server_names: list[str | None] = field(default_factory=list)


@contextmanager
def tls_alpn_responder(
    certificate_pem: bytes,
    key_pem: bytes,
    *,
    alpn: Sequence[str] = (ACME_TLS_PROTOCOL,),
    port: int = 0,
) -> Iterator[Responder]:
    """Serve the certificate on 127.0.0.1:`port` (0: an OS-chosen one) until the block
    ends."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as work:
        chain = Path(work) / "chain.pem"
        chain.write_bytes(certificate_pem + key_pem)
        context.load_cert_chain(str(chain))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    listener = socket.create_server(("127.0.0.1", port))
    responder = Responder(listener.getsockname()[1])

    def remember(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        responder.server_names.append(name)

    context.sni_callback = remember  # type: ignore[assignment]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                try:
                    with context.wrap_socket(connection, server_side=True) as tls:
                        tls.recv(1)
                except (OSError, ssl.SSLError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield responder
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread
        listener.close()
        thread.join(10)
