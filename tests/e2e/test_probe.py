"""caucase-probe against real servers: a healthy caucased, nothing, and impostors."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from caucase import __version__
from tests.support.ca_helpers import generate_keys, pem, self_signed
from tests.support.servers import OUR_BIN, RunningServer, free_port_pair, key_pem

PROBE = OUR_BIN / "caucase-probe"


def _probe(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROBE), url], capture_output=True, text=True, check=False, timeout=60
    )


def _assert_one_line_failure(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("caucase-probe: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_healthy_caucased_is_one_confirmation_on_stderr(caucased: RunningServer) -> None:
    result = _probe(caucased.http_url)

    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == (
        f"caucase-probe: {caucased.http_url}: HTTP and HTTPS serve the same CAS\n"
    )


def test_url_without_scheme_is_refused(caucased: RunningServer) -> None:
    result = _probe(caucased.netloc)

    _assert_one_line_failure(result)
    assert f"did you mean http://{caucased.netloc} ?" in result.stderr


def test_url_of_the_https_port_is_refused(caucased: RunningServer) -> None:
    result = _probe(f"http://{caucased.host}:{caucased.https_port}")

    _assert_one_line_failure(result)
    assert f"port {caucased.https_port} speaks TLS" in result.stderr
    assert f"HTTP port (usually {caucased.http_port})" in result.stderr


def test_nothing_listening(tmp_path: Path) -> None:
    port = free_port_pair()

    result = _probe(f"http://127.0.0.1:{port}")

    _assert_one_line_failure(result)
    assert f"127.0.0.1:{port}" in result.stderr


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    """A key + certificate file (for a TLS listener) and the certificate PEM."""
    (key,) = generate_keys(1)
    crt_pem = pem(self_signed(key, name))
    path = tmp_path / f"{name}.pem"
    path.write_bytes(key_pem(key) + crt_pem)
    return path, crt_pem


def _serving(
    port: int, body_by_path: dict[str, bytes], tls_file: Path | None = None
) -> http.server.ThreadingHTTPServer:
    """A threaded HTTP(S) server answering the given paths with 200 and others with 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = body_by_path.get(self.path)
            self.send_response(200 if body is not None else 404)
            payload = body if body is not None else b"not here"
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if tls_file is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls_file))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[tuple[int, bytes, bytes, Path]]:
    """Port p free for HTTP and p+1 for HTTPS, two different certificates, the TLS file."""
    port = free_port_pair()
    tls_file, first = _self_signed(tmp_path, "first")
    _, second = _self_signed(tmp_path, "second")
    yield port, first, second, tls_file


def _probe_impostor(
    port: int, tls_file: Path, http_files: dict[str, bytes], https_files: dict[str, bytes]
) -> subprocess.CompletedProcess[str]:
    """Probe a pair of plain web servers standing in for caucased's two listeners."""
    servers = [_serving(port, http_files), _serving(port + 1, https_files, tls_file)]
    try:
        return _probe(f"http://127.0.0.1:{port}")
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_http_and_https_serving_different_cas_is_a_failure(
    impostor: tuple[int, bytes, bytes, Path],
) -> None:
    port, first, second, tls_file = impostor
    path = "/cas/crt/ca.crt.pem"
    result = _probe_impostor(port, tls_file, {path: first}, {path: second})

    _assert_one_line_failure(result)
    assert "do not serve the same caucase database" in result.stderr


def test_same_ca_on_both_listeners_passes(impostor: tuple[int, bytes, bytes, Path]) -> None:
    port, first, _, tls_file = impostor
    path = "/cas/crt/ca.crt.pem"
    result = _probe_impostor(port, tls_file, {path: first}, {path: first})

    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr.endswith("HTTP and HTTPS serve the same CAS\n")


def test_web_server_that_is_not_caucased(impostor: tuple[int, bytes, bytes, Path]) -> None:
    port, _, _, tls_file = impostor
    result = _probe_impostor(port, tls_file, {}, {})

    _assert_one_line_failure(result)
    assert "HTTP 404" in result.stderr


def test_version_and_usage() -> None:
    version = subprocess.run(
        [str(PROBE), "--version"], capture_output=True, text=True, check=False
    )
    usage = subprocess.run([str(PROBE)], capture_output=True, text=True, check=False)

    assert (version.returncode, version.stdout) == (0, __version__ + "\n")
    assert usage.returncode == 2 and "usage:" in usage.stderr
