"""Slow and stalled clients do not hold up others, and are dropped after the timeouts.

The listeners run in-process (the real caucased server classes, real sockets and TLS, the
real application), so the drop can be tested with timeouts of a second passed to their
constructors instead of waiting the production 30 s / 10 s; the crowd of 150 meets a
caucased process.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.http.server import CaucasedServer, CaucasedTLSServer, start_serving, stop_serving
from tests.conftest import FakeClock
from tests.support.servers import OUR_BIN, client_context, start_caucased
from tests.support.wsgi_support import deploy, name

PROMPT = 5.0  # a normal request must complete well within this, slow clients or not
SHORT_TIMEOUT = 1.0


@dataclass
class Listeners:
    http: CaucasedServer
    https: CaucasedTLSServer

    @property
    def http_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.http.server_port)

    @property
    def https_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.https.server_port)


def _server_context(tmp_path: Path) -> ssl.SSLContext:
    """A TLS server context with a throw-away self-signed certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(name("127.0.0.1"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "server.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        + crt.public_bytes(serialization.Encoding.PEM)
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(path))
    return context


def _listeners(tmp_path: Path, timeout: float | None) -> Iterator[Listeners]:
    clock = FakeClock(datetime.datetime.now(datetime.timezone.utc))
    user_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = deploy(tmp_path, clock, user_key).app
    timeouts = {} if timeout is None else {"connection_timeout": timeout}
    http_timeouts = {} if timeout is None else {**timeouts, "keepalive_timeout": timeout}
    http = CaucasedServer(("127.0.0.1", 0), socket.AF_INET, **http_timeouts)
    tls_timeouts = {} if timeout is None else {**timeouts, "handshake_timeout": timeout}
    https = CaucasedTLSServer(
        ("127.0.0.1", 0), socket.AF_INET, _server_context(tmp_path), **tls_timeouts
    )
    servers = [http, https]
    for server in servers:
        server.listen()
    start_serving(servers, app)
    try:
        yield Listeners(http, https)
    finally:
        stop_serving(servers)


@pytest.fixture
def default_listeners(tmp_path: Path) -> Iterator[Listeners]:
    """Listeners with the production timeouts (30 s socket, 10 s handshake)."""
    yield from _listeners(tmp_path, None)


@pytest.fixture
def short_listeners(tmp_path: Path) -> Iterator[Listeners]:
    """Listeners whose socket and handshake timeouts are one second."""
    yield from _listeners(tmp_path, SHORT_TIMEOUT)


def _client_hello() -> bytes:
    """A real TLS ClientHello, so that the server answers and then waits for the rest."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _stalled_clients(listeners: Listeners) -> list[tuple[str, socket.socket]]:
    """Connections that start a request and then stop sending."""
    stalls = [
        ("silent", listeners.http_address, b""),
        ("half a request line", listeners.http_address, b"GET /cas/crt/ca.cr"),
        ("half a header line", listeners.http_address, b"GET / HTTP/1.1\r\nHost: 127.0."),
        (
            "half a body",
            listeners.http_address,
            b"PUT /cas/csr HTTP/1.1\r\nContent-Length: 1000\r\n\r\n-----BEGIN",
        ),
        ("silent TLS", listeners.https_address, b""),
        # The first bytes of a TLS record header: a ClientHello that never completes.
        ("half a TLS handshake", listeners.https_address, b"\x16\x03\x01\x02\x00\x01\x00"),
        ("TLS hello, then nothing", listeners.https_address, _client_hello()),
        (
            "idle kept-alive connection",
            listeners.http_address,
            b"GET /cas/crt/ca.crt.json HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ]
    clients = []
    for label, address, data in stalls:
        sock = socket.create_connection(address, timeout=30)
        sock.sendall(data)
        clients.append((label, sock))
    return clients


def _get(address: tuple[str, int], tls: bool) -> bytes:
    """A complete GET of the CAS certificate, on a fresh connection."""
    sock = socket.create_connection(address, timeout=PROMPT)
    if tls:
        sock = client_context().wrap_socket(sock)
    with sock:
        sock.sendall(b"GET /cas/crt/ca.crt.pem HTTP/1.0\r\n\r\n")
        data = bytearray()
        while piece := sock.recv(65536):
            data += piece
    return bytes(data)


def _closed_by_server(sock: socket.socket, deadline: float) -> bytes | None:
    """What the server sent before closing, or None if it still holds the connection."""
    data = bytearray()
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return bytes(data)
        if not piece:
            return bytes(data)
        data += piece
    return None


def test_stalled_clients_do_not_block_others(default_listeners: Listeners) -> None:
    clients = _stalled_clients(default_listeners)
    try:
        for tls, address in (
            (False, default_listeners.http_address),
            (True, default_listeners.https_address),
        ):
            started = time.monotonic()
            answer = _get(address, tls)
            assert answer.startswith(b"HTTP/1.0 200 ")
            assert b"-----BEGIN CERTIFICATE-----" in answer
            assert time.monotonic() - started < PROMPT
        for label, sock in clients:  # all still held open: the production timeouts are long
            if label != "idle kept-alive connection":  # its reply came, the socket stays
                assert _closed_by_server(sock, time.monotonic() + 0.2) is None, label
    finally:
        for _, sock in clients:
            sock.close()


def test_stalled_clients_are_dropped_after_the_timeout(short_listeners: Listeners) -> None:
    clients = _stalled_clients(short_listeners)
    try:
        started = time.monotonic()
        deadline = started + SHORT_TIMEOUT + PROMPT
        for label, sock in clients:
            sent = _closed_by_server(sock, deadline)
            assert sent is not None, f"{label}: still open after the timeout"
            if label == "half a body":  # the request is known: it gets its 400
                assert sent.startswith(b"HTTP/1.0 400 "), sent
            elif label == "idle kept-alive connection":  # its one reply, then the close
                assert sent.startswith(b"HTTP/1.1 200 ") and sent.endswith(b"[]"), sent
            elif label.startswith("TLS hello"):  # the server's side of the handshake only
                assert sent.startswith(b"\x16\x03"), sent[:8]
            else:
                assert b" 200 " not in sent, label
        assert time.monotonic() - started >= SHORT_TIMEOUT * 0.9
        answer = _get(short_listeners.http_address, tls=False)
        assert answer.startswith(b"HTTP/1.0 200 ")
    finally:
        for _, sock in clients:
            sock.close()


def test_a_crowd_of_stalled_clients_does_not_block_others(tmp_path: Path) -> None:
    """A slowloris crowd: one thread each, none holding the accept loop, and the listen
    backlog deep enough that the burst of connections is not slowed by dropped SYNs.

    A caucased process with the production timeouts serves it, so that the crowd's
    descriptors and the server's are not counted against one process's limit."""
    server = start_caucased([OUR_BIN / "caucased"], tmp_path)
    http, https = (server.host, server.http_port), (server.host, server.https_port)
    crowd = []
    try:
        started = time.monotonic()
        for index in range(150):
            sock = socket.create_connection(https if index % 2 else http, timeout=30)
            sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: " if index % 2 == 0 else b"\x16\x03")
            crowd.append(sock)
        assert time.monotonic() - started < PROMPT
        for tls, address in ((False, http), (True, https)):
            started = time.monotonic()
            assert _get(address, tls).startswith(b"HTTP/1.0 200 ")
            assert time.monotonic() - started < PROMPT
    finally:
        for sock in crowd:
            sock.close()
        server.stop()


def test_a_slow_but_steady_client_is_served(short_listeners: Listeners) -> None:
    """The timeout is per read, not per request: a client trickling bytes is not cut."""
    request = b"GET /cas/crt/ca.crt.pem HTTP/1.0\r\nUser-Agent: slow\r\n\r\n"
    with socket.create_connection(short_listeners.http_address, timeout=30) as sock:
        for offset in range(0, len(request), 8):
            sock.sendall(request[offset : offset + 8])
            time.sleep(SHORT_TIMEOUT / 4)  # pacing the client, not synchronising
        answer = _closed_by_server(sock, time.monotonic() + PROMPT)
    assert answer is not None and answer.startswith(b"HTTP/1.0 200 ")
