"""caucased as a real process: listeners, TLS client authentication, own certificate,
backups, signals, and the reference client talking to it; on each storage engine (SQLite,
PostgreSQL)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from caucase import __version__, backup
from caucase.crypto import keys
from caucase.storage import exists
from tests.e2e.helpers import (
    CAUCASED,
    certificate_of,
    revoke_serial,
    served_certificate,
    signed_credential,
    submit_csr,
)
from tests.support.faketime import FakeTime, Role
from tests.support.servers import (
    RunningServer,
    accepts,
    client_context,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)
from tests.support.wait import poll

ANONYMOUS_ROUTES = (
    "/",
    "/cas",
    "/cau",
    "/cas/crt/ca.crt.pem",
    "/cau/crt/ca.crt.pem",
    "/cas/crt/ca.crt.json",
    "/cas/crl",
    "/cau/crl",
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, module_caucased_db: str | None
) -> Iterator[RunningServer]:
    running = start_caucased(CAUCASED, tmp_path_factory.mktemp("caucased"), db=module_caucased_db)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def user(server: RunningServer) -> Path:
    return make_user(server, server.workdir / "user.pem")


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("path", ANONYMOUS_ROUTES)
def test_anonymous_routes_answer_on_both_ports(
    server: RunningServer, path: str, https: bool
) -> None:
    status, _, body = request(server, "GET", path, https=https)
    assert status == 200
    assert body


def test_user_certificate_authenticates(server: RunningServer, user: Path) -> None:
    status, _, body = request(server, "GET", "/cas/csr", https=True, cert_file=user)
    assert status == 200
    assert isinstance(json.loads(body), list)


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_listing_without_certificate_is_refused(server: RunningServer, https: bool) -> None:
    status, _, _ = request(server, "GET", "/cas/csr", https=https)
    assert status == 401


def test_service_certificate_is_no_user_credential(
    server: RunningServer, user: Path, tmp_path: Path
) -> None:
    service, _ = signed_credential(server, "cas", user, tmp_path / "service.pem", "svc")
    try:
        status, _, _ = request(server, "GET", "/cas/csr", https=True, cert_file=service)
    except (ssl.SSLError, ConnectionError):
        return  # refused during the handshake: not issued by a CAU CA
    assert status == 401


def test_revoked_user_is_refused_at_once(
    server: RunningServer, user: Path, tmp_path: Path
) -> None:
    other, other_crt = signed_credential(server, "cau", user, tmp_path / "other.pem", "other")
    assert request(server, "GET", "/cau/csr", https=True, cert_file=other)[0] == 200
    assert revoke_serial(server, user, "cau", other_crt.serial_number) == 204
    assert request(server, "GET", "/cau/csr", https=True, cert_file=other)[0] == 401
    assert request(server, "GET", "/cau/csr", https=True, cert_file=user)[0] == 200


def test_access_log_names_the_user_by_serial(server: RunningServer, user: Path) -> None:
    serial = certificate_of(user).serial_number
    request(server, "GET", "/cau/csr?log-marker", https=True, cert_file=user)
    pattern = re.compile(
        rf"^127\.0\.0\.1 - {serial} \[\d\d/[A-Z][a-z]{{2}}/\d{{4}}:\d\d:\d\d:\d\d \+0000\] "
        r'"GET /cau/csr\?log-marker HTTP/1.1" 200 \d+ "-" "[^"]*"$',
        re.MULTILINE,
    )
    poll(lambda: pattern.search(server.stdout_path.read_text()), "the access log line")


def test_chunked_body_and_expect_continue(server: RunningServer) -> None:
    _, csr = make_key_and_csr("chunked")
    head = (
        "PUT /cas/csr HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkcs10\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection((server.host, server.http_port), timeout=10) as sock:
        sock.sendall(head.encode())
        stream = sock.makefile("rb")
        assert stream.readline() == b"HTTP/1.0 100 Continue\r\n"
        assert stream.readline() == b"\r\n"
        half = len(csr) // 2
        for piece in (csr[:half], csr[half:]):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        status_line = stream.readline()
    # The whole chunked body was read: the connection stays persistent, hence HTTP/1.1.
    assert status_line.startswith(b"HTTP/1.1 201")


def test_http09_request_gets_the_bare_body(server: RunningServer) -> None:
    with socket.create_connection((server.host, server.http_port), timeout=10) as sock:
        sock.sendall(b"GET /cas/crt/ca.crt.pem\r\n\r\n")
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"-----BEGIN CERTIFICATE-----")


def test_stalled_clients_do_not_block_others(server: RunningServer) -> None:
    """A half-sent request and a TLS connection that never says hello are held open while
    other clients are served, and each is answered once it goes on."""
    with (
        socket.create_connection((server.host, server.http_port), timeout=10) as half_http,
        socket.create_connection((server.host, server.https_port), timeout=10) as no_hello,
    ):
        half_http.sendall(b"GET /cas/crt/ca.crt.pem HT")
        # Well below the server's own timeouts (10 s handshake, 30 s request): a server
        # that served one connection at a time would still be waiting on the stalled ones.
        assert request(server, "GET", "/cas/crt/ca.crt.pem", timeout=5)[0] == 200
        assert request(server, "GET", "/cas/crt/ca.crt.pem", https=True, timeout=5)[0] == 200
        half_http.sendall(b"TP/1.0\r\n\r\n")
        assert half_http.makefile("rb").readline().startswith(b"HTTP/1.0 200 ")
        with client_context().wrap_socket(no_hello) as tls:
            tls.sendall(b"GET /cas/crt/ca.crt.pem HTTP/1.0\r\n\r\n")
            assert tls.makefile("rb").readline().startswith(b"HTTP/1.0 200 ")


def test_own_certificate_is_for_the_netloc(server: RunningServer) -> None:
    crt = served_certificate(server)
    san = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert crt.subject == x509.Name([])
    key_file = server.workdir / "server.key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert certificate_of(key_file) == crt


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_signals_stop_cleanly(tmp_path: Path, signum: int, caucased_db: str | None) -> None:
    running = start_caucased(CAUCASED, tmp_path, db=caucased_db)
    assert running.stop(signum) == 0
    assert running.stderr().splitlines()[-1] == "Exiting"
    assert not accepts(running.host, running.http_port)


def test_own_certificate_is_renewed_while_serving(tmp_path: Path, caucased_db: str | None) -> None:
    # An 86.4 s certificate renewed 77.8 s before notAfter is due at once; caucased paces
    # renewals 10 s apart, which its clock, ten times faster, makes one second.
    args = ["--service-crt-validity", "0.001", "--threshold", "0.0009"]
    clock = FakeTime(tmp_path / "clock", rate=10)
    running = start_caucased(CAUCASED, tmp_path, args, env=clock.env(Role.SERVER), db=caucased_db)
    try:
        first = served_certificate(running)
        renewed = poll(lambda: (crt := served_certificate(running)) != first and crt, "a renewal")
        key_file = tmp_path / "server.key.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert certificate_of(key_file) == renewed
        assert renewed.public_key() != first.public_key()
        assert request(running, "GET", "/cas/crt/ca.crt.pem", https=True)[0] == 200
    finally:
        assert running.stop() == 0


def test_backup_waits_for_a_user_then_is_written(tmp_path: Path, caucased_db: str | None) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    args = ["--backup-directory", str(backups), "--backup-period", "1"]
    first = start_caucased(CAUCASED, tmp_path, args, db=caucased_db)
    try:
        poll(lambda: "Backup skipped" in first.stderr(), "the skipped backup")
        user = make_user(first, tmp_path / "user.pem")
    finally:
        assert first.stop() == 0
    assert list(backups.iterdir()) == []
    second = start_caucased(CAUCASED, tmp_path, args, db=caucased_db)
    try:
        found = poll(lambda: list(backups.glob("*.sql.caucased")), "a backup file")
    finally:
        assert second.stop() == 0
    assert [path.name for path in backups.iterdir()] == [found[0].name]
    assert re.fullmatch(r"\d{14}\.sql\.caucased", found[0].name)
    assert stat.S_IMODE(found[0].stat().st_mode) == 0o600
    key = keys.load_private_key(user.read_bytes().split(b"-----BEGIN CERTIFICATE")[0])
    with found[0].open("rb") as source:
        statements = list(backup.read_backup(source, key))  # type: ignore[arg-type]
    assert statements[0] == "BEGIN TRANSACTION;"
    assert any("caucrt" in statement for statement in statements)


def _run_caucased(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAUCASED, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_missing_backup_directory_is_a_clear_error(
    tmp_path: Path, caucased_db: str | None
) -> None:
    db = caucased_db or str(tmp_path / "caucase.sqlite")
    result = _run_caucased(
        ["--netloc", "127.0.0.1:1", "--db", db, "--backup-directory", str(tmp_path / "x")],
        tmp_path,
    )
    assert result.returncode == 2
    assert "backup directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert not exists(db)


def test_too_long_netloc_is_a_clear_error(tmp_path: Path) -> None:
    result = _run_caucased(["--netloc", "a" * 50 + ".example.com:8000"], tmp_path)
    assert result.returncode != 0
    assert "too long" in result.stderr
    assert "Traceback" not in result.stderr


def test_version(tmp_path: Path) -> None:
    result = _run_caucased(["--version"], tmp_path)
    assert (result.returncode, result.stdout) == (0, __version__ + "\n")


@pytest.mark.interop
def test_reference_client_against_our_server(
    server: RunningServer, user: Path, reference_bin: Path, tmp_path: Path
) -> None:
    client = [str(reference_bin / "caucase"), "--ca-url", server.http_url]
    stores = ["--ca-crt", str(tmp_path / "cas.crt.pem"), "--crl", str(tmp_path / "cas.crl")]
    _, csr = make_key_and_csr("interop-service")
    (tmp_path / "svc.csr.pem").write_bytes(csr)
    sent = subprocess.run(
        [*client, *stores, "--send-csr", str(tmp_path / "svc.csr.pem")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert sent.returncode == 0, sent.stderr
    csr_id = sent.stdout.split()[0]
    listed = subprocess.run(
        [*client, *stores, "--user-key", str(user), "--list-csr"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert listed.returncode == 0, listed.stderr
    assert csr_id in listed.stdout
    signed = subprocess.run(
        [*client, *stores, "--user-key", str(user), "--sign-csr", csr_id],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert signed.returncode == 0, signed.stderr
    status, _, crt = request(server, "GET", f"/cas/crt/{csr_id}")
    assert status == 200
    assert (
        x509.load_pem_x509_certificate(crt).issuer
        == certificate_of(tmp_path / "cas.crt.pem").subject
    )
    assert os.path.getsize(tmp_path / "cas.crl") > 0


def test_submitted_csr_is_listed_for_users(server: RunningServer, user: Path) -> None:
    _, csr = make_key_and_csr("pending")
    csr_id = submit_csr(server, "cas", csr)
    status, _, body = request(server, "GET", "/cas/csr", https=True, cert_file=user)
    assert status == 200
    assert csr_id in [item["id"] for item in json.loads(body)]


def _raw_exchange(server: RunningServer, data: bytes) -> bytes:
    with socket.create_connection((server.host, server.http_port), timeout=10) as sock:
        sock.sendall(data)
        return sock.makefile("rb").read()


def test_protocol_errors_are_answered_by_the_http_layer(server: RunningServer) -> None:
    too_long = _raw_exchange(server, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
    assert too_long.startswith(b"HTTP/1.0 414 ")
    assert ("\r\nServer: caucased " + __version__ + " Python/").encode() in too_long
    future = _raw_exchange(server, b"GET / HTTP/2.0\r\n\r\n")
    assert future.startswith(b"<!DOCTYPE HTML>")
    assert b"505" in future
    bad_chunk = _raw_exchange(
        server, b"PUT /cas/csr HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    # Deliberate difference: the reference answers bad framing with a 500.
    assert bad_chunk.startswith(b"HTTP/1.0 400 ")
    assert bad_chunk.endswith(b"\r\n\r\nInvalid chunked encoding")


def test_access_log_escapes_client_supplied_text(server: RunningServer) -> None:
    _raw_exchange(
        server,
        b'GET /?escape-marker HTTP/1.1\r\nReferrer: a"b\r\nUser-Agent: t\x01\\\r\n'
        b"Connection: close\r\n\r\n",
    )
    expected = '"GET /?escape-marker HTTP/1.1" 200 '
    line = poll(
        lambda: next(
            (li for li in server.stdout_path.read_text().splitlines() if expected in li), None
        ),
        "the access log line",
    )
    assert line.endswith(' "a\\"b" "t\\x01\\\\"')


def test_failing_backup_is_logged_and_the_server_keeps_serving(
    tmp_path: Path, caucased_db: str | None
) -> None:
    first = start_caucased(CAUCASED, tmp_path, db=caucased_db)
    try:
        make_user(first, tmp_path / "user.pem")
    finally:
        assert first.stop() == 0
    backups = tmp_path / "backups"
    backups.mkdir()
    # 34.56 s period, 3.5 s on a clock ten times faster: one backup at start, the next one
    # after the directory is gone.
    args = ["--backup-directory", str(backups), "--backup-period", "0.0004"]
    clock = FakeTime(tmp_path / "clock", rate=10)
    running = start_caucased(CAUCASED, tmp_path, args, env=clock.env(Role.SERVER), db=caucased_db)
    try:
        poll(lambda: list(backups.glob("*.sql.caucased")), "the first backup")
        shutil.rmtree(backups)
        poll(lambda: "Backup failed" in running.stderr(), "the failed backup")
        assert running.process.poll() is None
        assert request(running, "GET", "/cas/crt/ca.crt.pem")[0] == 200
    finally:
        assert running.stop() == 0


def test_own_certificate_is_reused_across_restarts_unless_broken(
    tmp_path: Path, caucased_db: str | None
) -> None:
    first = start_caucased(CAUCASED, tmp_path, db=caucased_db)
    try:
        original = served_certificate(first)
    finally:
        assert first.stop() == 0
    again = start_caucased(CAUCASED, tmp_path, db=caucased_db)
    try:
        assert served_certificate(again) == original
    finally:
        assert again.stop() == 0
    key_file = tmp_path / "server.key.pem"
    key_file.write_bytes(key_file.read_bytes().replace(b"-----BEGIN CERTIFICATE", b"junk"))
    repaired = start_caucased(CAUCASED, tmp_path, db=caucased_db)
    try:
        replacement = served_certificate(repaired)
    finally:
        assert repaired.stop() == 0
    assert replacement != original
    assert certificate_of(key_file) == replacement
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_locked_auto_approve_count_survives_restarts(
    tmp_path: Path, caucased_db: str | None
) -> None:
    locked = ["--service-auto-approve-count", "1", "--lock-auto-approve-count"]
    first = start_caucased(CAUCASED, tmp_path, locked, db=caucased_db)
    assert first.stop() == 0
    second = start_caucased(
        CAUCASED, tmp_path, ["--service-auto-approve-count", "0"], db=caucased_db
    )
    try:
        _, csr = make_key_and_csr("first service")
        csr_id = submit_csr(second, "cas", csr)
        assert request(second, "GET", f"/cas/crt/{csr_id}")[0] == 200
    finally:
        assert second.stop() == 0
