"""The health report of GET /health (issue 13): named checks, 200 when all pass, else 503.

The body follows the shape of the IETF draft "Health Check Response Format for HTTP APIs"
(draft-inadarei-api-health-check): a top-level ``status`` of ``pass`` or ``fail``, and under
``checks`` one list per ``component:measurement`` key holding ``status``, ``output`` and,
when there is one, ``observedValue`` with its ``observedUnit``. It is served anonymously, so
an output never carries a secret, a path or an exception's text: a check that raises is a
failure whose output names only the exception's type (the error log has the rest).
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Union

from cryptography import x509

from caucase.clock import Clock

logger = logging.getLogger(__name__)

Observed = Union[int, float, str, None]
DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    output: str
    observed: Observed = None
    unit: str | None = None

    def as_json(self) -> dict[str, object]:
        entry: dict[str, object] = {"status": "pass" if self.ok else "fail", "output": self.output}
        if self.observed is not None:
            entry["observedValue"] = self.observed
            if self.unit is not None:
                entry["observedUnit"] = self.unit
        return entry


Check = Callable[[], CheckResult]


@dataclass(frozen=True)
class HealthReport:
    results: Mapping[str, CheckResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results.values())

    @property
    def status(self) -> int:
        return 200 if self.ok else 503

    def body(self) -> bytes:
        checks = {name: [result.as_json()] for name, result in self.results.items()}
        document = {"status": "pass" if self.ok else "fail", "checks": checks}
        return json.dumps(document, indent=2).encode() + b"\n"


def run_checks(checks: Mapping[str, Check]) -> HealthReport:
    """Every check, in order; one that raises fails without stopping the others."""
    results = {}
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception as error:
            logger.warning("health check %s raised: %r", name, error)
            results[name] = CheckResult(False, f"check raised {type(error).__name__}")
    return HealthReport(results)


def free_disk_space(path: str, minimum_bytes: int) -> Check:
    """Passes while the file system holding `path` has at least `minimum_bytes` free."""

    def check() -> CheckResult:
        free = shutil.disk_usage(path).free
        if free < minimum_bytes:
            return CheckResult(False, f"less than {minimum_bytes} bytes free", free, "bytes")
        return CheckResult(True, "enough free space", free, "bytes")

    return check


def ca_certificates_valid(
    read_certificates: Callable[[], Sequence[x509.Certificate]], clock: Clock
) -> Check:
    """Passes while the authority holds CA certificates and each is within its validity;
    observes the days left to the soonest expiry."""

    def check() -> CheckResult:
        now = clock()
        certificates = read_certificates()
        if not certificates:
            return CheckResult(False, "no CA certificate")
        invalid = [
            crt
            for crt in certificates
            if not crt.not_valid_before_utc <= now <= crt.not_valid_after_utc
        ]
        days_left = min((crt.not_valid_after_utc - now) / DAY for crt in certificates)
        observed = round(days_left, 1)
        if invalid:
            output = f"{len(invalid)} of {len(certificates)} CA certificates outside validity"
            return CheckResult(False, output, observed, "days")
        return CheckResult(True, f"{len(certificates)} CA certificates valid", observed, "days")

    return check


def backup_not_overdue(
    last_backup: Callable[[], datetime.datetime | None],
    period: datetime.timedelta,
    grace: datetime.timedelta,
    started: datetime.datetime,
    clock: Clock,
) -> Check:
    """Passes until the next backup is `grace` late: one period after the last backup, or
    from the server's start while there is none (the first one is due at once)."""

    def check() -> CheckResult:
        now = clock()
        last = last_backup()
        due = started if last is None else last + period
        age = None if last is None else round((now - last).total_seconds())
        if now > due + grace:
            output = "no backup written" if last is None else "backup overdue"
            return CheckResult(False, output, age, "s")
        return CheckResult(True, "backups on time", age, "s")

    return check


__all__ = [
    "Check",
    "CheckResult",
    "HealthReport",
    "backup_not_overdue",
    "ca_certificates_valid",
    "free_disk_space",
    "run_checks",
]
