"""caucased's operability (issue 13): --metrics-netloc, --audit-log and the /health checks.

One `Operations` per caucased holds the audit log and the metrics, and the `Recorder`
observer the CAU, the CAS, ACME and backups report their changes to. The metrics
listener is a plain-HTTP server of its own, never one of the public listeners. SIGHUP
reopens the audit log (after logrotate renamed it) in a thread of its own: the signal may
arrive while the main thread holds the log's lock (writing a backup-written line).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

from caucase.audit import AuditLog
from caucase.backup_schedule import newest_backup
from caucase.ca import CertificateAuthority
from caucase.clock import Clock, from_timestamp
from caucase.events import Recorder
from caucase.exceptions import CaucaseError
from caucase.http import health
from caucase.http.metrics import (
    AuthorityState,
    CACertificateState,
    Metrics,
    ServerState,
    metrics_application,
)
from caucase.http.server import CaucasedServer, start_serving, stop_serving
from caucase.storage import Engine, Storage, is_url

# /health fails below this much free space where the database and backups are.
MIN_FREE_BYTES = 64 << 20
# A backup is overdue this long after it was due (it is retried every few minutes).
BACKUP_GRACE = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


def add_options(parser: argparse._ActionsContainer) -> None:
    add = parser.add_argument
    add(
        "--metrics-netloc",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, a plain-HTTP "
        "listener apart from the public ones (default: no metrics)",
    )
    add(
        "--audit-log",
        metavar="FILE",
        help="append one hash-chained JSON line per change of state to FILE (0600), "
        "on disk before the change is acknowledged; SIGHUP reopens it (default: none)",
    )


def parse_netloc(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) of --metrics-netloc; ValueError says why not."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT")
    return host, int(port)


def check_options(args: argparse.Namespace) -> str | None:
    """Why --metrics-netloc or --audit-log cannot be used, checked before anything starts."""
    if args.metrics_netloc is not None:
        try:
            parse_netloc(args.metrics_netloc)
        except ValueError as error:
            return f"--metrics-netloc {args.metrics_netloc!r}: {error}"
    if args.audit_log is not None:
        parent = os.path.dirname(os.path.abspath(args.audit_log))
        if not os.path.isdir(parent):
            return f"--audit-log {args.audit_log!r}: directory {parent!r} does not exist"
    return None


@dataclass
class Operations:
    """The audit log, the metrics and their listener of one caucased (each optional)."""

    audit: AuditLog | None = None
    metrics: Metrics | None = None
    listener: CaucasedServer | None = None
    recorder: Recorder = field(default_factory=lambda: Recorder(None, None))
    watched: Watched | None = None

    def close(self) -> None:
        if self.listener is not None:
            stop_serving([self.listener])
            self.listener = None
        if self.audit is not None:
            self.audit.close()
            for item in self.recorder.unrecorded():  # the only trace left of these changes
                fields = json.dumps(dict(item.fields), separators=(",", ":"))
                os.write(2, f"Audit log never got: {item.name} {fields}\n".encode())


def open_operations(args: argparse.Namespace, clock: Clock) -> Operations:
    """Bind the metrics listener and open the audit log, as the options ask; StartupError
    text (a CaucaseError) when either cannot be."""
    operations = Operations()
    try:
        if args.metrics_netloc is not None:
            operations.metrics = Metrics(clock=clock)
            operations.listener = _bind(args.metrics_netloc)
        if args.audit_log is not None:
            operations.audit = AuditLog(args.audit_log, clock)
    except BaseException:
        operations.close()
        raise
    operations.recorder = Recorder(operations.audit, operations.metrics)
    if operations.audit is not None:
        _reopen_on_sighup(operations.recorder)
    return operations


def _bind(netloc: str) -> CaucasedServer:
    try:
        host, port = parse_netloc(netloc)
        family, *_, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        server = CaucasedServer((str(sockaddr[0]), port), family)
        server.listen()
    except (OSError, ValueError, UnicodeError) as error:
        raise CaucaseError(f"--metrics-netloc {netloc}: {error}") from None
    return server


def _reopen_on_sighup(recorder: Recorder) -> None:
    def reopen() -> None:
        try:
            recorder.reopen()
        except CaucaseError as error:  # later writes fail: changes are refused, not lost
            os.write(2, f"Audit log not reopened: {error}\n".encode())

    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reopen).start())


def start_metrics(operations: Operations, servers: Sequence[CaucasedServer]) -> None:
    """Serve the metrics and count the public listeners' connections."""
    metrics, listener = operations.metrics, operations.listener
    if metrics is None or listener is None:
        return
    if operations.watched is not None:
        metrics.watch_state(operations.watched.read_state)
    for server in servers:
        server.metrics = metrics
    start_serving([listener], metrics_application(metrics))


@dataclass(frozen=True)
class Watched:
    """What the metrics and health checks read: both authorities, with the certificate
    life that decides which CA certificate signs, the database and the backups."""

    authorities: dict[str, tuple[CertificateAuthority, Storage, float]]
    database: Engine
    backup_directory: str | None
    backup_period_days: float
    clock: Clock
    started: datetime.datetime

    def last_backup(self) -> datetime.datetime | None:
        if self.backup_directory is None:
            return None
        return newest_backup(self.backup_directory)

    def database_bytes(self) -> int:
        location = self.database.location
        if is_url(location):
            return 0
        return sum(
            os.stat(path).st_size for path in (location, location + "-wal") if os.path.exists(path)
        )

    def read_state(self) -> ServerState:
        """The gauges of one scrape; reading the CRL regenerates it when due."""
        now = self.clock()
        states = {}
        for name, (authority, storage, crt_life) in self.authorities.items():
            bundle = authority.get_crl_bundle()
            number, last_update = storage.get_crl_state()
            states[name] = AuthorityState(
                pending_csr=len(authority.get_csr_list()),
                crl_number=number,
                crl_bytes=len(bundle),
                crl_last_update=now if last_update is None else from_timestamp(last_update),
                ca_certificates=ca_roles(authority, crt_life, now),
            )
        return ServerState(states, self.database_bytes(), self.last_backup())

    def health_report(self) -> health.HealthReport:
        checks: dict[str, health.Check] = {
            "database:readable": self._database_check(self.database.ping, "readable"),
            "database:writable": self._database_check(self.database.check_writable, "writable"),
        }
        for name, (authority, _, _) in self.authorities.items():
            checks[f"{name}-ca:validity"] = health.ca_certificates_valid(
                authority.get_ca_certificate_list, self.clock
            )
            checks[f"{name}-crl:regenerable"] = _crl_check(authority)
        if self.backup_directory is not None:
            checks["backup:age"] = health.backup_not_overdue(
                self.last_backup,
                self.backup_period_days * DAY,
                BACKUP_GRACE,
                self.started,
                self.clock,
            )
            checks["backup:directory"] = _directory_check(self.backup_directory)
        location = self.database.location
        if not is_url(location):
            folder = os.path.dirname(os.path.abspath(location))
            checks["disk:free"] = health.free_disk_space(folder, MIN_FREE_BYTES)
        return health.run_checks(checks)

    @staticmethod
    def _database_check(probe: Callable[[], None], what: str) -> health.Check:
        def check() -> health.CheckResult:
            try:
                probe()
            except CaucaseError:
                return health.CheckResult(False, f"database not {what}")
            return health.CheckResult(True, f"database {what}")

        return check


def ca_roles(
    authority: CertificateAuthority, crt_life: float, now: datetime.datetime
) -> list[CACertificateState]:
    """Each CA certificate's role: the signing one (the newest older than one certificate
    life, else the newest), newer ones waiting (passive phase), older ones."""
    certificates = authority.get_ca_certificate_list()
    life = crt_life * DAY
    signing = len(certificates) - 1
    for index in range(len(certificates) - 1, -1, -1):
        if certificates[index].not_valid_before_utc + life < now:
            signing = index
            break
    roles = []
    for index, certificate in enumerate(certificates):
        role = "signing" if index == signing else "next" if index > signing else "previous"
        roles.append(CACertificateState(role, certificate.not_valid_after_utc))
    return roles


def _crl_check(authority: CertificateAuthority) -> health.Check:
    def check() -> health.CheckResult:
        crls = authority.get_crl_dict()
        return health.CheckResult(bool(crls), f"{len(crls)} CRLs available", len(crls))

    return check


def _directory_check(directory: str) -> health.Check:
    def check() -> health.CheckResult:
        if os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK):
            return health.CheckResult(True, "backup directory writable")
        return health.CheckResult(False, "backup directory missing or not writable")

    return check


__all__ = [
    "Operations",
    "Watched",
    "add_options",
    "ca_roles",
    "check_options",
    "open_operations",
    "start_metrics",
]
