"""caucase-updater with renewal windows, signals, status file, systemd notification and
retries, as real processes against real servers (ours; the reference where it says so).

The updater's clock is faked where days must pass (tests.support.faketime); caucased keeps
the real clock, which the certificates it issues stay valid on."""

from __future__ import annotations

import datetime
import http.server
import json
import os
import random
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from caucase import renewal
from caucase.cli import backoff
from tests.e2e.helpers import revoke_serial
from tests.support.faketime import FakeTime, Role
from tests.support.servers import (
    IMPLEMENTATIONS,
    OUR_BIN,
    RunningServer,
    free_port_pair,
    key_pem,
    make_key_and_csr,
    make_user,
    start_caucased,
)
from tests.support.updaters import UpdaterProcess, pair, stores, write_key_and_csr

DAY = datetime.timedelta(days=1)
# 10-day certificates whose windows (5 to 6.7 days) are not capped: --threshold 1 for the
# server and the updater alike; their CRLs (3.3 days) are due a day before they expire.
SERVER_ARGS = (
    *("--service-crt-validity", "10", "--threshold", "1"),
    *("--service-auto-approve-count", "5"),
)
CERTIFICATE = (
    *("--crt", "svc.crt", "--key", "svc.key", "--csr", "svc.csr"),
    *("--threshold", "1", "--crl-threshold", "1"),
)


@pytest.fixture(params=IMPLEMENTATIONS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    command = OUR_BIN / "caucased"
    if request.param == "reference":
        command = Path(request.getfixturevalue("reference_bin")) / "caucased"
    running = start_caucased([command], tmp_path / "server", SERVER_ARGS)
    yield running
    running.stop()


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_caucased([OUR_BIN / "caucased"], tmp_path / "server", SERVER_ARGS)
    yield running
    running.stop()


@pytest.fixture
def updaters(tmp_path: Path) -> Iterator[Callable[..., UpdaterProcess]]:
    started: list[UpdaterProcess] = []

    def run(*args: str, env: dict[str, str] | None = None) -> UpdaterProcess:
        process = UpdaterProcess(tmp_path, *args, env=env, name=f"updater{len(started)}")
        started.append(process)
        return process

    yield run
    for process in started:
        process.kill()


def _status(tmp_path: Path) -> dict[str, object]:
    return json.loads((tmp_path / "status.json").read_text())


def _time(value: object) -> datetime.datetime:
    assert isinstance(value, str)
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc
    )


def _passes(process: UpdaterProcess) -> int:
    return process.stdout().count("Next wake-up at")


def _next_pass(process: UpdaterProcess, sig: int) -> str:
    """Send `sig` and wait for the pass it asks for to end; the output then."""
    seen = _passes(process)
    process.process.send_signal(sig)
    return process.wait_for("Next wake-up at", count=seen + 1)


def test_the_window_the_server_suggests_is_followed_and_reported(
    server: RunningServer, updaters: Callable[..., UpdaterProcess], tmp_path: Path
) -> None:
    key_path, _ = write_key_and_csr(tmp_path)
    process = updaters(*stores(server.http_url), *CERTIFICATE, "--status", "status.json")
    process.wait_for("Next wake-up at", count=2)
    certificate, _ = pair(tmp_path / "svc.crt", key_path)
    status = _status(tmp_path)
    assert process.terminate() == 0

    assert status["serial"] == str(certificate.serial_number)
    assert _time(status["not_after"]) == certificate.not_valid_after_utc
    window = status["window"]
    assert isinstance(window, dict)
    if server.args[0].startswith(str(OUR_BIN)):
        # Ours: the placed window of the certificate, a random moment of it.
        expected = renewal.suggested_window(
            certificate.not_valid_before_utc,
            certificate.not_valid_after_utc,
            certificate.serial_number,
            DAY,
        )
        assert window["source"] == "server"
        assert _time(window["start"]) == expected.start.replace(microsecond=0)
        assert _time(window["end"]) == expected.end.replace(microsecond=0)
        assert expected.start - datetime.timedelta(seconds=1) <= _time(status["renewal_at"])
        assert _time(status["renewal_at"]) <= expected.end
    else:
        # The reference serves no window: the threshold rule, silently.
        assert window["source"] == "threshold"
        assert _time(status["renewal_at"]) == certificate.not_valid_after_utc - DAY
        assert "renewal window" not in process.stdout()
    next_check = _time(status["next_check"]) - _time(status["written_at"])
    assert datetime.timedelta(hours=4.5) - datetime.timedelta(seconds=2) <= next_check
    assert next_check <= datetime.timedelta(hours=6)
    assert status["last_error"] is None and status["last_success"] is not None
    assert "Renewing" not in process.stdout()


def test_print_status_shows_the_status_to_a_person(
    ours: RunningServer, updaters: Callable[..., UpdaterProcess], tmp_path: Path
) -> None:
    write_key_and_csr(tmp_path)
    process = updaters(*stores(ours.http_url), *CERTIFICATE, "--status", "status.json")
    process.wait_for("Next wake-up at", count=2)
    assert process.terminate() == 0

    shown = updaters("--print-status", "status.json")
    assert shown.exit_status() == 0
    lines = shown.stdout().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "Written",
        "Certificate",
        "Valid until",
        "Window",
        "Renewal at",
        "Last renewal",
        "Last success",
        "Last error",
        "Next check",
    ]
    assert "(suggested by the server)" in lines[3]
    assert lines[2].endswith("(in 9 days)")


def test_sighup_checks_now_and_renews_once_the_window_opened(
    ours: RunningServer, updaters: Callable[..., UpdaterProcess], tmp_path: Path
) -> None:
    clock = FakeTime(tmp_path / "clock")
    write_key_and_csr(tmp_path)
    process = updaters(
        *stores(ours.http_url), *CERTIFICATE, "--status", "status.json", env=clock.env(Role.CLIENT)
    )
    process.wait_for("Next wake-up at", count=2)
    first = _status(tmp_path)
    window = first["window"]
    assert isinstance(window, dict)

    _next_pass(process, signal.SIGHUP)
    assert "Renewing" not in process.stdout()
    clock.advance(seconds=(_time(window["start"]) - clock.now()).total_seconds() + 60)
    output = _next_pass(process, signal.SIGHUP)

    assert "Renewing svc.crt" in output
    assert _status(tmp_path)["serial"] != first["serial"]
    assert process.terminate() == 0


def test_sigusr1_renews_now_whatever_the_window(
    server: RunningServer, updaters: Callable[..., UpdaterProcess], tmp_path: Path
) -> None:
    key_path, _ = write_key_and_csr(tmp_path)
    process = updaters(
        *stores(server.http_url), *CERTIFICATE, "--on-renew", "echo ran >> hook.log"
    )
    process.wait_for("Next wake-up at", count=2)
    before, before_key = pair(tmp_path / "svc.crt", key_path)

    output = _next_pass(process, signal.SIGUSR1)

    assert output.count("Renewing svc.crt") == 1
    after, after_key = pair(tmp_path / "svc.crt", key_path)
    assert after.serial_number != before.serial_number and after_key != before_key
    assert (tmp_path / "hook.log").read_text() == "ran\nran\n"
    assert process.terminate() == 0


def test_sd_notify_ready_status_and_watchdog(
    ours: RunningServer, updaters: Callable[..., UpdaterProcess], tmp_path: Path
) -> None:
    address = str(tmp_path / "notify")
    messages: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "500000"}
        process = updaters(*stores(ours.http_url), env=env)
        while messages.count(b"WATCHDOG=1") < 3:
            messages.append(listener.recv(4096))
        assert process.terminate() == 0

    assert messages[0] == b"READY=1\nSTATUS=starting"
    statuses = [message for message in messages if message.startswith(b"STATUS=")]
    assert statuses and re.fullmatch(
        rb"STATUS=up to date; next check at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000", statuses[-1]
    )


class _Refusing(http.server.BaseHTTPRequestHandler):
    """Answers every request 503, as a caucased whose database is down."""

    def do_GET(self) -> None:
        body = b"Database unavailable, try again later"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_http_errors_are_retried_with_the_backoff_law(
    updaters: Callable[..., UpdaterProcess], tmp_path: Path
) -> None:
    refusing = http.server.HTTPServer(("127.0.0.1", free_port_pair()), _Refusing)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    fast = FakeTime(tmp_path / "clock", rate=50)
    try:
        process = updaters(
            *stores(f"http://127.0.0.1:{refusing.server_port}"), env=fast.env(Role.CLIENT)
        )
        output = process.wait_for("Check failed", count=6)
        assert process.process.poll() is None
        assert process.terminate() == 0
    finally:
        refusing.shutdown()
        refusing.server_close()

    pattern = re.compile(
        r"Check failed, retrying at .* \+0000: updating cas.crt.pem from "
        r"http://127.0.0.1:\d+/cas: server answered HTTP 503: "
        r"Database unavailable, try again later \(attempt (\d+), next try in (\d+) s\)"
    )
    attempts = [pattern.fullmatch(line) for line in output.splitlines()[:6]]
    assert all(attempts), output
    law = backoff.Backoff(random.Random(0))
    for number, match in enumerate(attempts, start=1):
        assert match is not None and int(match.group(1)) == number
        assert 0 <= int(match.group(2)) <= law.ceiling(number).total_seconds() + 1


def test_a_revoked_certificate_is_a_repeated_error_until_a_new_csr_comes(
    ours: RunningServer, updaters: Callable[..., UpdaterProcess], tmp_path: Path
) -> None:
    user = make_user(ours, tmp_path / "user.pem")
    key_path, _ = write_key_and_csr(tmp_path)
    process = updaters(*stores(ours.http_url), *CERTIFICATE)
    process.wait_for("Next wake-up at", count=2)
    certificate, _ = pair(tmp_path / "svc.crt", key_path)
    assert revoke_serial(ours, user, "cas", certificate.serial_number) == 204

    process.process.send_signal(signal.SIGHUP)
    process.wait_for("was revoked")
    process.process.send_signal(signal.SIGHUP)
    output = process.wait_for("was revoked", count=2)
    lost = [line for line in output.splitlines() if "was revoked" in line]
    assert lost[0].startswith("Check failed, retrying at ")
    assert (
        f"svc.crt: certificate {certificate.serial_number:#x} was revoked: it cannot be "
        in lost[0]
    )
    assert "submit a CSR again with --csr" in lost[0] and "(attempt 2, " in lost[1]
    assert process.process.poll() is None

    # The fix it names: a new key and CSR, the certificate removed.
    new_key, new_csr = make_key_and_csr("svc")
    key_path.write_bytes(key_pem(new_key))
    (tmp_path / "svc.csr").write_bytes(new_csr)
    (tmp_path / "svc.crt").unlink()
    process.process.send_signal(signal.SIGHUP)
    process.wait_for("Bootstrap done", count=2)
    renewed, _ = pair(tmp_path / "svc.crt", key_path)
    assert renewed.serial_number != certificate.serial_number
    assert process.terminate() == 0


def test_an_expired_certificate_names_the_fix(
    ours: RunningServer, updaters: Callable[..., UpdaterProcess], tmp_path: Path
) -> None:
    clock = FakeTime(tmp_path / "clock")
    key_path, _ = write_key_and_csr(tmp_path)
    process = updaters(*stores(ours.http_url), *CERTIFICATE, env=clock.env(Role.CLIENT))
    process.wait_for("Next wake-up at", count=2)
    certificate, _ = pair(tmp_path / "svc.crt", key_path)

    clock.advance(days=11)
    process.process.send_signal(signal.SIGHUP)
    output = process.wait_for("expired on")

    line = next(line for line in output.splitlines() if "expired on" in line)
    end = certificate.not_valid_after_utc
    assert (
        f"certificate {certificate.serial_number:#x} expired on {end:%Y-%m-%d %H:%M} UTC" in line
    )
    assert "submit a CSR again with --csr" in line
    assert process.process.poll() is None and "Renewing" not in output
    assert process.terminate() == 0
