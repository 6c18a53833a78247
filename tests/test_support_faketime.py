"""The faked clock of tests.support.faketime does what the end-to-end tests rely on.

A real Python process under each role reads its clock and waits when asked; the test
compares with the real clock and times the waits from outside."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from caucase.clock import utcnow
from tests.support.faketime import FakeTime, Role, Timeline

# Answers each line read on stdin: "now" with its clock, a wait's name once it has waited
# 0.2 s by its own account; the parent times the waits, since the child's clocks are faked.
PROBE = """
import datetime, select, socket, sys, threading, time
def sock_wait():
    a, b = socket.socketpair()
    a.settimeout(0.2)
    try:
        a.recv(1)
    except TimeoutError:
        pass
waits = {
    "select": lambda: select.select([], [], [], 0.2),
    "socket": sock_wait,
    "sleep": lambda: time.sleep(0.2),
    "event": lambda: threading.Event().wait(0.2),
}
for line in sys.stdin:
    command = line.strip()
    if command == "now":
        print(datetime.datetime.now(datetime.timezone.utc).timestamp(), flush=True)
    else:
        waits[command]()
        print(command, flush=True)
"""
# The timed wait each role may use; the other one is the libfaketime defect it avoids.
ROLE_WAITS = {
    Role.SERVER: ("select", "socket", "event"),
    Role.CLIENT: ("select", "socket", "sleep"),
}


class Probe:
    """A Python process on the faked clock `env` sets up."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROBE],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def skew(self) -> float:
        """How far ahead of the real clock the child's clock is, in seconds."""
        before = time.time()
        now = float(self._ask("now"))
        return now - (before + time.time()) / 2

    def now(self) -> float:
        return float(self._ask("now"))

    def real_duration(self, wait: str) -> float:
        start = time.monotonic()
        assert self._ask(wait) == wait
        return time.monotonic() - start

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


def test_jumps_reach_running_processes_and_waits_stay_real(tmp_path: Path) -> None:
    for role in Role:
        fake = FakeTime(tmp_path / role.value)
        probe = Probe(fake.env(role))
        try:
            assert abs(probe.skew()) < 2, role
            fake.advance(days=400)
            assert abs(probe.skew() - 400 * 86400) < 2, role
            for wait in ROLE_WAITS[role]:
                assert 0.15 < probe.real_duration(wait) < 2, (role, wait)
        finally:
            probe.close()
        assert abs((fake.now() - utcnow()).total_seconds() - 400 * 86400) < 1


def test_a_rate_speeds_the_clock_and_the_waits(tmp_path: Path) -> None:
    for role in Role:
        probe = Probe(FakeTime(tmp_path / role.value, rate=10).env(role))
        try:
            first = probe.now()
            real_start = time.monotonic()
            for wait in ROLE_WAITS[role]:
                if wait != "event":  # a lock wait runs on the real monotonic clock
                    assert probe.real_duration(wait) < 0.1, (role, wait)
            real_elapsed = time.monotonic() - real_start
            assert probe.now() - first > 5 * real_elapsed, role
        finally:
            probe.close()


def test_a_timeline_puts_processes_started_apart_on_one_fast_clock(tmp_path: Path) -> None:
    with Timeline(tmp_path, rate=20) as timeline:
        first = Probe(timeline.client_env("first"))
        time.sleep(0.5)  # the experiment: a client started later, on the same clock
        second = Probe(timeline.client_env("second"))
        server = Probe(timeline.server_env())
        try:
            time.sleep(0.5)  # half a real second: ten seconds of the timeline
            for probe in (first, second):
                assert abs(probe.now() - timeline.now().timestamp()) < 2
            behind = timeline.now().timestamp() - server.now()
            assert -0.5 < behind < 3
        finally:
            for probe in (first, second, server):
                probe.close()
