"""The parts of caucase-updater that need no server: the backoff law, the renewal plan, the
status file and its reading, systemd's notification socket, the failure lines."""

from __future__ import annotations

import datetime
import io
import json
import os
import random
import socket
from pathlib import Path

import pytest
from cryptography import x509

from caucase.cli import backoff, updater, updater_status
from caucase.cli.backoff import Backoff
from caucase.cli.renewal_plan import RenewalPlanner
from caucase.cli.sd_notify import SystemdNotifier
from caucase.cli.updater_failures import CertificateLost, RequestFailed, failure_line
from caucase.cli.updater_status import Failure, UpdaterStatus
from caucase.exceptions import CaucaseNetworkError
from caucase.renewal import RenewalWindow
from tests.support import ca_helpers

T0 = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def certificate() -> x509.Certificate:
    (key,) = ca_helpers.generate_keys(1)
    return ca_helpers.self_signed(key, "svc", now=T0, days=90)


def test_backoff_delays_follow_the_law(rng: random.Random) -> None:
    law = Backoff(rng)
    for attempt in range(1, 60):
        delay = law.next_delay()
        ceiling = min(backoff.CAP, backoff.BASE * 2 ** min(attempt - 1, 40))
        assert law.attempt == attempt
        assert backoff.FLOOR <= delay <= max(ceiling, backoff.FLOOR)
    law.reset()
    assert law.attempt == 0
    assert law.next_delay() <= backoff.BASE


def test_backoff_is_jittered_over_the_whole_range(rng: random.Random) -> None:
    delays = []
    for _ in range(400):
        law = Backoff(rng)
        for _ in range(12):
            delay = law.next_delay()
        delays.append(delay)
    assert max(delays) > backoff.CAP * 0.9 and min(delays) < backoff.CAP * 0.1
    assert (
        abs(sum(delays, datetime.timedelta(0)) / len(delays) - backoff.CAP / 2) < backoff.CAP / 8
    )


def test_a_smaller_cap_bounds_every_delay(rng: random.Random) -> None:
    law = Backoff(rng, datetime.timedelta(minutes=2))
    assert max(law.next_delay() for _ in range(50)) <= datetime.timedelta(minutes=2)


def test_the_plan_follows_the_server_window_capped_at_the_threshold(
    certificate: x509.Certificate, rng: random.Random
) -> None:
    planner = RenewalPlanner(rng, datetime.timedelta(days=31))
    latest = certificate.not_valid_after_utc - datetime.timedelta(days=31)
    window = RenewalWindow(latest - 2 * DAY, latest + 3 * DAY)

    plan = planner.plan(certificate, window)

    assert plan.window == RenewalWindow(latest - 2 * DAY, latest)
    assert plan.window.start <= plan.moment <= plan.window.end
    # Drawn once: asking again (the next check) keeps the moment.
    assert planner.plan(certificate, window).moment == plan.moment
    assert not plan.due(plan.moment - datetime.timedelta(seconds=1))
    assert plan.due(plan.moment)
    assert plan.due(plan.window.start, inside_window=True)
    assert not plan.due(plan.window.start - datetime.timedelta(seconds=1), inside_window=True)
    moved = RenewalWindow(T0, T0 + datetime.timedelta(hours=1))
    assert T0 <= planner.plan(certificate, moved).moment <= T0 + datetime.timedelta(hours=1)


def test_without_a_server_window_the_threshold_rules(
    certificate: x509.Certificate, rng: random.Random
) -> None:
    plan = RenewalPlanner(rng, datetime.timedelta(days=31)).plan(certificate, None)
    assert plan.window is None
    assert plan.moment == certificate.not_valid_after_utc - datetime.timedelta(days=31)


def test_the_status_file_is_whole_json_and_reads_for_a_person(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status = UpdaterStatus(
        crt="svc.crt",
        serial=0x1234,
        not_after=T0 + 90 * DAY,
        window=RenewalWindow(T0 + 50 * DAY, T0 + 52 * DAY),
        window_source=updater_status.SERVER,
        renewal_at=T0 + 51 * DAY,
        last_success=T0,
        last_error=Failure(T0 - DAY, "Check failed, retrying at ...", 3),
        next_check=T0 + datetime.timedelta(hours=4),
    )

    status.write(str(path), T0)

    document = json.loads(path.read_text())
    assert document == {
        "pid": os.getpid(),
        "written_at": "2026-11-27T12:00:00Z",
        "crt": "svc.crt",
        "serial": str(0x1234),
        "not_after": "2027-02-25T12:00:00Z",
        "window": {
            "start": "2027-01-16T12:00:00Z",
            "end": "2027-01-18T12:00:00Z",
            "source": "server",
        },
        "renewal_at": "2027-01-17T12:00:00Z",
        "last_renewal": None,
        "last_success": "2026-11-27T12:00:00Z",
        "last_error": {
            "at": "2026-11-26T12:00:00Z",
            "message": "Check failed, retrying at ...",
            "attempt": 3,
        },
        "next_check": "2026-11-27T16:00:00Z",
    }
    out = io.StringIO()
    updater_status.print_status(str(path), T0 + datetime.timedelta(minutes=5), out)
    text = out.getvalue()
    assert "Certificate:  svc.crt, serial 0x1234" in text
    assert "Valid until:  2027-02-25 12:00:00 UTC (in 89 days)" in text
    assert (
        "Window:       2027-01-16 12:00 to 2027-01-18 12:00 UTC (suggested by the server)" in text
    )
    assert "Last success: 2026-11-27 12:00:00 UTC (5 minutes ago)" in text
    assert "Last error:   2026-11-26 12:00:00 UTC (1 day ago), attempt 3:" in text
    assert "Next check:   2026-11-27 16:00:00 UTC (in 3 hours)" in text
    assert [name for name in os.listdir(tmp_path) if name != "status.json"] == []


def test_print_status_of_a_missing_or_foreign_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "other.json").write_text('["not a status"]')
    for name, message in [
        ("missing.json", "missing.json: No such file or directory"),
        ("other.json", "other.json is not a caucase-updater status file"),
    ]:
        assert updater.main(["--print-status", str(tmp_path / name)]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert captured.err.startswith("caucase-updater: ") and message in captured.err


def test_notifications_reach_the_socket_with_the_watchdog(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(5)
        notifier = SystemdNotifier.from_environment(
            {
                "NOTIFY_SOCKET": address,
                "WATCHDOG_USEC": "30000000",
                "WATCHDOG_PID": str(os.getpid()),
            }
        )
        assert notifier is not None
        assert notifier.watchdog_interval == datetime.timedelta(seconds=30)

        notifier.ready("starting")
        notifier.status("up to date\nnext")
        notifier.ping()

        assert listener.recv(4096) == b"READY=1\nSTATUS=starting"
        assert listener.recv(4096) == b"STATUS=up to date next"
        assert listener.recv(4096) == b"WATCHDOG=1"


def test_no_notifier_without_systemd_and_no_watchdog_for_another_process() -> None:
    assert SystemdNotifier.from_environment({}) is None
    assert SystemdNotifier.from_environment({"NOTIFY_SOCKET": "relative"}) is None
    other = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    )
    assert other is not None and other.watchdog_interval is None
    other.ping()  # nothing to send, nothing raised
    other.notify("STATUS=nobody listens")  # a send that fails is dropped


def test_failure_lines_say_what_failed_and_when_the_next_try_is(
    certificate: x509.Certificate,
) -> None:
    retry_at = T0 + datetime.timedelta(seconds=7)
    network = CaucaseNetworkError(
        "http://h:1/cas/crl", ConnectionRefusedError(111, "Connection refused"), "GET"
    )
    assert failure_line(network, retry_at, 1, datetime.timedelta(seconds=7)) == (
        "Got a network error, retrying at 2026-11-27 12:00:07 +0000, ConnectionRefusedError: "
        "'[Errno 111] Connection refused' (GET http://h:1/cas/crl), attempt 1, next try in 7 s"
    )
    refused = RequestFailed("renewing svc.crt at http://h:1/cas: server answered HTTP 503")
    assert failure_line(refused, retry_at, 4, datetime.timedelta(seconds=66.6)) == (
        "Check failed, retrying at 2026-11-27 12:00:07 +0000: renewing svc.crt at "
        "http://h:1/cas: server answered HTTP 503 (attempt 4, next try in 67 s)"
    )
    lost = CertificateLost("svc.crt", certificate, "was revoked")
    assert "submit a CSR again with --csr" in str(lost)
    assert f"certificate {certificate.serial_number:#x} was revoked" in str(lost)
