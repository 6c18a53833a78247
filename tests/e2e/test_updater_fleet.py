"""Fleets of caucase-updaters over a certificate's lifetime, on a simulated clock shared with
a real caucased (tests.support.simulation): renewals spread over days, and an outage of the
server ridden out with bounded backoff.

The updaters are the real Updater objects, in threads of this process, talking HTTP to the
caucased process; days pass in the time their requests take."""

from __future__ import annotations

import datetime
import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from caucase.acme.renewal_info import CertID
from caucase.cli import backoff, updater, updater_options
from caucase.cli.updater_signals import SignalGuard
from tests.support.ca_helpers import make_csr
from tests.support.faketime import FakeTime, Role
from tests.support.servers import OUR_BIN, RunningServer, key_pem, request, start_caucased
from tests.support.simulation import Simulation, TimedOutput

pytestmark = pytest.mark.slow

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
# 10-day certificates: their band runs from day 5 to day 6.67 (40 hours), uncapped with
# --threshold 1 (server and updaters); CRLs (3.3 days) are due a day before their end.
SERVER_ARGS = [
    *("--service-crt-validity", "10", "--threshold", "1"),
    *("--service-auto-approve-count", "1000"),
]
# The fleet's: 5 days, a 20-hour band (10 renewals an hour on average: the one-hour counts
# stay far from 3 times that), CRLs of 1.65 days due half a day before their end (after the
# server renewed them, at 0.8 day).
FLEET_ARGS = [*SERVER_ARGS[:1], "5", *SERVER_ARGS[2:]]


@dataclass
class SimulatedUpdater:
    name: str
    workdir: Path
    out: TimedOutput
    instance: updater.Updater

    def renewals(self) -> list[datetime.datetime]:
        return self.out.times_of("Renewing ")

    def certificate(self) -> x509.Certificate:
        data = (self.workdir / "svc.crt").read_bytes()
        return x509.load_pem_x509_certificate(data)


@pytest.fixture
def clock(tmp_path: Path) -> Iterator[FakeTime]:
    """On tmpfs when there is one: the simulation rewrites it thousands of times."""
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") else tmp_path
    directory = Path(tempfile.mkdtemp(dir=base))
    yield FakeTime(directory)
    shutil.rmtree(directory)


@pytest.fixture
def servers(tmp_path: Path, clock: FakeTime) -> Iterator[Callable[[list[str]], RunningServer]]:
    started: list[RunningServer] = []

    def start(args: list[str]) -> RunningServer:
        running = start_caucased(
            [OUR_BIN / "caucased"],
            tmp_path / "server",
            args,
            env=clock.env(Role.SERVER),
            http_port=started[0].http_port if started else None,
        )
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def add_updater(
    simulation: Simulation,
    server: RunningServer,
    workdir: Path,
    rng: random.Random,
    *,
    max_sleep_days: float,
    crl_threshold_days: float,
    renewals_wanted: int = 1,
) -> SimulatedUpdater:
    """An updater bootstrapping a certificate (EC keys: quick), leaving the simulation
    once it renewed `renewals_wanted` times."""
    workdir.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    (workdir / "svc.key").write_bytes(key_pem(key))
    (workdir / "svc.csr").write_bytes(make_csr(key, workdir.name))  # type: ignore[arg-type]
    argv = [
        *("--ca-url", server.http_url),
        *("--cas-ca", str(workdir / "cas.crt.pem"), "--ca", str(workdir / "cas.crt.pem")),
        *("--crl", str(workdir / "cas.crl.pem"), "--crt", str(workdir / "svc.crt")),
        *("--key", str(workdir / "svc.key"), "--csr", str(workdir / "svc.csr")),
        *("--threshold", "1", "--crl-threshold", str(crl_threshold_days)),
        *("--max-sleep", str(max_sleep_days)),
        *("--key-type", "ec-p256"),
    ]
    name = workdir.name
    out = TimedOutput(simulation.now)
    instance = updater.Updater(
        updater_options.build_parser().parse_args(argv),
        SignalGuard(),
        clock=simulation.now,
        sleep=simulation.sleeper(name),
        out=out,
        rng=random.Random(rng.getrandbits(64)),
    )
    member = SimulatedUpdater(name, workdir, out, instance)
    simulation.add(name, instance.run, lambda: len(member.renewals()) >= renewals_wanted)
    return member


def stop(simulation: Simulation, fleet: list[SimulatedUpdater]) -> None:
    """End the simulation, then close the updaters' kept-alive connections."""
    simulation.stop_all()
    for member in fleet:
        member.instance.close()


def histogram(moments: list[datetime.datetime], start: datetime.datetime) -> Counter[int]:
    """Counts per one-hour bucket, numbered from `start`."""
    return Counter(int((moment - start) / HOUR) for moment in moments)


def print_histogram(title: str, counts: Counter[int], start: datetime.datetime) -> None:
    print(f"\n{title} (one-hour buckets, time since issuance; # = one certificate)")
    for bucket in range(min(counts), max(counts) + 1):
        days, hours = divmod(bucket, 24)
        print(f"  {days:2d} d {hours:02d} h  {counts[bucket]:3d} {'#' * counts[bucket]}")


def assert_spread(counts: Counter[int], title: str) -> None:
    """No one-hour bucket holds more than three times the average over the buckets the
    renewals span."""
    buckets = max(counts) - min(counts) + 1
    average = sum(counts.values()) / buckets
    peak = max(counts.values())
    print(
        f"{title}: {sum(counts.values())} over {buckets} hours, average {average:.2f}, peak {peak}"
    )
    assert peak <= 3 * average, (title, peak, average)


def test_a_fleet_issued_in_one_minute_renews_spread_over_its_band(
    tmp_path: Path,
    clock: FakeTime,
    servers: Callable[[list[str]], RunningServer],
    rng: random.Random,
) -> None:
    server = servers(FLEET_ARGS)
    simulation = Simulation(clock)
    issued = simulation.now()
    fleet = [
        add_updater(
            simulation,
            server,
            tmp_path / f"svc{index:03d}",
            rng,
            max_sleep_days=1,
            crl_threshold_days=0.5,
        )
        for index in range(200)
    ]

    try:
        simulation.run_until(issued + 5 * DAY)
    finally:
        stop(simulation, fleet)

    assert simulation.failures == {}
    certificates = [member.certificate() for member in fleet]
    first_issued = min(member.out.times_of("Bootstrap done")[0] for member in fleet)
    last_issued = max(member.out.times_of("Bootstrap done")[0] for member in fleet)
    assert last_issued - first_issued < datetime.timedelta(minutes=1)
    renewals = [member.renewals()[0] for member in fleet]
    assert all(len(member.renewals()) == 1 for member in fleet)
    band_start, band_end = issued + 2.5 * DAY - HOUR, issued + 5 * DAY * 2 / 3 + HOUR
    assert all(band_start <= moment <= band_end for moment in renewals)
    assert len({certificate.serial_number for certificate in certificates}) == 200

    starts = [served_window(server, certificate)[0] for certificate in first_certificates(server)]
    assert len(starts) == 200
    window_counts = histogram(starts, issued)
    print_histogram("Starts of the 200 windows the server suggested", window_counts, issued)
    assert_spread(window_counts, "window starts")
    counts = histogram(renewals, issued)
    print_histogram("Renewals performed by the 200 updaters", counts, issued)
    assert_spread(counts, "renewals")


def first_certificates(server: RunningServer) -> list[tuple[bytes, int]]:
    """(authority key id, serial) of the certificates issued first (the fleet's own), from
    the server's renewal index."""
    connection = sqlite3.connect(f"file:{server.workdir / 'caucase.sqlite'}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT authority_key_id, serial FROM cas_renewal "
            "WHERE not_before < (SELECT MIN(not_before) FROM cas_renewal) + 60"
        ).fetchall()
    finally:
        connection.close()
    return [(bytes(aki), int(serial)) for aki, serial in rows]


def served_window(
    server: RunningServer, cert_id: tuple[bytes, int]
) -> tuple[datetime.datetime, datetime.datetime]:
    status, _, body = request(server, "GET", f"/cas/renewal-info/{CertID(*cert_id)}")
    assert status == 200
    window = json.loads(body)["suggestedWindow"]
    return (
        datetime.datetime.strptime(window["start"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc
        ),
        datetime.datetime.strptime(window["end"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc
        ),
    )


def _attempt_lines(out: TimedOutput) -> list[tuple[int, float]]:
    """(attempt number, delay in seconds) of each failure line."""
    found = []
    for _, line in out.lines:
        match = re.search(r"attempt (\d+), next try in (\d+) s", line)
        if match:
            found.append((int(match.group(1)), float(match.group(2))))
    return found


def test_an_outage_across_the_renewal_windows_is_ridden_out_with_bounded_backoff(
    tmp_path: Path,
    clock: FakeTime,
    servers: Callable[[list[str]], RunningServer],
    rng: random.Random,
) -> None:
    server = servers(SERVER_ARGS)
    simulation = Simulation(clock)
    issued = simulation.now()
    fleet = [
        add_updater(
            simulation,
            server,
            tmp_path / f"svc{index:02d}",
            rng,
            max_sleep_days=updater_options.DEFAULT_MAX_SLEEP_DAYS,
            crl_threshold_days=1,
        )
        for index in range(20)
    ]
    # Stopped before the first window opens (day 5), back after the last one closed.
    stopped, back = issued + 4.9 * DAY, issued + 6.9 * DAY
    simulation.at(stopped, lambda: server.stop())
    simulation.at(back, lambda: servers(SERVER_ARGS) and None)

    try:
        simulation.run_until(issued + 8 * DAY)
    finally:
        stop(simulation, fleet)

    assert simulation.failures == {}, simulation.failures
    law = backoff.Backoff(random.Random(0))
    outage = (back - stopped).total_seconds()
    # Delays are uniform in [1 s, min(1 h, 10 s * 2**(n-1))]: past the 9 ramp-up attempts
    # they average 30 minutes, so 2 days take about 104 attempts; 150 is 6 standard
    # deviations of their sum away.
    bound = 150
    counts = []
    for member in fleet:
        attempts = _attempt_lines(member.out)
        counts.append(len(attempts))
        assert [number for number, _ in attempts] == list(range(1, len(attempts) + 1))
        for number, delay in attempts:
            assert delay <= law.ceiling(number).total_seconds() + 1
        assert 0 < len(attempts) <= bound
        (renewal,) = member.renewals()
        assert back <= renewal <= back + backoff.CAP + datetime.timedelta(seconds=5)
        assert renewal - back <= datetime.timedelta(days=updater_options.DEFAULT_MAX_SLEEP_DAYS)
        assert member.certificate().not_valid_before_utc >= back - datetime.timedelta(minutes=1)
    print(
        f"\noutage of {outage / 86400:.0f} days: attempts per updater {sorted(counts)}, "
        f"bound {bound}; renewals within "
        f"{max((m.renewals()[0] - back) for m in fleet)} of the server's return"
    )
