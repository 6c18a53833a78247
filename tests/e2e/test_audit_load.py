"""The audit log under load: one line per acknowledged change, even across kill -9, and a
chain that verifies across a SIGHUP rotation (issue 13)."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.helpers import CAUCASED, MANAGE
from tests.support.servers import RunningServer, start_caucased
from tests.support.wait import poll

KEY = ec.generate_private_key(ec.SECP256R1())
THREADS = 32
PER_THREAD = 8


def csr_for(name: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(KEY, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def start(workdir: Path) -> RunningServer:
    extra = ["--service-auto-approve-count", "1000000", "--audit-log", str(workdir / "audit.log")]
    return start_caucased(CAUCASED, workdir, extra)


def submit(server: RunningServer, csr: bytes) -> str | None:
    """The CSR id once acknowledged (201), None when the request did not complete."""
    connection = http.client.HTTPConnection(server.host, server.http_port, timeout=30)
    try:
        connection.request("PUT", "/cas/csr", csr, {"Content-Type": "application/pkcs10"})
        response = connection.getresponse()
        response.read()
        return response.getheader("Location") if response.status == 201 else None
    except OSError:
        return None
    finally:
        connection.close()


def received_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "csr-received":
            ids.append(record["csr_id"])
    return ids


def verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MANAGE, "--verify-audit-log", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_32_threads_write_one_line_per_acknowledged_change(tmp_path: Path) -> None:
    server = start(tmp_path)
    acknowledged: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for number in range(PER_THREAD):
            csr_id = submit(server, csr_for(f"load-{index}-{number}"))
            assert csr_id is not None
            with lock:
                acknowledged.append(csr_id)

    try:
        threads = [threading.Thread(target=worker, args=(index,)) for index in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Rotation: rename, SIGHUP, and the chain goes on in the new file.
        log = tmp_path / "audit.log"
        rotated = log.rename(tmp_path / "audit.log.1")
        server.process.send_signal(signal.SIGHUP)
        poll(log.exists, "the audit log to be reopened", process=server.process)
        after = submit(server, csr_for("after-rotation"))
        assert after is not None
    finally:
        assert server.stop() == 0
    assert len(acknowledged) == THREADS * PER_THREAD
    ids = received_ids(rotated)
    assert sorted(ids) == sorted(acknowledged)  # each once, none extra
    assert received_ids(log) == [after]
    first = json.loads(log.read_text().splitlines()[0])
    assert (first["event"], first["reason"]) == ("audit-log-opened", "reopen")
    checked = verify(rotated, log)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_kill_9_under_load_leaves_no_acknowledged_change_unlogged(tmp_path: Path) -> None:
    server = start(tmp_path)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(index: int) -> None:
        number = 0
        while not stop.is_set():
            csr_id = submit(server, csr_for(f"kill-{index}-{number}"))
            number += 1
            if csr_id is not None:
                with lock:
                    acknowledged.append(csr_id)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(16)]
    try:
        for thread in threads:
            thread.start()
        poll(lambda: len(acknowledged) >= 100, "100 acknowledged CSRs", process=server.process)
        server.process.kill()
        server.process.wait()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        server.stop()
    log = tmp_path / "audit.log"
    assert set(acknowledged) <= set(received_ids(log))
    assert verify(log).returncode == 0
    again = start(tmp_path)  # a restart continues the chain of the killed one
    try:
        assert submit(again, csr_for("after-restart")) is not None
    finally:
        assert again.stop() == 0
    checked = verify(log)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_change_the_log_cannot_hold_is_not_acknowledged(tmp_path: Path) -> None:
    """chattr +i stops writes through caucased's open descriptor, root's included. The
    CSR stored when the write failed is logged once the log is reopened, before its resend
    is acknowledged; while the log is known broken, nothing more is stored."""
    server = start(tmp_path)
    log = tmp_path / "audit.log"
    refused = csr_for("refused")  # one CSR, sent three times (ECDSA signatures vary)
    try:
        assert submit(server, csr_for("before")) is not None
        subprocess.run(["chattr", "+i", str(log)], check=True)
        try:
            connection = http.client.HTTPConnection(server.host, server.http_port, timeout=30)
            headers = {"Content-Type": "application/pkcs10"}
            connection.request("PUT", "/cas/csr", refused, headers)
            response = connection.getresponse()
            assert (response.status, response.getheader("Retry-After")) == (503, "5")
            assert response.read() == b"Audit log unavailable, try again later"
            connection.close()
        finally:
            subprocess.run(["chattr", "-i", str(log)], check=True)
        assert submit(server, csr_for("still broken")) is None  # until reopened
        assert submit(server, refused) is None  # its lines are not written yet
        server.process.send_signal(signal.SIGHUP)
        poll(lambda: '"reason":"reopen"' in log.read_text(), "the reopened log")
        assert submit(server, refused) is not None
        assert submit(server, csr_for("reopened")) is not None
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    logged = [(record["event"], record.get("subject")) for record in records]
    for name in ("before", "refused", "reopened"):
        assert logged.count(("csr-received", f"CN={name}")) == 1, logged
        assert logged.count(("csr-auto-signed", f"CN={name}")) == 1, logged
    assert not [subject for _, subject in logged if subject == "CN=still broken"]
    checked = verify(log)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_stop_before_the_reopen_names_the_changes_never_logged(tmp_path: Path) -> None:
    server = start(tmp_path)
    log = tmp_path / "audit.log"
    try:
        assert submit(server, csr_for("before")) is not None  # the CAs exist: all logged
        subprocess.run(["chattr", "+i", str(log)], check=True)
        try:
            assert submit(server, csr_for("unlogged")) is None
        finally:
            subprocess.run(["chattr", "-i", str(log)], check=True)
    finally:
        assert server.stop() == 0
    assert "CN=unlogged" not in log.read_text()
    lines = [line for line in server.stderr().splitlines() if "Audit log never got" in line]
    assert [line.split()[4] for line in lines] == ["csr-received", "csr-auto-signed"], lines
    assert all('"subject":"CN=unlogged"' in line for line in lines), lines
