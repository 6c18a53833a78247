"""`caucase --renew-early-all` on a live caucased with 20 real caucase-updater processes:
each renews with a new key at its next check, the renewals spread over --spread, and the
old certificates keep working.

Everything runs on one clock 60 times faster than the real one (tests.support.faketime's
Timeline), the operator's `caucase` included."""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from caucase.crypto import keys, verification
from caucase.trust_stores import load_valid_ca_list, revoked_serials
from tests.support.ca_helpers import make_csr
from tests.support.faketime import Timeline
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    key_pem,
    make_user,
    request,
    start_caucased,
)
from tests.support.updaters import UpdaterProcess
from tests.support.wait import poll

pytestmark = pytest.mark.slow

RATE = 60
FLEET = 20
# 10-day certificates (windows from day 5): nothing is due before the operator asks.
SERVER_ARGS = [
    *("--service-crt-validity", "10", "--threshold", "1"),
    *("--service-auto-approve-count", "100"),
]
MAX_SLEEP = datetime.timedelta(minutes=5)
SPREAD = datetime.timedelta(minutes=10)


@pytest.fixture
def timeline(tmp_path: Path) -> Iterator[Timeline]:
    with Timeline(tmp_path / "clock", rate=RATE) as running:
        yield running


@pytest.fixture
def server(tmp_path: Path, timeline: Timeline) -> Iterator[RunningServer]:
    running = start_caucased(
        [OUR_BIN / "caucased"], tmp_path / "server", SERVER_ARGS, env=timeline.server_env()
    )
    yield running
    running.stop()


def _time(value: object) -> datetime.datetime:
    assert isinstance(value, str)
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc
    )


def _wake_ups(process: UpdaterProcess) -> list[datetime.datetime]:
    return [
        datetime.datetime.strptime(line[len("Next wake-up at ") :], "%Y-%m-%d %H:%M:%S %z")
        for line in process.stdout().splitlines()
        if line.startswith("Next wake-up at ")
    ]


def _status(workdir: Path) -> dict[str, object] | None:
    path = workdir / "status.json"
    return json.loads(path.read_text()) if path.exists() else None


def _start_updater(server: RunningServer, timeline: Timeline, workdir: Path) -> UpdaterProcess:
    workdir.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    (workdir / "svc.key").write_bytes(key_pem(key))
    (workdir / "svc.csr").write_bytes(make_csr(key, workdir.name))  # type: ignore[arg-type]
    return UpdaterProcess(
        workdir,
        *("--ca-url", server.http_url, "--cas-ca", "cas.crt.pem", "--ca", "cas.crt.pem"),
        *("--crl", "cas.crl.pem", "--crt", "svc.crt", "--key", "svc.key", "--csr", "svc.csr"),
        *("--threshold", "1", "--crl-threshold", "1", "--status", "status.json"),
        *("--max-sleep", str(MAX_SLEEP / datetime.timedelta(days=1))),
        env=timeline.client_env(workdir.name),
    )


def test_renew_early_all_reaches_every_updater_at_its_next_check(
    tmp_path: Path, timeline: Timeline, server: RunningServer
) -> None:
    user = make_user(server, tmp_path / "user.pem")
    workdirs = [tmp_path / f"svc{index:02d}" for index in range(FLEET)]
    fleet = [_start_updater(server, timeline, workdir) for workdir in workdirs]
    try:
        statuses = poll(
            lambda: all(_status(w) for w in workdirs) and [_status(w) for w in workdirs],
            "every updater's first pass",
            timeout=120,
        )
        old = {w: x509.load_pem_x509_certificate((w / "svc.crt").read_bytes()) for w in workdirs}
        assert all(status and status["last_renewal"] is None for status in statuses)

        requested = timeline.now()
        result = subprocess.run(
            [
                *(str(OUR_BIN / "caucase"), "--ca-url", server.http_url, "--user-key", str(user)),
                *("--renew-early-all", "--spread", str(SPREAD / datetime.timedelta(hours=1))),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=timeline.client_env("operator"),
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr.startswith(f"Moved the renewal windows of {FLEET} certificates")

        renewed = poll(
            lambda: (
                all((_status(w) or {}).get("last_renewal") for w in workdirs)
                and [_status(w) for w in workdirs]
            ),
            "every updater's renewal",
            timeout=120,
        )
        for process in fleet:
            assert process.process.poll() is None, process.stderr()
    finally:
        for process in fleet:
            process.terminate()

    renewals = []
    for workdir, process, status in zip(workdirs, fleet, renewed):
        assert status is not None
        renewal = _time(status["last_renewal"])
        renewals.append(renewal)
        # The first check after the request renewed, at once or at its moment in the spread.
        next_check = min(moment for moment in _wake_ups(process) if moment >= requested)
        assert requested <= renewal <= next_check + SPREAD + datetime.timedelta(seconds=30)
        new = x509.load_pem_x509_certificate((workdir / "svc.crt").read_bytes())
        key = keys.load_private_key((workdir / "svc.key").read_bytes())
        assert keys.same_public_key(new, key)
        assert keys.key_id(new.public_key()) != keys.key_id(old[workdir].public_key())
    span = max(renewals) - min(renewals)
    print(f"\n{FLEET} renewals spread over {span} (spread {SPREAD}, checks every {MAX_SLEEP})")
    assert span >= SPREAD / 4

    # The old certificates keep working: issued by the CA, unrevoked, valid until notAfter.
    _, _, ca_pem = request(server, "GET", "/cas/crt/ca.crt.pem")
    _, _, crl_pem = request(server, "GET", "/cas/crl")
    now = timeline.now()
    ca_list = load_valid_ca_list([ca_pem], now)
    revoked = revoked_serials([crl_pem], ca_list)
    for certificate in old.values():
        verification.verify_certificate(certificate, ca_list, revoked, now)
        assert certificate.not_valid_after_utc > now + datetime.timedelta(days=9)
