"""pebble-challtestsrv (Debian's ``pebble`` package): a DNS server whose records, and
http-01 and tls-alpn-01 answers, are set through an HTTP API.

Tests point caucase's validators (``--acme-dns-server``) and pebble (``-dnsserver``) at
it so that made-up names resolve to 127.0.0.1; ACME client hooks set TXT records with it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import free_port
from tests.support.wait import poll

CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class ChallTestSrv:
    process: subprocess.Popen[bytes]
    dns_port: int
    http01_port: int | None
    tlsalpn01_port: int | None
    management_port: int

    @property
    def dns_server(self) -> str:
        """The HOST:PORT to give as ``--acme-dns-server`` or pebble's ``-dnsserver``."""
        return f"127.0.0.1:{self.dns_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def call(self, endpoint: str, **fields: object) -> None:
        request = urllib.request.Request(
            f"{self.management_url}/{endpoint}", data=json.dumps(fields).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, (endpoint, response.status)

    def add_a(self, host: str, *addresses: str) -> None:
        self.call("add-a", host=host, addresses=list(addresses))

    def set_txt(self, name: str, value: str) -> None:
        self.call("set-txt", host=name.rstrip(".") + ".", value=value)

    def clear_txt(self, name: str) -> None:
        self.call("clear-txt", host=name.rstrip(".") + ".")

    def add_http01(self, token: str, key_authorization: str) -> None:
        self.call("add-http01", token=token, content=key_authorization)

    def add_tlsalpn01(self, host: str, key_authorization: str) -> None:
        self.call("add-tlsalpn01", host=host, content=key_authorization)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_challtestsrv(log: Path, *, http01: bool = True, tlsalpn01: bool = True) -> ChallTestSrv:
    """Start one on free loopback ports (IPv6 lookups answered with nothing: tests run on
    127.0.0.1) and wait until it serves."""
    dns_port, management_port = free_port(), free_port()
    http01_port = free_port() if http01 else None
    tlsalpn01_port = free_port() if tlsalpn01 else None

    def bind(port: int | None) -> str:
        return "" if port is None else f"127.0.0.1:{port}"

    args = [
        CHALLTESTSRV,
        "-defaultIPv6", "",
        "-dns01", bind(dns_port),
        "-http01", bind(http01_port),
        "-https01", "",
        "-tlsalpn01", bind(tlsalpn01_port),
        "-management", bind(management_port),
    ]  # fmt: skip
    with open(log, "ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    server = ChallTestSrv(process, dns_port, http01_port, tlsalpn01_port, management_port)
    ports = [port for port in (dns_port, management_port, http01_port, tlsalpn01_port) if port]

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"pebble-challtestsrv exited:\n{log.read_text()}")
        return all(_listening(port) for port in ports)

    try:
        poll(ready, "pebble-challtestsrv to listen")
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def running_challtestsrv(log: Path, **options: bool) -> Iterator[ChallTestSrv]:
    server = start_challtestsrv(log, **options)
    try:
        yield server
    finally:
        server.stop()
