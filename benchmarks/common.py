"""Shared pieces of the benchmark scripts: servers to compare, load generation, ceilings.

Benchmarks print figures; they never pass or fail. Run them from the repository root with the
project's virtual environment, e.g. `.venv/bin/python benchmarks/issuance.py`.
"""

from __future__ import annotations

import datetime
import http.client
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from caucase.crypto import keys  # noqa: E402
from tests.support.servers import (  # noqa: E402
    OUR_BIN,
    RunningServer,
    make_key_and_csr,
    request,
    start_caucased,
)
from tests.support.wait import poll  # noqa: E402

# The reference 0.9.17, as the test suite finds it (CAUCASE_REFERENCE_VENV, else in the tree).
REFERENCE_BIN = Path(os.environ.get("CAUCASE_REFERENCE_VENV", ROOT / ".reference-venv")) / "bin"


def implementations() -> dict[str, list[str]]:
    """caucased commands to compare: ours, and the reference when it is installed."""
    found = {"ours": [str(OUR_BIN / "caucased")]}
    if (REFERENCE_BIN / "caucased").exists():
        found["reference"] = [str(REFERENCE_BIN / "caucased")]
    else:
        print(f"(reference caucased not found in {REFERENCE_BIN}: run the test suite once)")
    return found


def wait_ready(server: RunningServer) -> RunningServer:
    """Wait until caucased answers: ours listens before its CAs exist (first start-up), so
    a timing started at `listening` would include the CA key generation."""

    def answers() -> bool:
        try:
            return request(server, "GET", "/cas/crt/ca.crt.pem", timeout=60)[0] == 200
        except OSError:
            return False

    poll(answers, "caucased to answer", 60, process=server.process)
    return server


@contextmanager
def running(command: Sequence[str], extra_args: Sequence[str] = ()) -> Iterator[RunningServer]:
    with tempfile.TemporaryDirectory() as workdir:
        server = start_caucased(command, Path(workdir), extra_args)
        try:
            yield wait_ready(server)
        finally:
            server.stop()


def cpu_seconds(server: RunningServer) -> float:
    """User and system CPU time the caucased process used so far: a figure other loads
    of a shared machine disturb far less than rates."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_csrs(count: int) -> list[bytes]:
    started = time.perf_counter()
    csrs = [make_key_and_csr(f"bench-{index}")[1] for index in range(count)]
    print(f"generated {count} CSRs in {time.perf_counter() - started:.1f} s")
    return csrs


class Connection:
    """One keep-alive capable HTTP connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None = None) -> None:
        self._host, self._port, self._context = host, port, context
        self._connection: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        for attempt in (0, 1):
            if self._connection is None:
                if self._context is None:
                    self._connection = http.client.HTTPConnection(
                        self._host, self._port, timeout=60
                    )
                else:
                    self._connection = http.client.HTTPSConnection(
                        self._host, self._port, context=self._context, timeout=60
                    )
            try:
                self._connection.request(method, path, body=body, headers=headers or {})
                response = self._connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, response, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def client_tls_context(cert_file: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        context.load_cert_chain(str(cert_file))
    return context


def run_parallel(
    jobs: Sequence[object], worker: Callable[[int, object], None], concurrency: int
) -> float:
    """Run worker(thread_index, job) over jobs with `concurrency` threads; elapsed seconds."""
    lock = threading.Lock()
    queue = list(reversed(jobs))

    def loop(index: int) -> None:
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop()
            worker(index, job)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(loop, index) for index in range(concurrency)]:
            future.result()
    return time.perf_counter() - started


@contextmanager
def trivial_server(cert: Path | None = None, client_ca: Path | None = None) -> Iterator[int]:
    """The port of a minimal threaded wsgiref server in its own process (see
    trivial_server.py): HTTPS with `cert`, asking for client certificates with `client_ca`."""
    command = [sys.executable, str(Path(__file__).with_name("trivial_server.py"))]
    if cert is not None:
        command += ["--cert", str(cert)]
    if client_ca is not None:
        command += ["--client-ca", str(client_ca)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait()


def requests_per_second(
    port: int, count: int, concurrency: int, context: ssl.SSLContext | None
) -> float:
    """Rate of trivial GETs, each on a new connection (a new TLS handshake with `context`)."""

    def worker(_index: int, _job: object) -> None:
        connection = Connection("127.0.0.1", port, context)
        status, _, _ = connection.request("GET", "/")
        connection.close()
        assert status == 200

    return count / run_parallel(range(count), worker, concurrency)


def self_signed(directory: Path, name: str, key_type: keys.KeyType = keys.KeyType.RSA) -> Path:
    key = keys.generate(keys.KeySpec(key_type))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, keys.signature_hash(key))
    )
    path = directory / f"{name}.pem"
    path.write_bytes(keys.dump_private_key(key) + crt.public_bytes(serialization.Encoding.PEM))
    return path


def tls_ceiling(count: int, concurrency: int, key_type: keys.KeyType = keys.KeyType.RSA) -> float:
    """HTTPS requests/s on a trivial server, each with a new mutual handshake, server and
    client keys of `key_type` (RSA-2048 by default)."""
    with tempfile.TemporaryDirectory() as workdir:
        server_pem = self_signed(Path(workdir), "server", key_type)
        client_pem = self_signed(Path(workdir), "client", key_type)
        client_context = client_tls_context(client_pem)
        with trivial_server(server_pem, client_pem) as port:
            return requests_per_second(port, count, concurrency, client_context)


def summary(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f})"
