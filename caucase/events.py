"""Changes of state as events, and the one observer they go to (issue 13).

The CA, ACME and backup layers describe what they changed as audit events
(caucase.audit's vocabulary) and hand them to their `Observer` once the change is stored
and before the request is answered. caucased's observer (`Recorder`) writes them to the
audit log, which returns once they are on disk, and moves the matching metrics; without
one, `NULL_OBSERVER` drops them. Who acted (the peer address, the user certificate) is
not an argument of the CA's methods: the HTTP layer sets it per request (`acting`), and
the event builders here read it, so the CA layer never imports caucase.http.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from caucase.audit import AuditEvent, AuditLog, AuditLogError, event
from caucase.crypto import keys


class Observer(Protocol):
    """Where changes of state go; `notify` returns once they are recorded."""

    def ready(self) -> None:
        """Raise when a change could not be recorded now: called before making one, so
        that a known failure refuses the change instead of leaving it unrecorded."""

    def notify(self, *items: AuditEvent) -> None: ...


class _NullObserver:
    def ready(self) -> None:
        """Nothing records changes: always ready."""

    def notify(self, *items: AuditEvent) -> None:
        """Nothing records changes: nothing to do."""


NULL_OBSERVER: Observer = _NullObserver()


@dataclass(frozen=True)
class Actor:
    """Who asks for the current change: the peer address, and the user certificate
    that authenticated the request, if any."""

    client: str | None = None
    user: x509.Certificate | None = None


_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar(
    "caucase_actor", default=None
)


def _actor() -> Actor:
    return _ACTOR.get() or Actor()


@contextlib.contextmanager
def acting(client: str | None, user: x509.Certificate | None = None) -> Iterator[None]:
    """Changes made in this block are made for `client`, as `user` when given."""
    token = _ACTOR.set(Actor(client, user))
    try:
        yield
    finally:
        _ACTOR.reset(token)


def set_user(user: x509.Certificate) -> None:
    """The request being served authenticated as `user` (after `acting` began)."""
    _ACTOR.set(Actor(_actor().client, user))


def _by() -> dict[str, str | None]:
    user = _actor().user
    if user is None:
        return {"by_serial": None, "by_subject": None}
    return {"by_serial": str(user.serial_number), "by_subject": user.subject.rfc4514_string()}


def _sans(names: x509.CertificateSigningRequest | x509.Certificate) -> list[str]:
    try:
        extension = names.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [f"{type(name).__name__}:{name.value}" for name in extension.value]


def csr_received(
    authority: str, csr_id: int, csr: x509.CertificateSigningRequest, key_spec: keys.KeySpec
) -> AuditEvent:
    """`key_spec`: what the CA found the CSR's key to be when it accepted it."""
    return event(
        "csr-received",
        authority=authority,
        csr_id=str(csr_id),
        subject=csr.subject.rfc4514_string(),
        sans=_sans(csr),
        key_type=str(key_spec),
        client=_actor().client,
    )


def _serial_and_subject(crt: x509.Certificate) -> dict[str, str]:
    return {"serial": str(crt.serial_number), "subject": crt.subject.rfc4514_string()}


# The signing events take the certificate as signed, not its PEM: parsing it again for
# two fields cost as much as sealing the audit line.
def auto_signed(authority: str, csr_id: int, crt: x509.Certificate) -> AuditEvent:
    return event(
        "csr-auto-signed", authority=authority, csr_id=str(csr_id), **_serial_and_subject(crt)
    )


def signed(authority: str, csr_id: int, crt: x509.Certificate, with_template: bool) -> AuditEvent:
    fields = {**_serial_and_subject(crt), **_by()}
    return event(
        "csr-signed",
        authority=authority,
        csr_id=str(csr_id),
        with_template=with_template,
        **fields,
    )


def rejected(authority: str, csr_id: int) -> AuditEvent:
    return event("csr-rejected", authority=authority, csr_id=str(csr_id), **_by())


def renewed(
    authority: str, csr_id: int, crt: x509.Certificate, previous: x509.Certificate
) -> AuditEvent:
    return event(
        "crt-renewed",
        authority=authority,
        csr_id=str(csr_id),
        previous_serial=str(previous.serial_number),
        **_serial_and_subject(crt),
    )


def revoked(authority: str, serial: int, subject: str | None, method: str) -> AuditEvent:
    fields = _by() if method in ("user", "serial") else {"by_serial": None, "by_subject": None}
    return event(
        "crt-revoked",
        authority=authority,
        serial=str(serial),
        subject=subject,
        method=method,
        **fields,
    )


def ca_generated(authority: str, crt: x509.Certificate) -> AuditEvent:
    return event(
        "ca-generated",
        authority=authority,
        serial=str(crt.serial_number),
        subject=crt.subject.rfc4514_string(),
        not_after=crt.not_valid_after_utc.isoformat(),
    )


def acme_issued(authority: str, csr_id: int, crt: x509.Certificate) -> AuditEvent:
    return event(
        "acme-issued", authority=authority, csr_id=str(csr_id), **_serial_and_subject(crt)
    )


def eab_minted(kid: str, patterns: list[str]) -> AuditEvent:
    return event("acme-eab-minted", kid=kid, scope=patterns, **_by())


def eab_revoked(kid: str) -> AuditEvent:
    return event("acme-eab-revoked", kid=kid, **_by())


# Which certificate counter each signing event moves, by how it was approved.
_APPROVALS = {
    "csr-auto-signed": "auto",
    "csr-signed": "user",
    "crt-renewed": "renewal",
    "acme-issued": "acme",
}


class EventCounters(Protocol):
    """The counters events move (caucase.http.metrics.Metrics has them)."""

    def certificate_issued(self, authority: str, approval: str) -> None: ...

    def csr_rejected(self, authority: str) -> None: ...

    def certificate_revoked(self, authority: str) -> None: ...

    def backup_written(self) -> None: ...


class Recorder:
    """caucased's observer: the metrics count every change stored, and the audit log has
    its lines on disk before the answer; either may be absent.

    A change is stored before it is logged, so when the log fails in between, the change
    is made but its events are not on disk (and the request answers 503). They are kept
    and written first by the next write that succeeds (after the log is reopened), so a
    client resending the same request is acknowledged only once they are logged."""

    def __init__(self, audit: AuditLog | None, metrics: EventCounters | None) -> None:
        self.audit = audit
        self.metrics = metrics
        self._lock = threading.Lock()
        self._unrecorded: list[AuditEvent] = []

    def ready(self) -> None:
        if self.audit is None:
            return
        with self._lock:
            owed = bool(self._unrecorded)
        if owed:
            self._write()
        else:
            self.audit.check()

    def reopen(self) -> None:
        """Reopen the audit log (SIGHUP) and write at once what it still owes."""
        if self.audit is not None:
            self.audit.reopen()
            self.ready()

    def unrecorded(self) -> list[AuditEvent]:
        """Events of stored changes the audit log failed to take, not yet written."""
        with self._lock:
            return list(self._unrecorded)

    def notify(self, *items: AuditEvent) -> None:
        if self.metrics is not None:
            for item in items:
                self._count(self.metrics, item)
        if self.audit is not None:
            self._write(*items)

    def _write(self, *items: AuditEvent) -> None:
        """Write what earlier failures left unwritten, then `items`; keep them all when
        this write fails too (a line may then be written twice: never none)."""
        assert self.audit is not None
        with self._lock:
            owed, self._unrecorded = self._unrecorded, []
        try:
            self.audit.write(*owed, *items)
        except AuditLogError:
            with self._lock:
                self._unrecorded[:0] = [*owed, *items]
            raise

    @staticmethod
    def _count(metrics: EventCounters, item: AuditEvent) -> None:
        authority = str(item.fields.get("authority", ""))
        approval = _APPROVALS.get(item.name)
        if approval is not None:
            metrics.certificate_issued(authority, approval)
        elif item.name == "csr-rejected":
            metrics.csr_rejected(authority)
        elif item.name == "crt-revoked":
            metrics.certificate_revoked(authority)
        elif item.name == "backup-written":
            metrics.backup_written()


__all__ = [
    "NULL_OBSERVER",
    "Actor",
    "EventCounters",
    "Observer",
    "Recorder",
    "acting",
    "set_user",
]
