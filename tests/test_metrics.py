"""caucased's metrics: what each event moves, scrape-time readings, the /metrics listener,
and a real Prometheus scraping it."""

from __future__ import annotations

import datetime
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from caucase.http.metrics import (
    TEXT_FORMAT,
    UNMATCHED_ROUTE,
    AuthorityState,
    CACertificateState,
    Metrics,
    ServerState,
    metrics_application,
)
from caucase.http.server import CaucasedServer, start_serving, stop_serving
from tests.conftest import FakeClock
from tests.support.prometheus import promtool_check_metrics, running_prometheus

DAY = datetime.timedelta(days=1)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def busy_state(clock: FakeClock) -> ServerState:
    now = clock()
    cas = AuthorityState(
        pending_csr=3,
        crl_number=7,
        crl_bytes=1200,
        crl_last_update=now - datetime.timedelta(hours=2),
        ca_certificates=[
            CACertificateState("previous", now + 10 * DAY),
            CACertificateState("previous", now + 20 * DAY),
            CACertificateState("signing", now + 300 * DAY),
            CACertificateState("next", now + 600 * DAY),
        ],
    )
    cau = AuthorityState(0, 1, 600, now, [CACertificateState("signing", now + 90 * DAY)])
    return ServerState({"cas": cas, "cau": cau}, 81920, now - datetime.timedelta(minutes=5))


def test_each_event_moves_its_metric() -> None:
    metrics = Metrics()
    issued = "caucase_certificates_issued_total"
    assert sample(metrics, issued, authority="cas", approval="user") == 0
    metrics.request_served("cas", "PUT /csr", 201, 0.004)
    metrics.request_served("", UNMATCHED_ROUTE, 404, 0.0001)
    metrics.certificate_issued("cas", "user")
    metrics.certificate_issued("cau", "auto")
    metrics.certificate_issued("cas", "renewal")
    metrics.csr_rejected("cas")
    metrics.certificate_revoked("cau")
    metrics.backup_written()
    metrics.tls_handshake_failed()
    metrics.connection_opened("https")
    metrics.connection_opened("https")
    metrics.connection_closed("https")
    requests = "caucase_http_requests_total"
    assert sample(metrics, requests, authority="cas", route="PUT /csr", status_class="2xx") == 1
    assert sample(metrics, requests, authority="", route="unmatched", status_class="4xx") == 1
    duration = "caucase_http_request_duration_seconds_bucket"
    assert sample(metrics, duration, authority="cas", route="PUT /csr", le="0.005") == 1
    assert sample(metrics, duration, authority="cas", route="PUT /csr", le="0.0025") == 0
    assert sample(metrics, issued, authority="cas", approval="user") == 1
    assert sample(metrics, issued, authority="cau", approval="auto") == 1
    assert sample(metrics, issued, authority="cas", approval="renewal") == 1
    assert sample(metrics, "caucase_csr_rejected_total", authority="cas") == 1
    assert sample(metrics, "caucase_certificates_revoked_total", authority="cau") == 1
    assert sample(metrics, "caucase_certificates_revoked_total", authority="cas") == 0
    assert sample(metrics, "caucase_backups_written_total") == 1
    assert sample(metrics, "caucase_tls_handshake_failures_total") == 1
    assert sample(metrics, "caucase_open_connections", scheme="https") == 1
    assert sample(metrics, "caucase_open_connections", scheme="http") == 0


def test_each_server_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.backup_written()
    assert sample(second, "caucase_backups_written_total") == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.certificate_issued("cas", "by-magic"),
        lambda m: m.certificate_issued("CN=evil", "auto"),
        lambda m: m.csr_rejected("xyz"),
        lambda m: m.request_served("cas", "GET /", 600, 0.1),
        lambda m: m.connection_opened("gopher"),
    ],
)
def test_labels_outside_their_vocabulary_are_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call(Metrics())  # type: ignore[operator]


def test_state_is_read_at_each_scrape(clock: FakeClock) -> None:
    state = busy_state(clock)
    metrics = Metrics(lambda: state, clock)
    clock.advance(minutes=1)
    assert sample(metrics, "caucase_state_readable") == 1
    assert sample(metrics, "caucase_csr_pending", authority="cas") == 3
    assert sample(metrics, "caucase_crl_number", authority="cas") == 7
    assert sample(metrics, "caucase_crl_size_bytes", authority="cau") == 600
    assert sample(metrics, "caucase_crl_age_seconds", authority="cas") == 2 * 3600 + 60
    expiry = "caucase_ca_certificate_expiry_seconds"
    assert sample(metrics, expiry, authority="cas", role="previous") == 10 * 86400 - 60
    assert sample(metrics, expiry, authority="cas", role="next") == 600 * 86400 - 60
    assert sample(metrics, expiry, authority="cau", role="next") is None
    assert sample(metrics, "caucase_ca_rollover_passive", authority="cas") == 1
    assert sample(metrics, "caucase_ca_rollover_passive", authority="cau") == 0
    assert sample(metrics, "caucase_database_size_bytes") == 81920
    assert sample(metrics, "caucase_backup_age_seconds") == 6 * 60
    clock.advance(minutes=1)
    assert sample(metrics, "caucase_backup_age_seconds") == 7 * 60


def test_no_backup_yet_means_no_backup_age(clock: FakeClock) -> None:
    metrics = Metrics(lambda: ServerState(), clock)
    assert sample(metrics, "caucase_backup_age_seconds") is None
    assert sample(metrics, "caucase_database_size_bytes") == 0


def test_unreadable_state_is_reported_not_raised(clock: FakeClock) -> None:
    def broken() -> ServerState:
        raise OSError("database is gone")

    metrics = Metrics(broken, clock)
    metrics.backup_written()
    text = generate_latest(metrics.registry).decode()
    assert "caucase_state_readable 0.0" in text
    assert "caucase_backups_written_total 1.0" in text
    assert "caucase_csr_pending" not in text


def test_exposition_passes_promtool(clock: FakeClock) -> None:
    metrics = Metrics(lambda: busy_state(clock), clock)
    metrics.request_served("cas", "GET /crt/{id}", 200, 0.002)
    metrics.certificate_issued("cas", "auto")
    metrics.connection_opened("http")
    promtool_check_metrics(generate_latest(metrics.registry))


# The listener


@pytest.fixture
def listener(clock: FakeClock) -> Iterator[tuple[Metrics, CaucasedServer]]:
    metrics = Metrics(lambda: busy_state(clock), clock)
    server = CaucasedServer(("127.0.0.1", 0), socket.AF_INET)
    server.listen()
    start_serving([server], metrics_application(metrics))
    try:
        yield metrics, server
    finally:
        stop_serving([server])


def fetch(server: CaucasedServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_listener_serves_the_metrics(listener: tuple[Metrics, CaucasedServer]) -> None:
    metrics, server = listener
    metrics.certificate_issued("cas", "auto")
    status, headers, body = fetch(server, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"] == TEXT_FORMAT
    assert b'caucase_certificates_issued_total{approval="auto",authority="cas"} 1.0' in body
    promtool_check_metrics(body)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [("GET", "/", 404), ("GET", "/metrics/x", 404), ("GET", "/cas/crt", 404)]
    + [(method, "/metrics", 405) for method in ("POST", "PUT", "DELETE", "HEAD")],
)
def test_listener_serves_nothing_else(
    listener: tuple[Metrics, CaucasedServer], method: str, path: str, expected: int
) -> None:
    status, headers, _ = fetch(listener[1], method, path)
    assert status == expected
    if expected == 405:
        assert headers["Allow"] == "GET"


@pytest.mark.slow
def test_real_prometheus_counts_the_certificates_issued(
    listener: tuple[Metrics, CaucasedServer], tmp_path: Path
) -> None:
    metrics, server = listener
    for _ in range(3):
        metrics.certificate_issued("cas", "auto")
    query = 'sum(caucase_certificates_issued_total{authority="cas"})'
    with running_prometheus(tmp_path, [f"127.0.0.1:{server.server_port}"]) as prometheus:
        prometheus.wait_targets_up()
        prometheus.wait_value(query, 3)
        metrics.certificate_issued("cas", "user")
        metrics.certificate_issued("cas", "renewal")
        prometheus.wait_value(query, 5)
        assert prometheus.value('caucase_ca_rollover_passive{authority="cas"}') == 1
