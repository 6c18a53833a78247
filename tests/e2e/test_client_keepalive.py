"""Kept-alive connections that caucased closed while idle are reopened, never resent blindly.

caucased drops a persistent connection after a few idle seconds; the client must notice
before sending. The listeners run in-process (the real server classes, sockets, TLS and
application) with an idle timeout of a fraction of a second, and the tests wait until the
server really closed its side instead of sleeping.
"""

from __future__ import annotations

import argparse
import datetime
import io
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from caucase.cli import updater, updater_options
from caucase.client import CaucaseClient
from caucase.exceptions import CaucaseNetworkError
from caucase.http.server import CaucasedServer, CaucasedTLSServer, start_serving, stop_serving
from tests.conftest import FakeClock
from tests.support.servers import free_port_pair, key_pem, make_key_and_csr
from tests.support.wsgi_support import Deployment, deploy, name

IDLE_TIMEOUT = 0.3


class _ConnectionCounting:
    """Counts the connections a listener holds, so that a test can wait until it dropped
    every idle one."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.open_connections = 0
        self.accepted = 0
        self.changed = threading.Condition()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.changed:
            self.open_connections += 1
            self.accepted += 1
        super().process_request(request, client_address)  # type: ignore[misc]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            with self.changed:
                self.open_connections -= 1
                self.changed.notify_all()

    def wait_until_idle_closed(self, timeout: float = 10) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.open_connections == 0, timeout)


class CountingServer(_ConnectionCounting, CaucasedServer):
    pass


class CountingTLSServer(_ConnectionCounting, CaucasedTLSServer):
    pass


@dataclass
class Listeners:
    http: CountingServer
    https: CountingTLSServer
    deployment: Deployment
    user_key: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_port}"


def _tls_context(tmp_path: Path, deployment: Deployment) -> ssl.SSLContext:
    """A server identity of its own; client certificates checked against the CAU CA."""
    key, _ = make_key_and_csr("server")
    now = deployment.clock()
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
    path.write_bytes(key_pem(key) + crt.public_bytes(serialization.Encoding.PEM))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=deployment.cau.get_ca_certificate().decode("ascii"))
    context.load_cert_chain(str(path))
    return context


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[Listeners]:
    # TLS checks the user certificate against the real time: the clock starts there.
    clock = FakeClock(datetime.datetime.now(datetime.timezone.utc))
    user_key, _ = make_key_and_csr("admin")
    deployment = deploy(tmp_path, clock, user_key)
    user_path = tmp_path / "user.pem"
    user_path.write_bytes(key_pem(user_key) + deployment.user_crt)
    port = free_port_pair()
    http = CountingServer(("127.0.0.1", port), socket.AF_INET, keepalive_timeout=IDLE_TIMEOUT)
    https = CountingTLSServer(
        ("127.0.0.1", port + 1), socket.AF_INET, _tls_context(tmp_path, deployment)
    )
    # The TLS listener takes no idle timeout argument; its handler reads this attribute.
    https.keepalive_timeout = IDLE_TIMEOUT
    servers: list[CaucasedServer] = [http, https]
    for server in servers:
        server.listen()
    start_serving(servers, deployment.app)
    try:
        yield Listeners(http, https, deployment, user_path)
    finally:
        stop_serving(servers)


def test_client_reconnects_after_the_server_dropped_an_idle_connection(
    listeners: Listeners,
) -> None:
    with CaucaseClient(listeners.url + "/cas") as client:
        first = client.get_ca_certificate()
        listeners.http.wait_until_idle_closed()

        assert client.get_ca_certificate() == first
        listeners.http.wait_until_idle_closed()
        assert client.get_ca_certificate() == first

    assert listeners.http.accepted == 3


def test_authenticated_client_reconnects_after_an_idle_tls_connection_was_dropped(
    listeners: Listeners,
) -> None:
    with CaucaseClient(listeners.url + "/cas", str(listeners.user_key)) as client:
        assert client.get_pending_csr_list() == []
        listeners.https.wait_until_idle_closed()

        assert client.get_pending_csr_list() == []

    assert listeners.https.accepted == 2


def test_updater_bootstrap_and_renewal_see_no_network_error(
    listeners: Listeners, tmp_path: Path
) -> None:
    """Every wake-up of the updater follows an idle time after which the server closed
    its connections: the log must show the whole story without a single retry."""
    key, csr = make_key_and_csr("svc")
    (tmp_path / "svc.key").write_bytes(key_pem(key))
    (tmp_path / "svc.csr").write_bytes(csr)
    clock = listeners.deployment.clock
    out = io.StringIO()

    class Done(BaseException):
        pass

    def sleep(seconds: float) -> None:
        log = out.getvalue()
        if "Renewing" in log:
            raise Done
        if "Bootstrap done" not in log:
            csr_id = int(log.split("Waiting for signature of ")[1].split()[0])
            listeners.deployment.cas.create_certificate(csr_id)
        clock.advance(seconds=seconds)
        listeners.http.wait_until_idle_closed()

    files = {
        name: str(tmp_path / file_name)
        for name, file_name in [("--crt", "svc.crt"), ("--key", "svc.key"),
                                ("--csr", "svc.csr"), ("--cas-ca", "cas.crt.pem"),
                                ("--ca", "cas.crt.pem"), ("--crl", "cas.crl.pem")]
    }  # fmt: skip
    # Checks a month apart (the reference's --max-sleep): a wake-up every few hours would
    # only repeat the same story, each after an idle close.
    argv = [
        *("--ca-url", listeners.url, "--max-sleep", "31"),
        *(item for pair in files.items() for item in pair),
    ]
    args: argparse.Namespace = updater_options.build_parser().parse_args(argv)
    instance = updater.Updater(args, updater.SignalGuard(), clock=clock, sleep=sleep, out=out)
    try:
        with pytest.raises(Done):
            instance.run()
    finally:
        instance.close()

    log = out.getvalue()
    assert "Bootstrap done" in log and f"Renewing {tmp_path / 'svc.crt'}" in log
    assert "network error" not in log
    assert listeners.http.accepted > 3


class ClosingAfterRead:
    """A server whose first connection answers one request, then reads the second and
    closes without a reply (as a server that failed while handling it); every later
    connection answers each request. Records the request lines it read."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.request_lines: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _read_request(self, stream: Any) -> bool:
        line = stream.readline()
        if not line:
            return False
        length = 0
        while (header := stream.readline()) not in (b"\r\n", b""):
            field, _, value = header.partition(b":")
            if field.strip().lower() == b"content-length":
                length = int(value)
        stream.read(length)
        self.request_lines.append(line.decode().strip())
        return True

    def _serve(self) -> None:
        first = True
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection, connection.makefile("rb") as stream:
                while self._read_request(stream):
                    if first and len(self.request_lines) == 2:
                        break
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]")
            first = False

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def closing_server() -> Iterator[ClosingAfterRead]:
    server = ClosingAfterRead()
    yield server
    server.close()


def test_get_is_sent_again_when_the_connection_closes_without_a_reply(
    closing_server: ClosingAfterRead,
) -> None:
    with CaucaseClient(f"http://127.0.0.1:{closing_server.port}/cas") as client:
        client.get_ca_certificate()

        assert client.get_ca_certificate() == b"[]"

    assert closing_server.request_lines == ["GET /cas/crt/ca.crt.pem HTTP/1.1"] * 3


def test_put_the_server_may_have_processed_is_not_sent_again(
    closing_server: ClosingAfterRead,
) -> None:
    with CaucaseClient(f"http://127.0.0.1:{closing_server.port}/cas") as client:
        client.get_ca_certificate()

        with pytest.raises(CaucaseNetworkError) as raised:
            client.create_csr(make_key_and_csr("once")[1])

    assert closing_server.request_lines == [
        "GET /cas/crt/ca.crt.pem HTTP/1.1",
        "PUT /cas/csr HTTP/1.1",
    ]
    assert "RemoteDisconnected" in str(raised.value)
