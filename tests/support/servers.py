"""Start and stop real caucased processes (ours or the reference) for end-to-end tests.

Ports are chosen by the OS; every process started here is stopped by its `stop()`, which the
`caucased`-style fixtures call in their teardown.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.ca_helpers import PrivateKey, generate_keys, make_csr
from tests.support.wait import poll

OUR_BIN = Path(sys.executable).parent
# Which caucased (or tool set) a parametrized test runs: ours, or the reference release's.
IMPLEMENTATIONS = ["ours", pytest.param("reference", marks=pytest.mark.interop)]
STARTUP_TIMEOUT = 60.0


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port p such that p and p + 1 are both free (caucased's HTTP and HTTPS ports)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind((host, port + 1))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free pair of consecutive ports")


def accepts(host: str, port: int) -> bool:
    """Whether something listens on host:port (a connection is accepted)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class RunningServer:
    """A caucased process listening on 127.0.0.1:<http_port> and <http_port + 1>."""

    process: subprocess.Popen[bytes]
    workdir: Path
    http_port: int
    host: str = "127.0.0.1"
    args: list[str] = field(default_factory=list)

    @property
    def https_port(self) -> int:
        return self.http_port + 1

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.netloc}"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "caucased.out"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "caucased.err"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the process and wait for it; kill it if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def caucased_args(
    command: Sequence[str | Path],
    workdir: Path,
    port: int,
    extra_args: Sequence[str] = (),
    db: str | None = None,
) -> list[str]:
    """The command line of a caucased keeping its server key in `workdir`, and its db
    there too unless `db` names one (a PostgreSQL URL)."""
    return [
        *map(str, command),
        "--db",
        db or str(workdir / "caucase.sqlite"),
        "--server-key",
        str(workdir / "server.key.pem"),
        "--netloc",
        f"127.0.0.1:{port}",
        *extra_args,
    ]


def start_caucased(
    command: Sequence[str | Path],
    workdir: Path,
    extra_args: Sequence[str] = (),
    *,
    http_port: int | None = None,
    env: dict[str, str] | None = None,
    db: str | None = None,
) -> RunningServer:
    """Start caucased in `workdir` with its db and server key there; wait until it listens.

    `env` replaces the environment (a faked clock: tests.support.faketime); `db` is a
    database elsewhere (a PostgreSQL URL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = http_port or free_port_pair()
    args = caucased_args(command, workdir, port, extra_args, db)
    with open(workdir / "caucased.out", "ab") as out, open(workdir / "caucased.err", "ab") as err:
        process = subprocess.Popen(
            args, cwd=workdir, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
    server = RunningServer(process, workdir, port, args=args)
    try:
        poll(
            lambda: accepts(server.host, port) and accepts(server.host, port + 1),
            "caucased to listen",
            STARTUP_TIMEOUT,
            process=process,
        )
    except AssertionError as error:
        server.stop()
        raise RuntimeError(f"{error}:\n{server.stderr()}") from None
    return server


def make_key_and_csr(common_name: str) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A fresh RSA key and a CSR for it, independent of the code under test."""
    (key,) = generate_keys(1)
    return key, make_csr(key, common_name)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def client_context(cert_file: Path | None = None) -> ssl.SSLContext:
    """A TLS client context that does not check the server (tests reach it by address),
    presenting `cert_file` (key and certificate) when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        context.load_cert_chain(str(cert_file))
    return context


def request(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    https: bool = False,
    cert_file: Path | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; (status, headers, body)."""
    connection: http.client.HTTPConnection
    if https:
        connection = http.client.HTTPSConnection(
            server.host, server.https_port, context=client_context(cert_file), timeout=timeout
        )
    else:
        connection = http.client.HTTPConnection(server.host, server.http_port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def make_user(server: RunningServer, path: Path, common_name: str = "user") -> Path:
    """Submit a CAU CSR (auto-approved while the server's approve count allows) and write
    key + certificate to `path` (0600): a user credential for HTTPS requests."""
    key, csr = make_key_and_csr(common_name)
    status, headers, _ = request(
        server, "PUT", "/cau/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201, status
    status, _, crt = request(server, "GET", "/cau/crt/" + headers["Location"])
    assert status == 200, f"user CSR was not auto-approved ({status})"
    with open(path, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as out:
        out.write(key_pem(key) + crt)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (the OS's choice); for servers that take a port argument."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
