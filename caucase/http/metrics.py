"""caucased's Prometheus metrics (issue 13): their definitions, the readings taken at each
scrape, and the WSGI application of the separate ``--metrics-netloc`` listener.

Every label comes from a fixed vocabulary: the authority (``cas``, ``cau``, or empty for
the root routes), the route template of the route table, the status class, and a few
enums (how a certificate was approved, which listener, a CA certificate's role). Never a
subject, a serial or anything else a client chooses. The metrics live in a registry of
their own, owned by one ``Metrics`` object, never in prometheus_client's global one.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from caucase.clock import Clock, utcnow

logger = logging.getLogger(__name__)

AUTHORITIES = ("cas", "cau")
# How a certificate came to be signed: auto-approval, a user's signature, renewal by its
# key holder, or an ACME order.
APPROVALS = ("auto", "user", "renewal", "acme")
SCHEMES = ("http", "https")
# What a held CA certificate does: the one signing now, a newer one waiting for its
# turn (the passive phase of a rollover), an older one still trusted until it expires.
CA_ROLES = ("signing", "next", "previous")
UNMATCHED_ROUTE = "unmatched"
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The classic text format, which every Prometheus version reads.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class CACertificateState:
    role: str
    not_after: datetime.datetime


@dataclass(frozen=True)
class AuthorityState:
    """What one authority holds now, read at scrape time."""

    pending_csr: int
    crl_number: int
    crl_bytes: int
    crl_last_update: datetime.datetime
    ca_certificates: Sequence[CACertificateState] = ()


@dataclass(frozen=True)
class ServerState:
    """What the whole server holds now; last_backup is None when none was written."""

    authorities: Mapping[str, AuthorityState] = field(default_factory=dict)
    database_bytes: int = 0
    last_backup: datetime.datetime | None = None


StateReader = Callable[[], ServerState]


def status_class(status: int) -> str:
    if not 100 <= status <= 599:
        raise ValueError(f"not an HTTP status: {status}")
    return f"{status // 100}xx"


def _check(value: str, allowed: Iterable[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} label {value!r}")
    return value


class Metrics:
    """caucased's metrics and the events that move them; `registry` is what /metrics shows."""

    def __init__(self, read_state: StateReader | None = None, clock: Clock = utcnow) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._requests = Counter(
            "caucase_http_requests",
            "HTTP requests answered, by route template and status class.",
            ("authority", "route", "status_class"),
            registry=registry,
        )
        self._duration = Histogram(
            "caucase_http_request_duration_seconds",
            "Time from a request's arrival to its response, by route template.",
            ("authority", "route"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._issued = Counter(
            "caucase_certificates_issued",
            "Certificates signed, by how they were approved.",
            ("authority", "approval"),
            registry=registry,
        )
        self._rejected = Counter(
            "caucase_csr_rejected", "Pending CSRs rejected.", ("authority",), registry=registry
        )
        self._revoked = Counter(
            "caucase_certificates_revoked",
            "Certificates revoked.",
            ("authority",),
            registry=registry,
        )
        self._backups = Counter(
            "caucase_backups_written", "Backups written successfully.", registry=registry
        )
        self._handshake_failures = Counter(
            "caucase_tls_handshake_failures",
            "TLS handshakes that failed or timed out on the HTTPS listener.",
            registry=registry,
        )
        self._connections = Gauge(
            "caucase_open_connections",
            "Client connections open now, by listener.",
            ("scheme",),
            registry=registry,
        )
        # Every child is made once, here or at its first request: labels() costs a lock
        # and a tuple per call, and these are moved by every request and connection.
        self._issued_of = {
            (authority, approval): self._issued.labels(authority, approval)
            for authority in AUTHORITIES
            for approval in APPROVALS
        }
        self._rejected_of = {
            authority: self._rejected.labels(authority) for authority in AUTHORITIES
        }
        self._revoked_of = {
            authority: self._revoked.labels(authority) for authority in AUTHORITIES
        }
        self._connections_of = {scheme: self._connections.labels(scheme) for scheme in SCHEMES}
        # By (authority, route template, status): bounded by the route table and the
        # statuses caucased answers, never by what clients send.
        self._served_of: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._clock = clock
        if read_state is not None:
            self.watch_state(read_state)

    def watch_state(self, read_state: StateReader) -> None:
        """Read the server's state at each scrape from now on (once it can be read)."""
        self.registry.register(StateCollector(read_state, self._clock))

    def request_served(self, authority: str, route: str, status: int, seconds: float) -> None:
        """One answered request; `route` is its template in the route table, or
        UNMATCHED_ROUTE (never the path the client sent)."""
        key = (authority, route, status)
        children = self._served_of.get(key)
        if children is None:
            _check(authority, ("", *AUTHORITIES), "authority")
            children = (
                self._requests.labels(authority, route, status_class(status)),
                self._duration.labels(authority, route),
            )
            self._served_of[key] = children  # a racing thread stores the same children
        children[0].inc()
        children[1].observe(seconds)

    def certificate_issued(self, authority: str, approval: str) -> None:
        _check(authority, AUTHORITIES, "authority")
        self._issued_of[authority, _check(approval, APPROVALS, "approval")].inc()

    def csr_rejected(self, authority: str) -> None:
        self._rejected_of[_check(authority, AUTHORITIES, "authority")].inc()

    def certificate_revoked(self, authority: str) -> None:
        self._revoked_of[_check(authority, AUTHORITIES, "authority")].inc()

    def backup_written(self) -> None:
        self._backups.inc()

    def tls_handshake_failed(self) -> None:
        self._handshake_failures.inc()

    def connection_opened(self, scheme: str) -> None:
        self._connections_of[_check(scheme, SCHEMES, "scheme")].inc()

    def connection_closed(self, scheme: str) -> None:
        self._connections_of[_check(scheme, SCHEMES, "scheme")].dec()


class StateCollector(Collector):
    """Gauges read from the server's state at each scrape (nothing cached between)."""

    def __init__(self, read_state: StateReader, clock: Clock) -> None:
        self._read_state = read_state
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []  # read_state may be slow or failing: never call it at registration

    def collect(self) -> Iterator[Metric]:
        readable = GaugeMetricFamily(
            "caucase_state_readable", "Whether this scrape could read the server's state."
        )
        try:
            state = self._read_state()
        except Exception as error:
            logger.warning("metrics: cannot read the server state: %s", error)
            readable.add_metric([], 0)
            yield readable
            return
        readable.add_metric([], 1)
        yield readable
        now = self._clock()
        yield from _authority_metrics(state.authorities, now)
        yield _gauge(
            "caucase_database_size_bytes", "Size of the database file.", state.database_bytes
        )
        if state.last_backup is not None:
            age = (now - state.last_backup).total_seconds()
            yield _gauge("caucase_backup_age_seconds", "Seconds since the last backup.", age)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _authority_metrics(
    authorities: Mapping[str, AuthorityState], now: datetime.datetime
) -> Iterator[Metric]:
    def family(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, documentation, labels=("authority", *labels))

    pending = family("caucase_csr_pending", "CSRs waiting for a decision.")
    number = family("caucase_crl_number", "CRL number of the newest CRL.")
    size = family("caucase_crl_size_bytes", "Size of the CRL bundle (PEM).")
    age = family("caucase_crl_age_seconds", "Seconds since the newest CRL's thisUpdate.")
    expiry = family(
        "caucase_ca_certificate_expiry_seconds",
        "Seconds until the CA certificate of each role expires (the soonest, if several).",
        ("role",),
    )
    passive = family(
        "caucase_ca_rollover_passive",
        "1 while a newer CA certificate is published but does not sign yet.",
    )
    for name, state in sorted(authorities.items()):
        _check(name, AUTHORITIES, "authority")
        pending.add_metric([name], state.pending_csr)
        number.add_metric([name], state.crl_number)
        size.add_metric([name], state.crl_bytes)
        age.add_metric([name], (now - state.crl_last_update).total_seconds())
        soonest: dict[str, datetime.datetime] = {}
        for certificate in state.ca_certificates:
            role = _check(certificate.role, CA_ROLES, "role")
            soonest[role] = min(soonest.get(role, certificate.not_after), certificate.not_after)
        for role, not_after in sorted(soonest.items()):
            expiry.add_metric([name, role], (not_after - now).total_seconds())
        passive.add_metric([name], 1 if "next" in soonest else 0)
    yield from (pending, number, size, age, expiry, passive)


def metrics_application(metrics: Metrics) -> Callable[..., Iterable[bytes]]:
    """The WSGI application of the metrics listener: GET /metrics, and nothing else."""

    def application(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return _reply(start_response, "404 Not Found", b"Not Found\n")
        if environ.get("REQUEST_METHOD") != "GET":
            return _reply(start_response, "405 Method Not Allowed", b"", [("Allow", "GET")])
        body = generate_latest(metrics.registry)
        return _reply(start_response, "200 OK", body, [("Content-Type", TEXT_FORMAT)])

    return application


def _reply(
    start_response: StartResponse,
    status: str,
    body: bytes,
    headers: Sequence[tuple[str, str]] = (("Content-Type", "text/plain; charset=utf-8"),),
) -> list[bytes]:
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]


__all__ = [
    "APPROVALS",
    "AUTHORITIES",
    "CA_ROLES",
    "SCHEMES",
    "UNMATCHED_ROUTE",
    "AuthorityState",
    "CACertificateState",
    "Metrics",
    "ServerState",
    "StateCollector",
    "metrics_application",
    "status_class",
]
