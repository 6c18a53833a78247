"""The health report: checks, their JSON rendering, and the status they add up to."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from caucase.crypto import keys, x509util
from caucase.http.health import (
    CheckResult,
    backup_not_overdue,
    ca_certificates_valid,
    free_disk_space,
    run_checks,
)
from tests.conftest import FakeClock
from tests.support.ca_helpers import CA_SUBJECT

DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def ca_key() -> keys.PrivateKey:
    return keys.generate()


def ca_certificate(
    key: keys.PrivateKey, start: datetime.datetime, days: float
) -> x509.Certificate:
    return x509util.make_ca_certificate(key, CA_SUBJECT, start, days * DAY)


def test_all_passing_is_200_with_one_entry_per_check() -> None:
    report = run_checks(
        {
            "database:transaction": lambda: CheckResult(True, "read and written"),
            "disk:free": lambda: CheckResult(True, "enough free space", 1 << 30, "bytes"),
        }
    )
    assert report.ok and report.status == 200
    assert json.loads(report.body()) == {
        "status": "pass",
        "checks": {
            "database:transaction": [{"status": "pass", "output": "read and written"}],
            "disk:free": [
                {
                    "status": "pass",
                    "output": "enough free space",
                    "observedValue": 1 << 30,
                    "observedUnit": "bytes",
                }
            ],
        },
    }


def test_one_failing_check_is_503_and_the_others_still_run() -> None:
    ran = []

    def passing() -> CheckResult:
        ran.append("after")
        return CheckResult(True, "fine")

    report = run_checks({"first": lambda: CheckResult(False, "broken"), "after": passing})
    assert not report.ok and report.status == 503 and ran == ["after"]
    body = json.loads(report.body())
    assert body["status"] == "fail"
    assert body["checks"]["first"] == [{"status": "fail", "output": "broken"}]


def test_a_raising_check_fails_without_telling_why() -> None:
    def secret_path() -> CheckResult:
        raise OSError("unable to open /secret/place/caucase.sqlite")

    report = run_checks({"database:transaction": secret_path})
    assert report.status == 503
    assert b"secret" not in report.body()
    entry = json.loads(report.body())["checks"]["database:transaction"][0]
    assert entry == {"status": "fail", "output": "check raised OSError"}


def test_free_disk_space_compares_with_the_real_file_system(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    assert free_disk_space(str(tmp_path), 1)().ok
    tight = free_disk_space(str(tmp_path), free * 2)()
    assert not tight.ok and tight.unit == "bytes"
    assert isinstance(tight.observed, int) and tight.observed > 0
    assert not run_checks({"disk": free_disk_space(str(tmp_path / "gone"), 1)}).ok


def test_ca_certificates_valid_observes_the_soonest_expiry(
    ca_key: keys.PrivateKey, clock: FakeClock
) -> None:
    now = clock()
    held = [ca_certificate(ca_key, now - 100 * DAY, 130), ca_certificate(ca_key, now, 400)]
    result = ca_certificates_valid(lambda: held, clock)()
    assert result.ok and result.output == "2 CA certificates valid"
    assert result.unit == "days" and result.observed == pytest.approx(30, abs=0.1)
    clock.advance(days=31)
    expired = ca_certificates_valid(lambda: held, clock)()
    assert not expired.ok and expired.output == "1 of 2 CA certificates outside validity"
    assert not ca_certificates_valid(lambda: [], clock)().ok


def test_backup_is_overdue_once_its_grace_is_past(clock: FakeClock) -> None:
    started = clock()
    last: list[datetime.datetime] = []

    def check() -> CheckResult:
        return backup_not_overdue(
            lambda: last[-1] if last else None, DAY, datetime.timedelta(hours=1), started, clock
        )()

    assert check().ok
    clock.advance(minutes=61)
    assert check() == CheckResult(False, "no backup written", None, "s")
    last.append(clock())
    clock.advance(hours=24, minutes=59)
    assert check().ok
    clock.advance(minutes=2)
    overdue = check()
    assert not overdue.ok and overdue.output == "backup overdue"
    assert overdue.observed == 25 * 3600 + 60
