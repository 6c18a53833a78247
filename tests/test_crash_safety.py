"""kill -9 at random moments: caucased under load, caucase-updater during a renewal.

Whatever got a success answer before the kill must be there after a restart on the same
files, and a renewed key/certificate pair is never half written."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.crypto import pemfile
from caucase.crypto.keys import key_id
from tests.support.ca_helpers import generate_keys
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    caucased_args,
    free_port_pair,
    key_pem,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)
from tests.support.wait import poll
from tests.test_concurrency import (
    SERVER_ARGS,
    THREADS,
    CRLWatcher,
    Ledger,
    LoadClient,
    ca_certificate,
    crl_serials,
    run_load,
    verifies,
)

SERVER_ROUNDS = 5
UPDATER_ROUNDS = 15
_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(12)


@pytest.fixture
def servers() -> Iterator[list[RunningServer]]:
    """Every caucased a test starts, stopped at the end whatever happened."""
    started: list[RunningServer] = []
    yield started
    for server in started:
        server.stop()


def integrity(db_path: Path) -> str:
    """SQLite's own check of a database file no process has open."""
    connection = sqlite3.connect(db_path)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def database_state(db_path: Path) -> tuple[str, set[bytes]]:
    """integrity_check result and the certificates stored, read while no server runs."""
    connection = sqlite3.connect(db_path)
    try:
        (integrity,) = connection.execute("PRAGMA integrity_check").fetchone()
        rows = connection.execute("SELECT crt FROM cascrt WHERE crt IS NOT NULL").fetchall()
    finally:
        connection.close()
    return integrity, {
        bytes(row[0]) if isinstance(row[0], bytes) else row[0].encode() for row in rows
    }


def check_acknowledged(server: RunningServer, ledger: Ledger) -> None:
    """Every acknowledged CSR, signature and revocation is served by the restarted server."""
    for csr_id, csr in ledger.pending.items():
        status, _, body = request(server, "GET", f"/cas/csr/{csr_id}")
        signed_since = request(server, "GET", f"/cas/crt/{csr_id}")[0] == 200
        assert (status == 200 and body == csr) or signed_since, csr_id
    for csr_id, crt in ledger.signed.items():
        status, _, body = request(server, "GET", f"/cas/crt/{csr_id}")
        assert status == 200 and (body == crt or not crt), csr_id
    served = crl_serials(server, ca_certificate(server))
    assert ledger.revoked <= served <= ledger.revoke_attempted


def check_crl_number(server: RunningServer, watcher: CRLWatcher) -> None:
    """After a restart the CRL number did not go back, and a CRL listing anything else
    than the last one served before the crash carries a greater number."""
    status, _, body = request(server, "GET", "/cas/crl")
    assert status == 200
    crl = x509.load_pem_x509_crl(body)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number >= watcher.last_number
    if {entry.serial_number for entry in crl} != watcher.last_serials:
        assert number > watcher.last_number


@pytest.mark.slow
def test_caucased_killed_under_load_keeps_every_acknowledged_write(
    tmp_path: Path, keys: list[rsa.RSAPrivateKey], servers: list[RunningServer], rng: random.Random
) -> None:
    workdir = tmp_path / "server"
    servers.append(start_caucased([OUR_BIN / "caucased"], workdir, SERVER_ARGS))
    port = servers[0].http_port
    user = make_user(servers[0], tmp_path / "user.pem")
    ledger = Ledger()
    watcher = CRLWatcher(servers[0], ledger)
    for round_number in range(SERVER_ROUNDS):
        server = servers[-1]
        watcher.server = server
        submitted_before = ledger.operations["submit"]
        clients = [
            LoadClient(server, user, keys, ledger, f"round{round_number}") for _ in range(THREADS)
        ]
        stop = threading.Event()
        threads = run_load(clients, stop, time.monotonic() + 60, tolerate_io=True)
        # The CRL is watched until the random moment of the crash.
        watcher.watch(time.monotonic() + rng.uniform(1.0, 4.0))
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        stop.set()
        for thread in threads:
            thread.join(60)
        assert ledger.operations["submit"] > submitted_before, f"round {round_number} idle"

        integrity, stored = database_state(workdir / "caucase.sqlite")
        assert integrity == "ok"
        assert set(ledger.renewed) <= stored
        assert not any(
            line for line in server.stderr().splitlines() if "database is locked" in line
        )

        servers.append(
            start_caucased([OUR_BIN / "caucased"], workdir, SERVER_ARGS, http_port=port)
        )
        check_acknowledged(servers[-1], ledger)
        check_crl_number(servers[-1], watcher)
    assert ledger.server_errors == 0
    assert ledger.failures == []
    assert watcher.violations == []
    issued = ledger.issued()
    ca_crt = ca_certificate(servers[-1])
    assert all(verifies(crt, ca_crt) for crt in issued)
    serials = [crt.serial_number for crt in issued]
    assert len(serials) == len(set(serials))
    print(
        f"\ncaucased crashes survived: {SERVER_ROUNDS}, {ledger.requests} requests, "
        f"5xx: {ledger.server_errors}, acknowledged: {len(ledger.pending)} pending CSRs, "
        f"{len(ledger.signed)} signed, {len(ledger.renewed)} renewed, "
        f"{len(ledger.revoked)} revoked, failures seen: {len(ledger.failures)}"
    )


STARTUP_ROUNDS = 8


@pytest.mark.slow
def test_caucased_killed_during_its_first_start_starts_again(
    tmp_path: Path, servers: list[RunningServer], rng: random.Random
) -> None:
    """Kills while the database, the three CAs and the server key are being created."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    port = free_port_pair()
    args = caucased_args([OUR_BIN / "caucased"], workdir, port)
    for _ in range(STARTUP_ROUNDS):
        with open(workdir / "killed.err", "ab") as err:
            process = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
        time.sleep(rng.uniform(0.05, 0.8))  # the random moment of the crash
        process.kill()
        process.wait()
        if (workdir / "caucase.sqlite").exists():
            assert integrity(workdir / "caucase.sqlite") == "ok"

    servers.append(start_caucased([OUR_BIN / "caucased"], workdir, http_port=port))
    server = servers[-1]
    assert request(server, "GET", "/cas/crt/ca.crt.pem")[0] == 200
    make_user(server, tmp_path / "user.pem")
    status, _, _ = request(server, "GET", "/cau/csr", https=True, cert_file=tmp_path / "user.pem")
    assert status == 200
    assert "Traceback" not in server.stderr()


@dataclass
class PairFiles:
    """The updater's certificate and key files, combined in one file or separate."""

    crt: Path
    key: Path | None

    def read(self) -> tuple[x509.Certificate | None, rsa.RSAPrivateKey]:
        """The certificate (None before bootstrap) and the key, each file fully parsable."""
        crt_data = self.crt.read_bytes() if self.crt.exists() else b""
        key_data = self.key.read_bytes() if self.key else crt_data
        key = serialization.load_pem_private_key(key_data, None)
        assert isinstance(key, rsa.RSAPrivateKey)
        if _CERTIFICATE not in crt_data:
            return None, key
        return x509.load_pem_x509_certificate(crt_data[crt_data.index(_CERTIFICATE) :]), key

    @property
    def pending(self) -> Path | None:
        return Path(str(self.key) + pemfile.PENDING_KEY_SUFFIX) if self.key else None


def _same_key(crt: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    return key_id(crt.public_key()) == key_id(key.public_key())


class PairChecker:
    """Follows the pair across kills: each state is the previous pair or a new valid one."""

    def __init__(self, files: PairFiles, ca_crt: x509.Certificate) -> None:
        self.files = files
        self.ca_crt = ca_crt
        self.previous: tuple[int, str] | None = None
        # The key on disk before the first check: the one a certificate not seen yet (the
        # bootstrap one, when a kill interrupts the renewal right after it) belongs to.
        self.first_key_id = key_id(files.read()[1].public_key())
        self.outcomes: Counter[str] = Counter()

    def check(self) -> None:
        crt, key = self.files.read()
        if crt is None:
            assert self.previous is None
            self.outcomes["before bootstrap"] += 1
            return
        assert verifies(crt, self.ca_crt)
        if not _same_key(crt, key):
            self._check_interrupted(crt, key)
            return
        current = (crt.serial_number, key_id(key.public_key()))
        self.outcomes["old pair" if current == self.previous else "new pair"] += 1
        self.previous = current

    def _check_interrupted(self, crt: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        """Separate files only: new certificate in place, its key complete beside the old
        key, which still belongs to the previous certificate; the next start finishes."""
        pending = self.files.pending
        assert pending is not None and pending.exists(), "key and certificate do not match"
        pending_key = serialization.load_pem_private_key(pending.read_bytes(), None)
        assert isinstance(pending_key, rsa.RSAPrivateKey)
        assert _same_key(crt, pending_key)
        old_key_id = self.previous[1] if self.previous else self.first_key_id
        assert key_id(key.public_key()) == old_key_id
        self.outcomes["interrupted, recoverable"] += 1
        self.previous = (crt.serial_number, key_id(pending_key.public_key()))


def _renewal_done(log: Path) -> bool:
    """The updater has renewed and gone to sleep (for a minute: no write until then)."""
    return log.read_text(errors="replace").count("Next wake-up at") >= 2


def _wait_for_write(
    workdir: Path, log: Path, process: subprocess.Popen[bytes], timeout: float
) -> bool:
    """Spin until a temporary or pending file of the pair appears: a write is under way.
    False when the renewal ended unseen: waiting on would only reach the next one."""
    before = set(os.listdir(workdir))
    deadline = time.monotonic() + timeout
    log_size = 0
    while time.monotonic() < deadline and process.poll() is None:
        if any(
            name.startswith(".svc") or name.endswith(pemfile.PENDING_KEY_SUFFIX)
            for name in set(os.listdir(workdir)) - before
        ):
            return True
        size = log.stat().st_size  # the log is read only when it grew: the spin stays fast
        if size != log_size:
            log_size = size
            if _renewal_done(log):
                return False
    return False


def _wait_for_kill_point(
    strategy: int, workdir: Path, log: Path, process: subprocess.Popen[bytes], rng: random.Random
) -> None:
    """The random moment of the kill: anywhere in the run, inside the renewal, or just
    after the pair's files start being written (the waits are the experiment, not a
    synchronisation)."""
    if strategy == 1:
        _wait_for_output(log, "Renewing", process)
        time.sleep(rng.uniform(0, 0.15))
    elif strategy == 2 and _wait_for_write(workdir, log, process, 30):
        end = time.monotonic() + rng.uniform(0, 0.005)
        while time.monotonic() < end:
            pass
    else:
        time.sleep(rng.uniform(0.2, 2.0))


def _wait_for_output(path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    poll(
        lambda: text in path.read_text(errors="replace"),
        repr(text),
        interval=0.01,
        process=process,
    )


UPDATER = OUR_BIN / "caucase-updater"
# 0.001 day = 86.4 s (errata 4: above 30 s); a 0.0009 day threshold puts every fresh
# certificate inside its renewal window, so each start of the updater renews at once.
UPDATER_SERVER_ARGS = ("--service-auto-approve-count", "1000", "--service-crt-validity", "0.001")


def _client_files(workdir: Path, layout: str) -> tuple[PairFiles, list[str]]:
    """A key and a CSR for bootstrap; the files and the updater's --crt/--key options."""
    workdir.mkdir()
    key, csr = make_key_and_csr("svc")
    (workdir / "svc.csr").write_bytes(csr)
    files = PairFiles(workdir / "svc.crt", workdir / "svc.key" if layout == "separate" else None)
    key_file = files.key or files.crt
    key_file.write_bytes(key_pem(key))
    key_file.chmod(0o600)
    options = ["--crt", "svc.crt", *(["--key", "svc.key"] if files.key else [])]
    return files, options


def _start_updater(
    server: RunningServer, workdir: Path, options: list[str], log: Path
) -> subprocess.Popen[bytes]:
    stores = ["--cas-ca", "cas.crt.pem", "--ca", "cas.crt.pem", "--crl", "cas.crl.pem"]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                str(UPDATER),
                "--ca-url",
                server.http_url,
                *stores,
                *options,
                "--csr",
                "svc.csr",
                "--threshold",
                "0.0009",
                "--key-len",
                "2048",
            ],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["combined", "separate"])
def test_updater_killed_during_renewal_never_leaves_a_mismatched_pair(
    tmp_path: Path, servers: list[RunningServer], layout: str, rng: random.Random
) -> None:
    servers.append(
        start_caucased([OUR_BIN / "caucased"], tmp_path / "server", UPDATER_SERVER_ARGS)
    )
    server = servers[0]
    workdir = tmp_path / "client"
    files, options = _client_files(workdir, layout)
    checker = PairChecker(files, ca_certificate(server))
    for round_number in range(UPDATER_ROUNDS):
        log = workdir / f"updater{round_number}.log"
        process = _start_updater(server, workdir, options, log)
        try:
            _wait_for_kill_point(round_number % 3, workdir, log, process, rng)
            assert process.poll() is None, log.read_text()
        finally:
            process.kill()
            process.wait()
        checker.check()

    log = workdir / "final.log"
    process = _start_updater(server, workdir, options, log)
    try:
        _wait_for_output(log, "Renewing", process)
        poll(lambda: _renewal_done(log), "the renewal")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    checker.check()
    crt, key = files.read()
    assert crt is not None and _same_key(crt, key)
    assert not (files.pending and files.pending.exists())
    assert checker.outcomes["new pair"] >= 2
    leftovers = [path for path in workdir.iterdir() if path.name.startswith(".svc")]
    assert all(
        stat.S_IMODE(path.stat().st_mode) == 0o600
        for path in leftovers
        if b"PRIVATE KEY" in path.read_bytes()
    )
    print(
        f"\nupdater ({layout}): {UPDATER_ROUNDS} kills, writes checked "
        f"{sum(checker.outcomes.values())}: {dict(checker.outcomes)}, "
        f"temporary files left by kills: {len(leftovers)}"
    )


# Kills at exact points: a real process that SIGKILLs itself right after one file is
# replaced, so every step of a renewal write is covered deterministically.
KILL_AFTER_REPLACE = """
import os, signal, sys
from importlib import import_module
module, target = sys.argv[1], os.path.realpath(sys.argv[2])
del sys.argv[1:3]
real_replace = os.replace
def replace(source, destination, *args, **kwargs):
    real_replace(source, destination, *args, **kwargs)
    if os.path.realpath(destination) == target:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
sys.exit(import_module(module).main())
"""


def run_killed_after_replacing(
    module: str, target: Path, args: list[str], workdir: Path
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_REPLACE, module, str(target), *args],
        cwd=workdir,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    return result


def _run_updater_once(server: RunningServer, workdir: Path, options: list[str], log: Path) -> None:
    """A normal updater run through one full iteration (bootstrap or recovery, renewal)."""
    process = _start_updater(server, workdir, options, log)
    try:
        poll(lambda: _renewal_done(log) or process.poll() is not None, "the renewal")
        assert process.poll() is None, log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


@pytest.mark.parametrize("point", ["pending key", "certificate", "key"])
def test_updater_killed_after_each_write_step_recovers(
    tmp_path: Path, servers: list[RunningServer], point: str
) -> None:
    servers.append(
        start_caucased([OUR_BIN / "caucased"], tmp_path / "server", UPDATER_SERVER_ARGS)
    )
    server = servers[0]
    workdir = tmp_path / "client"
    files, options = _client_files(workdir, "separate")
    _run_updater_once(server, workdir, options, workdir / "first.log")
    checker = PairChecker(files, ca_certificate(server))
    checker.check()
    assert files.key is not None and files.pending is not None
    target = {"pending key": files.pending, "certificate": files.crt, "key": files.key}[point]
    stores = ["--cas-ca", "cas.crt.pem", "--ca", "cas.crt.pem", "--crl", "cas.crl.pem"]
    run_killed_after_replacing(
        "caucase.cli.updater",
        target,
        ["--ca-url", server.http_url, *stores, *options, "--threshold", "0.0009"],
        workdir,
    )
    checker.check()

    _run_updater_once(server, workdir, options, workdir / "after.log")
    checker.check()
    assert checker.outcomes["new pair"] >= 2
    assert not files.pending.exists()


def test_caucase_renew_crt_killed_between_key_and_certificate_keeps_a_pair(
    tmp_path: Path, servers: list[RunningServer]
) -> None:
    servers.append(
        start_caucased([OUR_BIN / "caucased"], tmp_path / "server", UPDATER_SERVER_ARGS)
    )
    server = servers[0]
    key, csr = make_key_and_csr("svc")
    status, headers, _ = request(
        server, "PUT", "/cas/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201
    crt = request(server, "GET", "/cas/crt/" + headers["Location"])[2]
    files = PairFiles(tmp_path / "svc.crt", tmp_path / "svc.key")
    assert files.key is not None
    files.crt.write_bytes(crt)
    files.key.write_bytes(key_pem(key))
    files.key.chmod(0o600)

    run_killed_after_replacing(
        "caucase.cli.caucase",
        files.key,
        ["--ca-url", server.http_url, "--threshold", "100", "--renew-crt", "svc.crt", "svc.key"],
        tmp_path,
    )

    on_disk_crt, on_disk_key = files.read()
    assert on_disk_crt is not None and _same_key(on_disk_crt, on_disk_key)
