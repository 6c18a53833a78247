"""Run caucase processes on a faked clock (libfaketime), so that a test carries a server or
a client past certificate expiry, CRL expiry or a CA rollover without waiting for it.

The shipped programs have no time override: the clock is moved from outside, by preloading
libfaketime (Debian's `libfaketime`, installed by tests/system-deps.sh). A `FakeTime` owns a
timestamp file holding an offset from the real clock; every process started with its
`env()` re-reads that file at each clock call (FAKETIME_NO_CACHE), so `advance()` moves
them all at once, and the test knows their "now" (`now()`).

A jump cannot shorten a nap already begun (caucased's main loop and the updater sleep until
a deadline computed beforehand): for those, `FakeTime(rate=R)` makes the clock, and every
timed wait of the process (select, poll, sleep, socket timeouts), R times faster. Each
process then counts from its own start, so `now()` is not known; wait on the event instead.

What libfaketime 0.9.10 (Debian bookworm) gets wrong, and how the two kinds of processes
avoid it:
- with a faked monotonic clock, Python's timed lock waits (Event.wait(timeout),
  Lock.acquire(timeout=...): sem_clockwait, which libfaketime does not wrap) wait for ever:
  the threaded caucased runs on the real monotonic clock (`Role.SERVER`);
- with the real monotonic clock, time.sleep (clock_nanosleep with TIMER_ABSTIME) fails with
  EINVAL: the clients, which sleep and have no such lock waits, keep a faked monotonic
  clock (`Role.CLIENT`).
tests/test_support_faketime.py checks that each role's clock jumps and its waits keep
their length, so that a libfaketime upgrade changing either shows there first.

A `Timeline` puts several client processes and a caucased on one clock running R times
faster than the real one, whenever each was started.
"""

from __future__ import annotations

import datetime
import enum
import glob
import os
import threading
import time
from pathlib import Path

from caucase.clock import from_timestamp, utcnow

LIBRARY_PATTERNS = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
)


class Role(enum.Enum):
    SERVER = "server"  # threads and timed lock waits: real monotonic clock
    CLIENT = "client"  # time.sleep: faked monotonic clock


def library() -> str:
    """The multi-threaded libfaketime (caucased serves from many threads)."""
    for pattern in LIBRARY_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise RuntimeError("libfaketime is not installed: run tests/system-deps.sh")


class FakeTime:
    """One faked clock, shared by every process started with its `env()`."""

    def __init__(
        self,
        directory: Path,
        rate: float | None = None,
        offset: datetime.timedelta = datetime.timedelta(0),
    ) -> None:
        self.path = directory / "faketime.rc"
        self.rate = rate
        self._offset = offset
        directory.mkdir(parents=True, exist_ok=True)
        self._write()

    def _write(self) -> None:
        """Atomically: a process reading the file mid-write would see no offset at all."""
        spec = f"{round(self._offset.total_seconds()):+d}"  # whole seconds: no locale
        if self.rate is not None:
            spec += f" x{self.rate:g}"
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(spec + "\n")
        os.replace(temporary, self.path)

    def env(self, role: Role, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a process running on this clock."""
        env = dict(os.environ if base is None else base)
        env.update(
            LD_PRELOAD=library(),
            FAKETIME_TIMESTAMP_FILE=str(self.path),
            FAKETIME_NO_CACHE="1",
            FAKETIME_DONT_FAKE_MONOTONIC="1" if role is Role.SERVER else "0",
        )
        return env

    def advance(self, **delta: float) -> datetime.datetime:
        """Move every process on this clock forward (timedelta keywords); their new now."""
        self._offset += datetime.timedelta(**delta)
        self._write()
        return self.now()

    def now(self) -> datetime.datetime:
        """What the processes' clock reads (not defined under a rate)."""
        if self.rate is not None:
            raise RuntimeError("under a rate each process counts from its own start")
        return utcnow() + self._offset


class Timeline:
    """One clock `rate` times faster than the real one, for processes started at different
    moments: the clients read it to within `rate` times their start-up delay (libfaketime
    counts a rate from each process's start, so each client gets a timestamp file of its
    own, whose offset makes up for when it started); caucased, which keeps real timeouts,
    runs without a rate, and a thread of the test jumps its clock every `step` seconds to
    where the timeline is (never ahead: what it issues is valid for the clients at once).
    A context manager: the thread runs inside it."""

    def __init__(self, directory: Path, rate: float, step: float = 0.05) -> None:
        self._directory = directory
        self.rate = rate
        self._step = step
        self._origin = time.time()
        self._server = FakeTime(directory / "server")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def now(self) -> datetime.datetime:
        return from_timestamp(self._origin + self.rate * (time.time() - self._origin))

    def client_env(self, name: str, role: Role = Role.CLIENT) -> dict[str, str]:
        """The environment of a client started right after this call, on the timeline."""
        ahead = datetime.timedelta(seconds=(self.rate - 1) * (time.time() - self._origin))
        return FakeTime(self._directory / name, rate=self.rate, offset=ahead).env(role)

    def server_env(self) -> dict[str, str]:
        return self._server.env(Role.SERVER)

    def _follow(self) -> None:
        while not self._stop.wait(self._step):
            behind = self.now() - self._server.now()
            if behind >= datetime.timedelta(seconds=1):
                self._server.advance(seconds=int(behind.total_seconds()))

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
