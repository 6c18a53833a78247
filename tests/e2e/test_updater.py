"""caucase-updater against real caucased processes (the reference one and ours).

Long waits of the updater (the 60 s bootstrap poll) are crossed in-process with a clock that
moves forward when the updater sleeps; everything else runs the real console script.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import re
import signal
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caucase.cli import updater, updater_options
from caucase.crypto import pemfile, x509util
from caucase.exceptions import CaucaseError
from tests.support.faketime import FakeTime, Role
from tests.support.servers import (
    IMPLEMENTATIONS,
    OUR_BIN,
    RunningServer,
    free_port_pair,
    key_pem,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)
from tests.support.updaters import UpdaterProcess, pair, stores, write_key_and_csr
from tests.support.wait import poll


@pytest.fixture(params=IMPLEMENTATIONS)
def caucased_command(request: pytest.FixtureRequest) -> Path:
    if request.param == "reference":
        return Path(request.getfixturevalue("reference_bin")) / "caucased"
    return OUR_BIN / "caucased"


@pytest.fixture
def start_server(caucased_command: Path, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start caucased with extra arguments; every server started is stopped afterwards."""
    started: list[RunningServer] = []

    def start(*extra_args: str, http_port: int | None = None) -> RunningServer:
        server = start_caucased(
            [caucased_command], tmp_path / f"server{len(started)}", extra_args, http_port=http_port
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def run_updater(tmp_path: Path) -> Iterator[Callable[..., UpdaterProcess]]:
    started: list[UpdaterProcess] = []

    def run(*args: str, env: dict[str, str] | None = None) -> UpdaterProcess:
        process = UpdaterProcess(tmp_path, *args, env=env, name=f"updater{len(started)}")
        started.append(process)
        return process

    yield run
    for process in started:
        process.kill()


def test_bootstrap_auto_approved_with_hook_then_sigterm(
    start_server: Callable[..., RunningServer],
    run_updater: Callable[..., UpdaterProcess],
    tmp_path: Path,
) -> None:
    server = start_server("--service-auto-approve-count", "1")
    key_path, _ = write_key_and_csr(tmp_path)
    hook = "echo ran >> hook.log"

    process = run_updater(
        *stores(server.http_url),
        "--crt",
        "svc.crt",
        "--key",
        "svc.key",
        "--csr",
        "svc.csr",
        "--on-renew",
        hook,
    )
    output = process.wait_for("Next wake-up at", count=2)

    lines = output.splitlines()
    assert lines[0] == "Bootstraping..."
    assert lines[1].startswith("Waiting for signature of ") and lines[1].split()[-1].isdigit()
    assert lines[2] == "Bootstrap done"
    assert lines[3].startswith("Next wake-up at ") and lines[3].endswith(" +0000")
    certificate, _ = pair(tmp_path / "svc.crt", key_path)
    assert x509util.is_auto_signed(certificate)
    assert (tmp_path / "hook.log").read_text() == "ran\n"
    _, _, ca_pem = request(server, "GET", "/cas/crt/ca.crt.pem")
    assert (tmp_path / "cas.crt.pem").read_bytes() == ca_pem
    assert b"BEGIN X509 CRL" in (tmp_path / "cas.crl.pem").read_bytes()
    assert process.terminate(signal.SIGTERM) == 0
    assert process.stderr() == ""


def test_sigint_while_waiting_for_signature_exits_0(
    start_server: Callable[..., RunningServer],
    run_updater: Callable[..., UpdaterProcess],
    tmp_path: Path,
) -> None:
    server = start_server()
    write_key_and_csr(tmp_path)

    process = run_updater(
        *stores(server.http_url), "--crt", "svc.crt", "--key", "svc.key", "--csr", "svc.csr"
    )
    process.wait_for("Waiting for signature of")

    assert process.terminate(signal.SIGINT) == 0
    assert "Traceback" not in process.stderr()
    assert not (tmp_path / "svc.crt").exists()


class SkewClock:
    """Real time plus an offset that grows when the updater sleeps: crosses the 60 s
    bootstrap poll instantly while staying close to the server's clock."""

    def __init__(self) -> None:
        self.offset = datetime.timedelta(0)
        self.naps: list[float] = []

    def __call__(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc) + self.offset

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.offset += datetime.timedelta(seconds=seconds)


class StopTest(BaseException):
    """Ends an in-process updater from its sleep callback."""


def _in_process(argv: list[str], on_sleep: Callable[[float, str], None]) -> tuple[str, SkewClock]:
    """Run an Updater until `on_sleep` raises; its stdout and clock."""
    clock = SkewClock()
    out = io.StringIO()

    def sleep(seconds: float) -> None:
        on_sleep(seconds, out.getvalue())
        clock.sleep(seconds)

    args: argparse.Namespace = updater_options.build_parser().parse_args(argv)
    instance = updater.Updater(args, updater.SignalGuard(), clock=clock, sleep=sleep, out=out)
    try:
        with pytest.raises(StopTest):
            instance.run()
    finally:
        instance.close()
    return out.getvalue(), clock


def _waiting_id(output: str) -> str:
    return output.split("Waiting for signature of ")[1].split()[0]


def test_bootstrap_waits_for_manual_signature(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = start_server()
    user = make_user(server, tmp_path / "user.pem")
    key_path, csr_path = write_key_and_csr(tmp_path)
    crt_path = tmp_path / "svc.crt"

    def on_sleep(seconds: float, output: str) -> None:
        if "Bootstrap done" in output:
            raise StopTest
        assert seconds == pytest.approx(60, abs=1)
        status, _, _ = request(
            server, "PUT", f"/cas/crt/{_waiting_id(output)}", b"", https=True, cert_file=user
        )
        assert status == 204

    output, clock = _in_process(
        [
            *stores(server.http_url),
            "--cas-ca",
            str(tmp_path / "cas.crt.pem"),
            "--ca",
            str(tmp_path / "cas.crt.pem"),
            "--crl",
            str(tmp_path / "cas.crl.pem"),
            "--crt",
            str(crt_path),
            "--key",
            str(key_path),
            "--csr",
            str(csr_path),
        ],
        on_sleep,
    )

    assert output.splitlines()[2] == "Bootstrap done"
    assert clock.naps[0] == pytest.approx(60, abs=1)
    certificate, _ = pair(crt_path, key_path)
    assert not x509util.is_auto_signed(certificate)


def test_rejected_csr_is_fatal(start_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = start_server()
    user = make_user(server, tmp_path / "user.pem")
    key_path, csr_path = write_key_and_csr(tmp_path)

    def on_sleep(seconds: float, output: str) -> None:
        status, _, _ = request(
            server, "DELETE", f"/cas/csr/{_waiting_id(output)}", https=True, cert_file=user
        )
        assert status == 204

    with pytest.raises(CaucaseError, match=r"CSR \d+ .* was rejected"):
        _in_process(
            [
                *stores(server.http_url),
                "--cas-ca",
                str(tmp_path / "cas.crt.pem"),
                "--ca",
                str(tmp_path / "cas.crt.pem"),
                "--crl",
                str(tmp_path / "cas.crl.pem"),
                "--crt",
                str(tmp_path / "svc.crt"),
                "--key",
                str(key_path),
                "--csr",
                str(csr_path),
            ],
            on_sleep,
        )
    assert not (tmp_path / "svc.crt").exists()


@pytest.mark.parametrize("layout", ["separate", "combined"])
def test_renewal_replaces_key_and_certificate_together(
    start_server: Callable[..., RunningServer],
    run_updater: Callable[..., UpdaterProcess],
    tmp_path: Path,
    layout: str,
) -> None:
    # 0.001 day = 86.4 s of validity (errata 4: well above 30 s); a 0.0009 day threshold
    # puts a fresh certificate inside its renewal window at once.
    server = start_server("--service-auto-approve-count", "1", "--service-crt-validity", "0.001")
    key_path, _ = write_key_and_csr(tmp_path)
    key_args = ["--key", "svc.key"]
    if layout == "combined":
        (tmp_path / "svc.crt").write_bytes(key_path.read_bytes())
        (tmp_path / "svc.crt").chmod(0o600)
        key_path.unlink()
        key_args = []

    process = run_updater(
        *stores(server.http_url),
        "--crt",
        "svc.crt",
        *key_args,
        "--csr",
        "svc.csr",
        "--threshold",
        "0.0009",
        "--key-len",
        "2048",
    )
    process.wait_for("Bootstrap done")
    first, first_key = pair(tmp_path / "svc.crt", key_path if key_args else None)
    output = process.wait_for("Next wake-up at", count=2)
    assert process.terminate() == 0

    assert "Renewing svc.crt" in output.splitlines()
    renewed, renewed_key = pair(tmp_path / "svc.crt", key_path if key_args else None)
    assert renewed.serial_number != first.serial_number
    assert renewed_key != first_key
    assert renewed.subject == first.subject
    key_file = key_path if key_args else tmp_path / "svc.crt"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not [name for name in os.listdir(tmp_path) if name.endswith((".tmp", "renewing"))]


def test_hook_failure_exits_3_with_its_exit_code(
    start_server: Callable[..., RunningServer],
    run_updater: Callable[..., UpdaterProcess],
) -> None:
    server = start_server()

    process = run_updater(*stores(server.http_url), "--on-renew", "exit 3")

    assert process.exit_status() == 3
    assert process.stderr() == "Renewal hook exited with status 3\n"


def test_network_errors_are_retried_until_the_server_comes(
    start_server: Callable[..., RunningServer],
    run_updater: Callable[..., UpdaterProcess],
    tmp_path: Path,
) -> None:
    # Ten times faster: the first retries (under 10 s, then 20 s) take about a second.
    fast = FakeTime(tmp_path / "clock", rate=10)
    port = free_port_pair()

    process = run_updater(*stores(f"http://127.0.0.1:{port}"), env=fast.env(Role.CLIENT))
    output = process.wait_for("Got a network error, retrying at ")
    start_server(http_port=port)
    output = process.wait_for("Next wake-up at", count=2, timeout=60)
    assert process.terminate() == 0

    line = output.splitlines()[0]
    assert re.fullmatch(
        r"Got a network error, retrying at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000, "
        r"ConnectionRefusedError: '\[Errno 111\] Connection refused' "
        rf"\(GET http://127.0.0.1:{port}/cas/crt/ca.crt.pem\), attempt 1, next try in \d+ s",
        line,
    ), line
    assert (tmp_path / "cas.crt.pem").exists() and (tmp_path / "cas.crl.pem").exists()


def test_sigterm_during_network_retry_exits_0_promptly(
    run_updater: Callable[..., UpdaterProcess],
) -> None:
    process = run_updater(*stores(f"http://127.0.0.1:{free_port_pair()}"))
    process.wait_for("Got a network error")

    started = time.monotonic()
    assert process.terminate(signal.SIGTERM, timeout=5) == 0
    assert time.monotonic() - started < 5


def test_user_mode_bootstraps_a_user_certificate(
    start_server: Callable[..., RunningServer],
    run_updater: Callable[..., UpdaterProcess],
    tmp_path: Path,
) -> None:
    server = start_server()
    write_key_and_csr(tmp_path, "user")
    (tmp_path / "user.crt").write_bytes((tmp_path / "user.key").read_bytes())
    (tmp_path / "user.crt").chmod(0o600)

    process = run_updater(
        *stores(server.http_url, "user"), "--crt", "user.crt", "--csr", "user.csr"
    )
    # The first wake-up is immediate: the second announcement follows the first pass.
    process.wait_for("Next wake-up at", count=2)
    assert process.terminate() == 0

    _, _, cau_pem = request(server, "GET", "/cau/crt/ca.crt.pem")
    assert (tmp_path / "cau.crt.pem").read_bytes() == cau_pem
    certificate, _ = pair(tmp_path / "user.crt")
    cau = x509.load_pem_x509_certificate(cau_pem)
    assert certificate.issuer == cau.subject
    status, _, _ = request(server, "GET", "/cas/csr", https=True, cert_file=tmp_path / "user.crt")
    assert status == 200


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no-csr", "no --csr was given"),
        ("two-certificates", "more than one certificate"),
        ("foreign-csr", "does not request a certificate for the private key"),
        ("no-key", "svc.crt: no such file (it must hold the private key, or give --key)"),
        ("key-less-crt", "svc.crt holds no private key and no --key was given"),
    ],
)
def test_unusable_files_give_one_line_and_status_1(
    start_server: Callable[..., RunningServer],
    run_updater: Callable[..., UpdaterProcess],
    tmp_path: Path,
    setup: str,
    message: str,
) -> None:
    server = start_server()
    write_key_and_csr(tmp_path)
    args = ["--crt", "svc.crt", "--key", "svc.key", "--csr", "svc.csr"]
    if setup == "no-csr":
        args = args[:4]
    elif setup == "two-certificates":
        _, _, ca_pem = request(server, "GET", "/cas/crt/ca.crt.pem")
        (tmp_path / "svc.crt").write_bytes(ca_pem + ca_pem)
    elif setup == "foreign-csr":
        write_key_and_csr(tmp_path, "other")
        args[-1] = "other.csr"
    elif setup == "no-key":
        args = ["--crt", "svc.crt", "--csr", "svc.csr"]
    elif setup == "key-less-crt":
        (tmp_path / "svc.crt").write_bytes(b"")
        args = ["--crt", "svc.crt", "--csr", "svc.csr"]

    process = run_updater(*stores(server.http_url), *args)

    assert process.exit_status() == 1
    err = process.stderr()
    assert err.startswith("caucase-updater: ") and err.count("\n") == 1, err
    assert message in err


def test_ca_rollover_is_picked_up(
    caucased_command: Path,
    run_updater: Callable[..., UpdaterProcess],
    tmp_path: Path,
) -> None:
    # 10-day certificates: the CAS CA lives 40 days and is renewed once 20 are left. Both
    # processes share a faked clock; the jump reaches the updater's next check, which
    # SIGHUP asks for at once (a jump cannot shorten a nap already begun).
    clock = FakeTime(tmp_path / "clock")
    server = start_caucased(
        [caucased_command],
        tmp_path / "server",
        ["--service-crt-validity", "10"],
        env=clock.env(Role.SERVER),
    )
    try:
        process = run_updater(*stores(server.http_url), env=clock.env(Role.CLIENT))
        process.wait_for("Next wake-up at", count=2)
        for _ in range(3):
            jumped = clock.advance(days=7)
            if caucased_command.parent != OUR_BIN:
                # The reference exits if it finds its HTTPS certificate expired (it fails
                # to renew it): each step, shorter than its life, waits for its renewal.
                renewed = jumped - datetime.timedelta(minutes=1)
                poll(
                    lambda renewed=renewed: _https_renewed_since(server, renewed),
                    "the reference to renew its HTTPS certificate",
                    process=server.process,
                )
        process.process.send_signal(signal.SIGHUP)
        output = process.wait_for("Got new CA")
        assert process.terminate() == 0
    finally:
        server.stop()

    assert "Got new CRL" in output
    blocks = (tmp_path / "cas.crt.pem").read_bytes().count(b"-----BEGIN CERTIFICATE-----")
    assert blocks == 2


def _https_renewed_since(server: RunningServer, since: datetime.datetime) -> bool:
    """Whether the HTTPS port serves a certificate issued at `since` or later; a connection
    reset while the server swaps its certificate counts as not yet."""
    try:
        pem = ssl.get_server_certificate((server.host, server.https_port), timeout=10)
    except OSError:
        return False
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_before_utc >= since


def test_wait_until_follows_the_wall_clock() -> None:
    clock = SkewClock()
    deadline = clock() + datetime.timedelta(hours=1)

    reached = updater.wait_until(deadline, clock, clock.sleep)

    assert reached >= deadline
    assert clock.naps[0] == pytest.approx(1800, abs=1)
    assert all(nap <= 1800 for nap in clock.naps)
    assert clock.naps[1] == pytest.approx(900, abs=1)
    assert clock.naps[2] == pytest.approx(600, abs=1)


def test_wait_until_notices_a_clock_jump() -> None:
    clock = SkewClock()
    deadline = clock() + datetime.timedelta(days=10)

    def jumping_sleep(seconds: float) -> None:
        clock.sleep(seconds)
        clock.offset += datetime.timedelta(days=30)

    updater.wait_until(deadline, clock, jumping_sleep)

    assert len(clock.naps) == 1


def test_interrupted_renewal_is_completed_or_discarded(tmp_path: Path) -> None:
    old_key, new_key = (make_key_and_csr("x")[0] for _ in range(2))
    key_path = tmp_path / "svc.key"
    pending = Path(str(key_path) + pemfile.PENDING_KEY_SUFFIX)
    key_path.write_bytes(key_pem(old_key))
    crt_path = tmp_path / "svc.crt"
    crt_path.write_bytes(_self_signed_pem(new_key))
    pending.write_bytes(key_pem(new_key))

    pemfile.recover_interrupted_renewal(str(crt_path), str(key_path))

    assert key_path.read_bytes() == key_pem(new_key) and not pending.exists()
    pending.write_bytes(key_pem(old_key))
    pemfile.recover_interrupted_renewal(str(crt_path), str(key_path))
    assert key_path.read_bytes() == key_pem(new_key) and not pending.exists()


def _self_signed_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return certificate.public_bytes(serialization.Encoding.PEM)
