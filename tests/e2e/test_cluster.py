"""Three caucased on one PostgreSQL database behind nginx (a TCP load balancer): one CA.

The reference client's lifecycle through the balancer; 32 parallel clients spread over the
nodes (no duplicate serial, no lost CSR, exact CRLs, no 5xx); a CA rollover raced by every
node under a faked clock (one new CA); kill -9 of a node under load (what was acknowledged
stays, the others keep serving); a PostgreSQL restart under load (503 with Retry-After during
the outage only, nothing acknowledged lost)."""

from __future__ import annotations

import datetime
import email.utils
import http.client
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.storage import Storage
from caucase.storage.postgresql import PostgresDatabase
from tests.e2e.helpers import certificate_of
from tests.support.ca_helpers import generate_keys
from tests.support.cluster import Cluster, start_cluster
from tests.support.faketime import FakeTime, Role
from tests.support.postgres import PostgresServer, running_server
from tests.support.servers import RunningServer, make_key_and_csr, make_user, request
from tests.support.wait import poll
from tests.test_concurrency import (
    SERVER_ARGS,
    THREADS,
    Ledger,
    LoadClient,
    UnexpectedAnswer,
    ca_certificate,
    crl_serials,
    verifies,
)
from tests.test_crash_safety import check_acknowledged

pytestmark = pytest.mark.slow
LOAD_SECONDS = 12.0


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(12)


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, postgres_url, extra_args=SERVER_ARGS)
    yield running
    running.stop()


@dataclass
class Outcomes:
    """What the load saw besides the ledger: answers without a connection, 503s and when."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    unanswered: int = 0
    unavailable: list[float] = field(default_factory=list)
    without_retry_after: int = 0
    succeeded_at: list[float] = field(default_factory=list)


class ClusterClient(LoadClient):
    """A load client that goes on after a request without an answer (its node was killed)
    or a 503 (the database is away): neither acknowledged anything."""

    def __init__(self, *args: object, outcomes: Outcomes, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.outcomes = outcomes

    def _call(  # type: ignore[override]
        self, operation: str, method: str, path: str, body: bytes | None,
        headers: dict[str, str], expected: int, *, https: bool = False,
    ) -> tuple[dict[str, str], bytes]:  # fmt: skip
        status, reply_headers, reply = request(
            self.server, method, path, body, headers, https=https,
            cert_file=self.user if https else None,
        )  # fmt: skip
        with self.ledger.lock:
            self.ledger.statuses[status] += 1
            self.ledger.operations[operation] += 1
        if status == 503:
            with self.outcomes.lock:
                self.outcomes.unavailable.append(time.monotonic())
                if "Retry-After" not in reply_headers:
                    self.outcomes.without_retry_after += 1
            raise UnexpectedAnswer(f"{operation}: 503")
        if status != expected:
            self.ledger.failures.append(f"{operation}: {status} {reply[:200]!r}")
            raise UnexpectedAnswer(f"{operation}: {status}")
        with self.outcomes.lock:
            self.outcomes.succeeded_at.append(time.monotonic())
        return reply_headers, reply


def load(
    cluster: Cluster, user: Path, keys: list[rsa.RSAPrivateKey], ledger: Ledger, name: str
) -> tuple[Outcomes, threading.Event, list[threading.Thread]]:
    """THREADS clients cycling through the balancer until the event is set."""
    outcomes = Outcomes()
    stop = threading.Event()

    def work(index: int) -> None:
        client = ClusterClient(cluster.balancer, user, keys, ledger, name, outcomes=outcomes)
        number = 0
        while not stop.is_set():
            try:
                client.cycle(index, number)
            except (OSError, http.client.HTTPException):
                with outcomes.lock:
                    outcomes.unanswered += 1
            except UnexpectedAnswer:
                pass
            number += 1

    threads = [
        threading.Thread(target=work, args=(index,), daemon=True) for index in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    return outcomes, stop, threads


def finish(stop: threading.Event, threads: list[threading.Thread]) -> None:
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)


def check_consistent(cluster: Cluster, ledger: Ledger, *, exact: bool = True) -> None:
    """Every acknowledged write is there through the balancer; every node serves the same
    CRL, listing the acknowledged revocations (exactly, unless some request died between
    its commit and its answer); no serial was issued twice."""
    check_acknowledged(cluster.balancer, ledger)
    live = [node for node in cluster.nodes if node.process.poll() is None]
    ca_crt = ca_certificate(cluster.balancer)
    crls = {request(node, "GET", "/cas/crl")[2] for node in live}
    assert len(crls) == 1
    served = crl_serials(live[0], ca_crt)
    if exact:
        assert served == ledger.revoked
    assert ledger.revoked <= served <= ledger.revoke_attempted
    issued = ledger.issued()
    assert all(verifies(crt, ca_crt) for crt in issued)
    serials = [crt.serial_number for crt in issued]
    assert len(serials) == len(set(serials))


def node_date(node: RunningServer) -> datetime.datetime:
    _, headers, _ = request(node, "HEAD", "/")
    return email.utils.parsedate_to_datetime(headers["Date"])


def served_requests(node: RunningServer) -> int:
    return len(node.stdout_path.read_text().splitlines())


@pytest.mark.interop
def test_the_reference_client_lifecycle_through_the_balancer(
    cluster: Cluster, reference_bin: Path, tmp_path: Path
) -> None:
    user = make_user(cluster.balancer, tmp_path / "user.pem")
    client = [str(reference_bin / "caucase"), "--ca-url", cluster.balancer.http_url]
    stores = ["--ca-crt", str(tmp_path / "cas.crt.pem"), "--crl", str(tmp_path / "cas.crl")]
    stores += ["--user-ca-crt", str(tmp_path / "cau.crt.pem")]
    stores += ["--user-crl", str(tmp_path / "cau.crl")]

    def run(*args: str) -> str:
        result = subprocess.run(
            [*client, *stores, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    _, csr = make_key_and_csr("through the balancer")
    (tmp_path / "svc.csr.pem").write_bytes(csr)
    csr_id = run("--send-csr", str(tmp_path / "svc.csr.pem")).split()[0]
    assert csr_id in run("--user-key", str(user), "--list-csr")
    run("--user-key", str(user), "--sign-csr", csr_id)
    run("--get-crt", csr_id, str(tmp_path / "svc.crt.pem"))
    crt = certificate_of(tmp_path / "svc.crt.pem")
    assert crt.issuer == certificate_of(tmp_path / "cas.crt.pem").subject
    run("--user-key", str(user), "--revoke-serial", str(crt.serial_number))
    run()  # refreshes the CA and CRL stores
    crl = x509.load_pem_x509_crl((tmp_path / "cas.crl").read_bytes())
    assert [entry.serial_number for entry in crl] == [crt.serial_number]
    assert all(served_requests(node) > 0 for node in cluster.nodes)


def test_parallel_clients_spread_over_the_nodes_act_as_one_ca(
    cluster: Cluster, keys: list[rsa.RSAPrivateKey], tmp_path: Path
) -> None:
    user = make_user(cluster.balancer, tmp_path / "user.pem")
    before = [served_requests(node) for node in cluster.nodes]
    ledger = Ledger()
    outcomes, stop, threads = load(cluster, user, keys, ledger, "spread")
    stop.wait(LOAD_SECONDS)  # the sustained period of the load, not a synchronisation
    finish(stop, threads)
    print(f"\ncluster load: {ledger.requests} requests, {dict(ledger.operations)}")
    assert ledger.server_errors == 0 and ledger.failures == [] and outcomes.unanswered == 0
    assert ledger.operations["submit"] > 50
    check_consistent(cluster, ledger)
    served = [served_requests(node) - count for node, count in zip(cluster.nodes, before)]
    assert min(served) > ledger.requests / (2 * len(served)), served


def test_a_rollover_raced_by_every_node_makes_one_ca(postgres_url: str, tmp_path: Path) -> None:
    clock = FakeTime(tmp_path / "clock")
    running = start_cluster(tmp_path, postgres_url, env=clock.env(Role.SERVER))
    try:
        later = clock.advance(days=93 * 2 + 1)  # the newest CAs have two lives left
        for node in running.nodes:  # each node's clock shows in its Date header
            poll(lambda node=node: node_date(node) >= later.replace(microsecond=0), "the jump")
        barrier = threading.Barrier(len(running.nodes) * 4)
        statuses: list[int] = []

        def ask(node: RunningServer, authority: str) -> None:
            barrier.wait()
            statuses.append(request(node, "GET", f"/{authority}/crt/ca.crt.json")[0])

        askers = [
            threading.Thread(target=ask, args=(node, authority))
            for node in running.nodes
            for authority in ("cas", "cau", "cas", "cau")
        ]
        for thread in askers:
            thread.start()
        for thread in askers:
            thread.join(60)
        assert statuses == [200] * len(askers)
        with PostgresDatabase(postgres_url) as database:
            for prefix in ("cas", "cau"):
                assert len(Storage(database, prefix).get_ca_key_pairs(0)) == 2, prefix
        for authority in ("cas", "cau"):
            # The chain's signatures may differ from node to node (PSS): its content not.
            served = {
                tuple(item["payload"] for item in json.loads(body))
                for _, _, body in (
                    request(node, "GET", f"/{authority}/crt/ca.crt.json") for node in running.nodes
                )
            }
            assert len(served) == 1 and len(served.pop()) == 1, authority
    finally:
        running.stop()


def test_a_node_killed_under_load_loses_nothing_acknowledged(
    cluster: Cluster, keys: list[rsa.RSAPrivateKey], tmp_path: Path
) -> None:
    user = make_user(cluster.balancer, tmp_path / "user.pem")
    ledger = Ledger()
    outcomes, stop, threads = load(cluster, user, keys, ledger, "kill")
    try:
        poll(lambda: ledger.operations["revoke-by-key"] >= 10, "some load", 60)
        victim = cluster.nodes[1]
        assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.monotonic()
        poll(
            lambda: sum(at > killed_at + 1 for at in outcomes.succeeded_at) > 200,
            "the load to go on without the killed node",
            60,
        )
    finally:
        finish(stop, threads)
    print(f"\nkill -9: {ledger.requests} requests, {outcomes.unanswered} unanswered")
    assert ledger.server_errors == 0 and ledger.failures == []
    check_consistent(cluster, ledger, exact=False)
    for node in (cluster.nodes[0], cluster.nodes[2]):
        assert request(node, "GET", "/cas/crt/ca.crt.pem")[0] == 200


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with running_server() as server:
        yield server


def test_a_postgresql_restart_under_load_is_an_outage_of_503s_only(
    own_postgres: PostgresServer, keys: list[rsa.RSAPrivateKey], tmp_path: Path
) -> None:
    running = start_cluster(tmp_path, own_postgres.new_database(), extra_args=SERVER_ARGS)
    try:
        user = make_user(running.balancer, tmp_path / "user.pem")
        ledger = Ledger()
        outcomes, stop, threads = load(running, user, keys, ledger, "restart")
        try:
            poll(lambda: ledger.operations["revoke-by-key"] >= 10, "some load", 60)
            stopping = time.monotonic()
            own_postgres.stop()
            poll(lambda: len(outcomes.unavailable) >= 20, "503s while the database is away")
            own_postgres.start()
            started = time.monotonic()
            poll(
                lambda: sum(at > started for at in outcomes.succeeded_at) > 200,
                "the nodes to recover by themselves",
                60,
            )
        finally:
            finish(stop, threads)
        recovered = min(at for at in outcomes.succeeded_at if at > started)
        print(f"\nrestart: {len(outcomes.unavailable)} 503s, {ledger.requests} requests")
        assert outcomes.without_retry_after == 0
        assert all(stopping <= at <= recovered for at in outcomes.unavailable)
        assert set(ledger.statuses) <= {200, 201, 204, 503}
        assert ledger.failures == [] and outcomes.unanswered == 0
        assert all(node.process.poll() is None for node in running.nodes)
        check_consistent(running, ledger, exact=False)
    finally:
        running.stop()


def test_one_node_makes_each_periodic_backup(postgres_url: str, tmp_path: Path) -> None:
    """Every node has a backup directory; the nodes take turns through the database."""
    period = 0.00005  # days: 4.32 s
    args = ["--backup-directory", "backups", "--backup-period", str(period)]
    for index in range(3):
        (tmp_path / f"node{index}" / "backups").mkdir(parents=True)
    running = start_cluster(tmp_path, postgres_url, extra_args=args)
    try:
        make_user(running.balancer, tmp_path / "user.pem")

        def backups() -> list[Path]:
            return sorted(tmp_path.glob("node*/backups/*.sql.caucased"))

        found = poll(lambda: len(backups()) >= 3 and backups(), "three backups", 60)
    finally:
        running.stop()
    moments = sorted(datetime.datetime.strptime(path.name[:14], "%Y%m%d%H%M%S") for path in found)
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(moments, moments[1:])]
    assert min(gaps) >= int(period * 86400), gaps
