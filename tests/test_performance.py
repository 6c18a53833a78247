"""Performance work kept honest: indexes used, CRL bytes unchanged, persistent connections
only where HTTP allows them, auto-signing in one transaction (issue 7)."""

from __future__ import annotations

import datetime
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from caucase.ca import CertificateAuthority
from caucase.crypto import crl_profile, keys, x509util
from caucase.storage import Storage
from tests.support.servers import OUR_BIN, RunningServer, make_key_and_csr, start_caucased

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "perf CA")])


@pytest.fixture(scope="module")
def ca_material() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = keys.generate()
    return key, x509util.make_ca_certificate(key, SUBJECT, NOW, datetime.timedelta(days=400))


def test_crl_pem_is_the_same_as_cryptography_writes(
    ca_material: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, crt = ca_material
    revoked = [(serial, NOW) for serial in (0, 5, 2**200, *range(10**20, 10**20 + 500))]
    crl = crl_profile.make_crl(key, crt, revoked, 7, NOW, NOW + datetime.timedelta(days=1))
    assert x509util.dump_crl(crl) == crl.public_bytes(serialization.Encoding.PEM)
    assert [entry.serial_number for entry in x509util.load_crl(x509util.dump_crl(crl))] == [
        serial for serial, _ in revoked
    ]


def test_prebuilt_entries_give_the_same_crl(
    ca_material: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, crt = ca_material
    pairs = [(serial, NOW) for serial in range(1, 50)]
    entries = [crl_profile.revoked_entry(serial, date) for serial, date in pairs]
    after = NOW + datetime.timedelta(days=1)
    from_pairs = crl_profile.make_crl(key, crt, pairs, 3, NOW, after)
    from_entries = crl_profile.make_crl(key, crt, entries, 3, NOW, after)
    assert from_pairs.tbs_certlist_bytes == from_entries.tbs_certlist_bytes


def test_per_request_queries_use_indexes(tmp_path: Path) -> None:
    db = str(tmp_path / "db.sqlite")
    Storage(db, "cas").close()
    connection = sqlite3.connect(db)
    queries = [
        "SELECT id FROM cascrt WHERE (key_id IN (?, ?) OR key_id IS NULL) "
        "AND CAST(csr AS BLOB) = ?",
        "SELECT COUNT(*) FROM cascrt WHERE crt IS NULL",
        "DELETE FROM cascrt WHERE expiration_date < ?",
        "SELECT crt FROM cascrt WHERE (key_id = ? OR key_id = ?) AND crt IS NOT NULL",
    ]
    for query in queries:
        plan = connection.execute("EXPLAIN QUERY PLAN " + query, (1,) * query.count("?"))
        details = [row[3] for row in plan]
        assert all("INDEX" in detail or "OR" in detail for detail in details), (query, details)
    connection.close()


def test_auto_signed_csr_is_stored_signed_in_one_go(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "db.sqlite"), "cas")
    authority = CertificateAuthority(storage, SUBJECT, 2048, 10, auto_sign_csr_amount=1)
    _, first = make_key_and_csr("first")
    _, second = make_key_and_csr("second")
    first_id = authority.append_csr(first)
    assert authority.get_certificate(first_id).startswith(b"-----BEGIN CERTIFICATE")
    assert authority.append_csr(first) == first_id  # deduplicated, not counted again
    second_id = authority.append_csr(second)
    assert authority.get_csr_list() == [(second_id, second)]  # past the amount: pending
    storage.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_caucased([OUR_BIN / "caucased"], tmp_path_factory.mktemp("perf"))
    yield running
    running.stop()


def _exchange(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send one request, read one reply framed by Content-Length: (head, body)."""
    sock.sendall(request)
    stream = sock.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        assert line, "connection closed before the reply head ended"
        head += line
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, stream.read(length)


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(5)
    return sock.recv(1) == b""


def test_http11_connection_serves_several_requests(server: RunningServer) -> None:
    with socket.create_connection((server.host, server.http_port), timeout=10) as sock:
        for _ in range(3):
            head, body = _exchange(sock, b"GET /cas/crt/ca.crt.pem HTTP/1.1\r\nHost: x\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert body.startswith(b"-----BEGIN CERTIFICATE")
        head, _ = _exchange(sock, b"GET /cas/crl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 ")
        assert _closed_by_server(sock)


def test_http10_and_errors_still_close(server: RunningServer) -> None:
    with socket.create_connection((server.host, server.http_port), timeout=10) as sock:
        head, _ = _exchange(sock, b"GET /cas/crl HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 ")
        assert _closed_by_server(sock)
    with socket.create_connection((server.host, server.http_port), timeout=10) as sock:
        head, _ = _exchange(sock, b"GET /cas/crt/nonsense HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 400 ")
        assert _closed_by_server(sock)


def test_unread_body_closes_the_connection(server: RunningServer) -> None:
    """A body the application did not read would be taken for the next request."""
    with socket.create_connection((server.host, server.http_port), timeout=10) as sock:
        head, _ = _exchange(
            sock,
            b"GET /cas/crt/ca.crt.pem HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /",
        )
        assert head.startswith(b"HTTP/1.0 200 ")
        assert _closed_by_server(sock)


def test_keep_alive_submission_then_fetch(server: RunningServer) -> None:
    _, csr = make_key_and_csr("keep-alive")
    with socket.create_connection((server.host, server.http_port), timeout=10) as sock:
        head, _ = _exchange(
            sock,
            b"PUT /cas/csr HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkcs10\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(csr), csr),
        )
        assert head.startswith(b"HTTP/1.1 201 ")
        location = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"location:")
        )
        head, body = _exchange(sock, b"GET /cas/csr/%s HTTP/1.1\r\nHost: x\r\n\r\n" % location)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == csr


def test_prepared_entries_do_not_change_the_crl(tmp_path: Path) -> None:
    db = str(tmp_path / "db.sqlite")
    authority = CertificateAuthority(Storage(db, "cas"), SUBJECT, 2048, 10)
    for serial in (3, 1, 2):
        authority.revoke_serial(serial)
    authority.prepare_crl_entries()
    crl = x509util.load_crl(authority.get_crl_bundle())
    assert [entry.serial_number for entry in crl] == [3, 1, 2]
    authority.revoke_serial(9)
    crl = x509util.load_crl(authority.get_crl_bundle())
    assert [entry.serial_number for entry in crl] == [3, 1, 2, 9]
    assert crl.signature_hash_algorithm is not None
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)


def test_group_commit_lands_every_writer_and_undoes_only_the_failing_one(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "db.sqlite")
    cas = Storage(db, "cas")
    cau = Storage(db, "cau", enforce_unique_key_id=True)  # same file, same committer
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(25):
                (cas if n % 2 else cau).revoke(worker * 1000 + n, 1, 2**40)
                if n == 10:
                    try:
                        with cas._transaction() as tx:
                            tx.execute(
                                "INSERT INTO casrevoked VALUES (?, 1, 2)", (f"undone-{worker}",)
                            )
                            raise RuntimeError("writer failure")
                    except RuntimeError:
                        pass
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check = sqlite3.connect(db)
    (undone,) = check.execute(
        "SELECT COUNT(*) FROM casrevoked WHERE serial LIKE 'undone-%'"
    ).fetchone()
    (cas_rows,) = check.execute("SELECT COUNT(*) FROM casrevoked").fetchone()
    (cau_rows,) = check.execute("SELECT COUNT(*) FROM caurevoked").fetchone()
    check.close()
    assert (undone, cas_rows, cau_rows) == (0, 12 * 12, 12 * 13)
    assert cas.get_crl_state()[0] == 12 * 12 and cau.get_crl_state()[0] == 12 * 13
    cas.close()
    cau.close()


def test_writes_follow_a_replaced_database_file(tmp_path: Path) -> None:
    """The shared write connection is reopened when the file at the path is new."""
    db = tmp_path / "db.sqlite"
    Storage(str(db), "cas").revoke(1, 1, 2**40)
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    fresh = Storage(str(db), "cas")
    fresh.revoke(2, 1, 2**40)
    assert fresh.get_revoked(1) == [(2, 1)]
    fresh.close()
