"""caucased's metrics listener, /health and audit log, end to end (issue 13).

One caucased serves the metric and health tests: it runs with --metrics-netloc,
--audit-log and a backup every few seconds (a user exists before it starts, so that the
backups have a recipient). The audit load tests run servers of their own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import CAUCASED, MANAGE, revoke_serial, submit_csr
from tests.support.prometheus import promtool_check_metrics, running_prometheus
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    free_port,
    make_user,
    request,
    start_caucased,
)
from tests.support.wait import poll

PROBE = str(OUR_BIN / "caucase-probe")
BACKUP_PERIOD = "0.0001"  # days: a backup every 8.64 s
KEY = ec.generate_private_key(ec.SECP256R1())


def csr_for(name: str) -> bytes:
    """A CSR of the module's key; a new name makes a new CSR row."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return builder.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass
class Deployment:
    server: RunningServer
    metrics_port: int
    user: Path
    audit_log: Path
    backups: Path

    def scrape(self) -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=30)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            assert response.status == 200
            return response.read()
        finally:
            connection.close()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        found = {}
        for family in text_string_to_metric_families(self.scrape().decode()):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def value(self, name: str, **labels: str) -> float:
        return self.samples().get((name, tuple(sorted(labels.items()))), 0.0)

    def health(self) -> tuple[int, dict[str, object]]:
        status, _, body = request(self.server, "GET", "/health")
        return status, json.loads(body)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("operability")
    first = start_caucased(CAUCASED, workdir, ["--service-auto-approve-count", "1"])
    try:
        user = make_user(first, workdir / "user.pem")
    finally:
        first.stop()
    backups = workdir / "backups"
    backups.mkdir(mode=0o700)
    metrics_port = free_port()
    audit_log = workdir / "audit.log"
    extra = [
        "--service-auto-approve-count", "1",
        "--metrics-netloc", f"127.0.0.1:{metrics_port}",
        "--audit-log", str(audit_log),
        "--backup-directory", str(backups),
        "--backup-period", BACKUP_PERIOD,
    ]  # fmt: skip
    server = start_caucased(CAUCASED, workdir, extra, http_port=first.http_port)
    try:
        yield Deployment(server, metrics_port, user, audit_log, backups)
    finally:
        assert server.stop() == 0


def sign(deployment: Deployment, csr_id: str) -> int:
    status, _, _ = request(
        deployment.server, "PUT", f"/cas/crt/{csr_id}", b"", https=True, cert_file=deployment.user
    )
    return status


def test_every_metric_moves_when_its_event_happens(deployment: Deployment) -> None:
    d = deployment
    issued = "caucase_certificates_issued_total"
    before = d.samples()
    auto_id = submit_csr(d.server, "cas", csr_for("auto"))  # the one auto-approval
    status, _, crt_pem = request(d.server, "GET", f"/cas/crt/{auto_id}")
    assert status == 200
    pending_id = submit_csr(d.server, "cas", csr_for("pending"))
    assert d.value("caucase_csr_pending", authority="cas") == 1
    assert sign(d, pending_id) == 204
    rejected_id = submit_csr(d.server, "cas", csr_for("rejected"))
    status, _, _ = request(
        d.server, "DELETE", f"/cas/csr/{rejected_id}", https=True, cert_file=d.user
    )
    assert status == 204
    crt = x509.load_pem_x509_certificate(crt_pem)
    assert revoke_serial(d.server, d.user, "cas", crt.serial_number) == 204
    request(d.server, "GET", "/cas/crl")  # regenerated: it holds the new revocation
    after = d.samples()

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved(issued, authority="cas", approval="auto") == 1
    assert moved(issued, authority="cas", approval="user") == 1
    assert moved("caucase_csr_rejected_total", authority="cas") == 1
    assert moved("caucase_certificates_revoked_total", authority="cas") == 1
    assert moved("caucase_crl_number", authority="cas") >= 1
    assert moved("caucase_crl_size_bytes", authority="cas") > 0
    assert after[("caucase_csr_pending", (("authority", "cas"),))] == 0
    assert (
        moved("caucase_http_requests_total", authority="cas", route="/cas/csr", status_class="2xx")
        == 3
    )
    assert (
        moved(
            "caucase_http_request_duration_seconds_count", authority="cas", route="/cas/crt/{id}"
        )
        >= 2
    )
    written = d.value("caucase_backups_written_total")
    poll(lambda: d.value("caucase_backups_written_total") > written, "the next backup", 60)
    assert d.value("caucase_backup_age_seconds") < 60
    assert d.value("caucase_ca_certificate_expiry_seconds", authority="cas", role="signing") > 0
    assert d.value("caucase_database_size_bytes") > 0


def test_connections_and_handshake_failures_are_counted(deployment: Deployment) -> None:
    d = deployment
    failures = d.value("caucase_tls_handshake_failures_total")
    with socket.create_connection(("127.0.0.1", d.server.https_port)) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not a TLS ClientHello
        with contextlib.suppress(ConnectionResetError):
            raw.recv(100)
    poll(
        lambda: d.value("caucase_tls_handshake_failures_total") == failures + 1,
        "the failed handshake to be counted",
    )
    with socket.create_connection(("127.0.0.1", d.server.http_port)):
        poll(
            lambda: d.value("caucase_open_connections", scheme="http") >= 1,
            "the open connection to be counted",
        )


def test_a_real_scrape_passes_promtool(deployment: Deployment) -> None:
    promtool_check_metrics(deployment.scrape())


def test_no_label_carries_what_a_client_sent(deployment: Deployment) -> None:
    request(deployment.server, "GET", "/cas/crt/secret-name-123")
    request(deployment.server, "GET", "/no/such/path")
    text = deployment.scrape().decode()
    assert "secret-name-123" not in text and "/no/such" not in text
    assert 'route="unmatched"' in text


@pytest.mark.slow
def test_real_prometheus_counts_what_caucased_issued(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    query = 'sum(caucase_certificates_issued_total{authority="cas"})'
    issued = sum(
        value
        for (name, labels), value in d.samples().items()
        if name == "caucase_certificates_issued_total" and ("authority", "cas") in labels
    )
    with running_prometheus(tmp_path, [f"127.0.0.1:{d.metrics_port}"]) as prometheus:
        prometheus.wait_targets_up()
        prometheus.wait_value(query, issued)
        for index in range(3):
            assert sign(d, submit_csr(d.server, "cas", csr_for(f"prometheus-{index}"))) == 204
        prometheus.wait_value(query, issued + 3)


def probe_health(server: RunningServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROBE, "--health", server.http_url], capture_output=True, text=True, timeout=60
    )


def failing(report: dict[str, object]) -> list[str]:
    checks = report["checks"]
    assert isinstance(checks, dict)
    return [name for name, (entry,) in checks.items() if entry["status"] != "pass"]


def test_health_fails_while_the_database_file_is_read_only(deployment: Deployment) -> None:
    """chattr +i: root ignores a file's mode, not its immutable flag."""
    d = deployment
    assert d.health()[0] == 200
    assert probe_health(d.server).returncode == 0
    database = str(d.server.workdir / "caucase.sqlite")
    subprocess.run(["chattr", "+i", database], check=True)
    try:
        status, report = d.health()
        assert (status, report["status"], failing(report)) == (503, "fail", ["database:writable"])
        probed = probe_health(d.server)
        assert probed.returncode == 1 and json.loads(probed.stdout)["status"] == "fail"
    finally:
        subprocess.run(["chattr", "-i", database], check=True)
    assert d.health()[0] == 200


def test_health_fails_while_the_backup_directory_is_gone(deployment: Deployment) -> None:
    d = deployment
    moved = d.backups.with_name("backups-away")
    d.backups.rename(moved)
    try:
        status, report = d.health()
        assert status == 503 and "backup:directory" in failing(report)
    finally:
        moved.rename(d.backups)
    assert d.health()[0] == 200


def test_health_over_https_and_linked_from_the_hal_root(deployment: Deployment) -> None:
    status, headers, body = request(deployment.server, "GET", "/health", https=True)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["checks"]["cas-ca:validity"][0]["observedUnit"] == "days"
    _, _, hal = request(deployment.server, "GET", "/")
    assert json.loads(hal)["_links"]["getHealth"]["href"] == "/health"


def audit_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MANAGE, "--verify-audit-log", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_audit_log_names_who_did_what(deployment: Deployment) -> None:
    d = deployment
    csr_id = submit_csr(d.server, "cas", csr_for("audited"))
    if request(d.server, "GET", f"/cas/crt/{csr_id}")[0] == 200:  # run alone: auto-approved
        csr_id = submit_csr(d.server, "cas", csr_for("audited"))
    assert sign(d, csr_id) == 204
    lines = audit_lines(d.audit_log)
    received = [line for line in lines if line.get("csr_id") == csr_id]
    assert [line["event"] for line in received] == ["csr-received", "csr-signed"]
    assert received[0]["client"] == "127.0.0.1" and received[0]["subject"] == "CN=audited"
    assert received[0]["key_type"] == "ECDSA P-256"
    user = x509.load_pem_x509_certificate(d.user.read_bytes())
    assert received[1]["by_serial"] == str(user.serial_number)
    assert received[1]["by_subject"] == user.subject.rfc4514_string()
    assert "backup-written" in {line["event"] for line in lines}
    assert (d.audit_log.stat().st_mode & 0o777) == 0o600
    assert verify(d.audit_log).returncode == 0


def test_acme_credentials_minted_and_revoked_are_audited(deployment: Deployment) -> None:
    d = deployment
    body = json.dumps({"scope": ["audited.example"]}).encode()
    headers = {"Content-Type": "application/json"}
    status, _, minted = request(
        d.server, "PUT", "/cau/acme/eab", body, headers, https=True, cert_file=d.user
    )
    assert status == 201, minted
    kid = json.loads(minted)["kid"]
    status, _, _ = request(
        d.server,
        "PUT",
        "/cau/acme/eab/revoke",
        json.dumps({"kid": kid}).encode(),
        headers,
        https=True,
        cert_file=d.user,
    )
    assert status == 204
    lines = [line for line in audit_lines(d.audit_log) if line.get("kid") == kid]
    assert [line["event"] for line in lines] == ["acme-eab-minted", "acme-eab-revoked"]
    assert lines[0]["scope"] == ["audited.example"]
    user = x509.load_pem_x509_certificate(d.user.read_bytes())
    assert lines[1]["by_serial"] == str(user.serial_number)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--metrics-netloc", "no-port", "--metrics-netloc 'no-port': expected HOST:PORT"),
        ("--metrics-netloc", "127.0.0.1:99999", "expected HOST:PORT"),
        ("--audit-log", "/no/such/dir/audit.log", "directory '/no/such/dir' does not exist"),
    ],
)
def test_bad_operability_options_are_one_line(
    tmp_path: Path, option: str, value: str, expected: str
) -> None:
    result = subprocess.run(
        [*CAUCASED, "--netloc", "127.0.0.1:1", "--db", str(tmp_path / "db"), option, value],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and expected in result.stderr.splitlines()[-1]
    assert list(tmp_path.iterdir()) == []  # nothing created
