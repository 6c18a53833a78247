"""32 parallel clients against one real caucased: submit, sign, renew, revoke, list.

The load generator here is shared with the crash-safety tests: it records every request that
got a success answer, so that what the server promised can be checked afterwards."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.ca_helpers import generate_keys, make_csr
from tests.support.servers import OUR_BIN, RunningServer, make_user, request, start_caucased
from tests.support.wsgi_support import signed_body

THREADS = 32
LOAD_SECONDS = 20.0
JSON = {"Content-Type": "application/json"}
PKCS10 = {"Content-Type": "application/pkcs10"}
SERVER_ARGS = ("--service-max-csr", "1000000", "--key-len", "2048")
T = TypeVar("T")
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\n?", re.S)


class UnexpectedAnswer(Exception):
    """A request answered with a status the operation does not allow."""


@dataclass
class Ledger:
    """What the server acknowledged, filled by every client thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    pending: dict[int, bytes] = field(default_factory=dict)
    signed: dict[int, bytes] = field(default_factory=dict)
    renewed: list[bytes] = field(default_factory=list)
    revoked: set[int] = field(default_factory=set)
    revoke_attempted: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    def issued(self) -> list[x509.Certificate]:
        """Certificates fetched or renewed (a signature acknowledged without a fetch has none)."""
        pems = [*self.signed.values(), *self.renewed]
        return [x509.load_pem_x509_certificate(pem) for pem in pems if pem]


class LoadClient:
    """One client thread's operations; each method records only acknowledged effects."""

    def __init__(
        self,
        server: RunningServer,
        user: Path,
        keys: list[rsa.RSAPrivateKey],
        ledger: Ledger,
        name: str = "load",
    ) -> None:
        """`name` starts every CSR subject: the same CSR text twice would be one CSR."""
        self.server = server
        self.name = name
        self.operation = ""
        self.user = user
        self.keys = keys
        self.ledger = ledger

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        expected: int,
        *,
        https: bool = False,
    ) -> tuple[dict[str, str], bytes]:
        self.operation = operation
        status, reply_headers, reply = request(
            self.server,
            method,
            path,
            body,
            headers,
            https=https,
            cert_file=self.user if https else None,
        )
        with self.ledger.lock:
            self.ledger.statuses[status] += 1
            self.ledger.operations[operation] += 1
        if status != expected:
            raise UnexpectedAnswer(f"{operation}: {status} {reply[:200]!r}")
        return reply_headers, reply

    def submit(self, key: rsa.RSAPrivateKey, common_name: str) -> int:
        csr = make_csr(key, common_name)
        headers, _ = self._call("submit", "PUT", "/cas/csr", csr, PKCS10, 201)
        csr_id = int(headers["Location"])
        with self.ledger.lock:
            self.ledger.pending[csr_id] = csr
        return csr_id

    def sign(self, csr_id: int) -> bytes:
        self._call("sign", "PUT", f"/cas/crt/{csr_id}", b"", {}, 204, https=True)
        with self.ledger.lock:
            self.ledger.signed[csr_id] = b""
        _, crt = self._call("fetch", "GET", f"/cas/crt/{csr_id}", None, {}, 200)
        with self.ledger.lock:
            self.ledger.signed[csr_id] = crt
            self.ledger.pending.pop(csr_id, None)
        return crt

    def renew(
        self, crt: bytes, key: rsa.RSAPrivateKey, new_key: rsa.RSAPrivateKey, tag: str
    ) -> bytes:
        payload = {"crt_pem": crt.decode(), "renew_csr_pem": make_csr(new_key, tag).decode()}
        body = signed_body(key, payload)
        _, new_crt = self._call("renew", "PUT", "/cas/crt/renew", body, JSON, 200)
        with self.ledger.lock:
            self.ledger.renewed.append(new_crt)
        return new_crt

    def revoke_by_key(self, crt: bytes, key: rsa.RSAPrivateKey) -> None:
        serial = x509.load_pem_x509_certificate(crt).serial_number
        body = signed_body(key, {"revoke_crt_pem": crt.decode()})
        self._revoke("revoke-by-key", serial, body, https=False)

    def revoke_by_serial(self, crt: bytes) -> None:
        serial = x509.load_pem_x509_certificate(crt).serial_number
        payload = json.dumps({"revoke_serial": serial})
        body = json.dumps({"payload": payload, "digest": None}).encode()
        self._revoke("revoke-by-serial", serial, body, https=True)

    def _revoke(self, operation: str, serial: int, body: bytes, *, https: bool) -> None:
        with self.ledger.lock:
            self.ledger.revoke_attempted.add(serial)
        self._call(operation, "PUT", "/cas/crt/revoke", body, JSON, 204, https=https)
        with self.ledger.lock:
            self.ledger.revoked.add(serial)

    def read_only(self) -> None:
        self._call("list-csr", "GET", "/cas/csr", None, {}, 200, https=True)
        self._call("get-crl", "GET", "/cas/crl", None, {}, 200)

    def cycle(self, thread: int, number: int) -> None:
        """One full life: submit, sign, renew, revoke (alternating ways), plus reads."""
        key = self.keys[(thread + number) % len(self.keys)]
        new_key = self.keys[(thread + number + 1) % len(self.keys)]
        tag = f"{self.name}-{thread}-{number}"
        crt = self.sign(self.submit(key, tag))
        renewed = self.renew(crt, key, new_key, tag + "-renewal")
        if number % 2:
            self.revoke_by_serial(crt)
        else:
            self.revoke_by_key(renewed, new_key)
        if number % 3 == 0:
            self.submit(key, tag + "-left-pending")
            self.read_only()


def run_load(
    clients: list[LoadClient], stop: threading.Event, deadline: float, *, tolerate_io: bool
) -> list[threading.Thread]:
    """Start one thread per client cycling until `stop` or `deadline`; the threads.

    With `tolerate_io`, a request without an answer (server killed) ends that thread quietly;
    otherwise it ends the thread as a failure."""

    def work(thread: int, client: LoadClient) -> None:
        number = 0
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                client.cycle(thread, number)
            except (OSError, http.client.HTTPException) as error:
                if tolerate_io:
                    return
                client.ledger.failures.append(f"thread {thread} {client.operation}: {error!r}")
                return
            except UnexpectedAnswer as error:
                client.ledger.failures.append(f"thread {thread}: {error}")
                if not tolerate_io:
                    return
            number += 1

    threads = [
        threading.Thread(target=work, args=(index, client), daemon=True)
        for index, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    return threads


class CRLWatcher:
    """Fetches the CRL again and again during the load: each one lists every revocation
    acknowledged before the fetch started, CRL numbers never go back, and two CRLs with
    the same number list the same serials (RFC 5280 5.2.3)."""

    def __init__(self, server: RunningServer, ledger: Ledger) -> None:
        self.server, self.ledger = server, ledger
        self.fetched = 0
        self.violations: list[str] = []
        self.last_number = 0
        self.last_serials: set[int] = set()

    def watch(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with self.ledger.lock:
                acknowledged = set(self.ledger.revoked)
            status, _, body = request(self.server, "GET", "/cas/crl")
            if status != 200:
                self.violations.append(f"GET /cas/crl: {status}")
                continue
            (crl,) = [x509.load_pem_x509_crl(block) for block in _CRL_BLOCK.findall(body)]
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            serials = {entry.serial_number for entry in crl}
            missing = acknowledged - serials
            if missing:
                self.violations.append(f"CRL {number} misses {len(missing)} acknowledged")
            if number < self.last_number:
                self.violations.append(f"CRL number went back from {self.last_number} to {number}")
            elif number == self.last_number and serials != self.last_serials:
                self.violations.append(f"two different CRLs numbered {number}")
            elif number > self.last_number:
                self.last_number, self.last_serials = number, serials
            self.fetched += 1


def crl_serials(server: RunningServer, ca_crt: x509.Certificate) -> set[int]:
    """Serials of the CAS CRL served now, after checking its signature and freshness."""
    status, _, body = request(server, "GET", "/cas/crl")
    assert status == 200
    crls = [x509.load_pem_x509_crl(block) for block in _CRL_BLOCK.findall(body)]
    assert len(crls) == 1
    (crl,) = crls
    assert crl.is_signature_valid(ca_crt.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None and crl.next_update_utc.timestamp() > time.time()
    return {entry.serial_number for entry in crl}


def ca_certificate(server: RunningServer) -> x509.Certificate:
    status, _, body = request(server, "GET", "/cas/crt/ca.crt.pem")
    assert status == 200
    return x509.load_pem_x509_certificate(body)


def verifies(crt: x509.Certificate, ca_crt: x509.Certificate) -> bool:
    try:
        crt.verify_directly_issued_by(ca_crt)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    """Client keys, shared: CAS key ids need not be unique, and CSR names differ."""
    return generate_keys(12)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_caucased([OUR_BIN / "caucased"], tmp_path / "server", SERVER_ARGS)
    yield running
    running.stop()


def _report(title: str, ledger: Ledger) -> None:
    print(
        f"\n{title}: {ledger.requests} requests, 5xx: {ledger.server_errors}, "
        f"statuses {dict(ledger.statuses)}, "
        f"operations {dict(ledger.operations)}"
    )


@pytest.mark.slow
def test_parallel_clients_lose_nothing_and_duplicate_nothing(
    server: RunningServer, tmp_path: Path, keys: list[rsa.RSAPrivateKey]
) -> None:
    user = make_user(server, tmp_path / "user.pem")
    ledger = Ledger()
    clients = [LoadClient(server, user, keys, ledger) for _ in range(THREADS)]
    stop = threading.Event()
    deadline = time.monotonic() + LOAD_SECONDS
    threads = run_load(clients, stop, deadline, tolerate_io=False)
    watcher = CRLWatcher(server, ledger)
    watcher.watch(deadline)
    for thread in threads:
        thread.join(LOAD_SECONDS + 60)
    assert not any(thread.is_alive() for thread in threads)
    _report("concurrency", ledger)
    print(f"CRLs fetched and checked during the load: {watcher.fetched}")

    assert watcher.fetched > 10
    assert watcher.violations == []

    assert ledger.failures == []
    assert ledger.server_errors == 0
    assert ledger.operations["submit"] >= THREADS * 2
    stderr = server.stderr()
    assert "database is locked" not in stderr and "Traceback" not in stderr

    issued = ledger.issued()
    serials = [crt.serial_number for crt in issued]
    assert len(serials) == len(set(serials))
    ca_crt = ca_certificate(server)
    assert all(verifies(crt, ca_crt) for crt in issued)
    assert crl_serials(server, ca_crt) == ledger.revoked

    for csr_id, crt_pem in ledger.signed.items():
        assert request(server, "GET", f"/cas/crt/{csr_id}")[2] == crt_pem
    status, _, listing = request(server, "GET", "/cas/csr", https=True, cert_file=user)
    assert status == 200
    listed = {int(item["id"]): item["csr"].encode() for item in json.loads(listing)}
    assert listed == ledger.pending
    assert len(set(ledger.pending) | set(ledger.signed)) == ledger.operations["submit"]


def _listen_backlog(port: int) -> int:
    """The accept-queue size of the socket listening on `port` (Send-Q column of ss)."""
    output = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(output.split()[2])


def test_listen_backlog_absorbs_the_load(server: RunningServer) -> None:
    """With socketserver's default of 5, bursts of 32 clients had connections reset."""
    assert _listen_backlog(server.http_port) >= THREADS
    assert _listen_backlog(server.https_port) >= THREADS


# Races: many clients doing the same thing at the same instant.


def race(count: int, action: Callable[[int], T]) -> list[T]:
    """Run action(0..count-1) in as many threads released together; the results in order."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = action(index)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return [result for result in results if result is not None]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start caucased with extra arguments; stopped at the end of the test."""
    started: list[RunningServer] = []

    def start_server(*args: str) -> RunningServer:
        started.append(
            start_caucased([OUR_BIN / "caucased"], tmp_path / f"server{len(started)}", args)
        )
        return started[-1]

    yield start_server
    for running in started:
        running.stop()


def answer(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    user: Path | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A request, over HTTPS with the `user` credential when one is given."""
    return request(server, method, path, body, headers, https=user is not None, cert_file=user)


def submit_status(server: RunningServer, authority: str, csr: bytes) -> tuple[int, str]:
    status, headers, _ = answer(server, "PUT", f"/{authority}/csr", csr, PKCS10)
    return status, headers.get("Location", "")


@pytest.fixture(scope="module")
def user_keys() -> list[rsa.RSAPrivateKey]:
    """One key per racing user: CAU key ids are unique."""
    return generate_keys(THREADS)


def test_auto_approve_counts_are_exact_under_a_race(
    start: Callable[..., RunningServer],
    keys: list[rsa.RSAPrivateKey],
    user_keys: list[rsa.RSAPrivateKey],
) -> None:
    server = start("--user-auto-approve-count", "5", "--service-auto-approve-count", "7")
    for authority, amount in (("cau", 5), ("cas", 7)):

        def submit(index: int, authority: str = authority) -> tuple[int, str]:
            key = user_keys[index] if authority == "cau" else keys[index % len(keys)]
            return submit_status(server, authority, make_csr(key, f"{authority} racer {index}"))

        answers = race(THREADS, submit)
        assert [status for status, _ in answers] == [201] * THREADS
        ids = {location for _, location in answers}
        assert len(ids) == THREADS
        signed = [i for i in ids if answer(server, "GET", f"/{authority}/crt/{i}")[0] == 200]
        assert len(signed) == amount, authority


def test_pending_limit_is_exact_under_a_race(
    start: Callable[..., RunningServer], keys: list[rsa.RSAPrivateKey]
) -> None:
    server = start("--service-max-csr", "10")
    answers = race(
        THREADS, lambda index: submit_status(server, "cas", make_csr(keys[0], f"racer {index}"))
    )
    assert Counter(status for status, _ in answers) == {201: 10, 507: THREADS - 10}


def test_same_csr_raced_gets_one_id(
    server: RunningServer, keys: list[rsa.RSAPrivateKey], tmp_path: Path
) -> None:
    csr = make_csr(keys[0], "everyone sends me")
    answers = race(THREADS, lambda _: submit_status(server, "cas", csr))
    assert {status for status, _ in answers} == {201}
    assert len({location for _, location in answers}) == 1
    user = make_user(server, tmp_path / "user.pem")
    listing = json.loads(request(server, "GET", "/cas/csr", https=True, cert_file=user)[2])
    assert [item["csr"].encode() for item in listing] == [csr]


def test_only_one_of_identical_raced_requests_wins(
    server: RunningServer, keys: list[rsa.RSAPrivateKey], tmp_path: Path
) -> None:
    user = make_user(server, tmp_path / "user.pem")
    _, location = submit_status(server, "cas", make_csr(keys[0], "raced"))

    def sign(_: int) -> int:
        return answer(server, "PUT", f"/cas/crt/{location}", b"", user=user)[0]

    assert Counter(race(THREADS, sign)) == {204: 1, 404: THREADS - 1}
    crt = request(server, "GET", f"/cas/crt/{location}")[2]

    renewal = {"crt_pem": crt.decode(), "renew_csr_pem": make_csr(keys[1], "new").decode()}
    renew_body = signed_body(keys[0], renewal)
    renewals = race(
        THREADS, lambda _: answer(server, "PUT", "/cas/crt/renew", renew_body, JSON)[0]
    )
    assert renewals.count(200) == 1 and not [status for status in renewals if status >= 500]

    revoke_body = signed_body(keys[0], {"revoke_crt_pem": crt.decode()})
    revocations = race(
        THREADS, lambda _: answer(server, "PUT", "/cas/crt/revoke", revoke_body, JSON)[0]
    )
    assert Counter(revocations) == {204: 1, 400: THREADS - 1}

    serial_body = json.dumps(
        {"payload": json.dumps({"revoke_serial": 12345}), "digest": None}
    ).encode()

    def revoke_serial(_: int) -> int:
        return answer(server, "PUT", "/cas/crt/revoke", serial_body, JSON, user)[0]

    assert Counter(race(THREADS, revoke_serial)) == {204: 1, 409: THREADS - 1}
    ca_crt = ca_certificate(server)
    assert crl_serials(server, ca_crt) == {
        12345,
        x509.load_pem_x509_certificate(crt).serial_number,
    }
