"""Many in-process caucase-updaters on one simulated clock, shared with a real caucased.

The clock is the server's faked one (a `FakeTime` that only jumps: caucased keeps its real
monotonic clock and real timeouts), which follows the simulated one within a minute.
Each updater runs in a thread of its own with the injected clock and a `sleep` that hands
the turn back to the scheduler; one updater runs at a time. When every updater sleeps, the
scheduler jumps the clock (the server's with it) to the earliest wake-up and gives that
updater the turn: days pass in the time the requests take. Events (stopping or starting
the server) run at their simulated time, between two turns.

An updater leaves the simulation when its `done` condition holds at a sleep (it raises
`Finished` there); any other end (an exception, a return) is a failure, kept in `failures`.
"""

from __future__ import annotations

import datetime
import heapq
import io
import itertools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from caucase.clock import utcnow
from tests.support.faketime import FakeTime

# How far the server's clock may lag behind the simulated one (each write of its clock
# costs a file replace). Never ahead: what it issues is valid for the updaters at once.
SERVER_LAG = datetime.timedelta(minutes=1)
# Real seconds a turn may take (an updater's pass, real requests) before the test fails.
TURN_TIMEOUT = 120.0


class Finished(BaseException):
    """Ends an updater's thread from its sleep: its part of the scenario is over."""


class TimedOutput(io.StringIO):
    """An updater's stdout, each line kept with the simulated time it was written at."""

    def __init__(self, clock: Callable[[], datetime.datetime]) -> None:
        super().__init__()
        self._clock = clock
        self.lines: list[tuple[datetime.datetime, str]] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        self.lines.extend((self._clock(), line) for line in complete)
        return super().write(text)

    def times_of(self, prefix: str) -> list[datetime.datetime]:
        return [moment for moment, line in self.lines if line.startswith(prefix)]


@dataclass
class _Actor:
    name: str
    done: Callable[[], bool]
    wake: datetime.datetime | None
    turn: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


@dataclass(order=True)
class _Event:
    moment: datetime.datetime
    order: int
    action: Callable[[], None] = field(compare=False)


class Simulation:
    """The scheduler: one simulated clock, actors taking turns, timed events."""

    def __init__(self, fake: FakeTime) -> None:
        self._fake = fake
        self._offset = self._written = fake.now() - utcnow()
        self._actors: dict[str, _Actor] = {}
        self._idle = threading.Event()  # set while no actor has the turn
        self._idle.set()
        self._events: list[_Event] = []
        self._order = itertools.count()
        self.failures: dict[str, BaseException] = {}

    def now(self) -> datetime.datetime:
        return utcnow() + self._offset

    def _jump_to(self, moment: datetime.datetime, *, exactly: bool = False) -> None:
        """Move the clock to `moment` (whole seconds, never back); the server's follows
        within SERVER_LAG, or at once (`exactly`, for events)."""
        ahead = (moment - self.now()).total_seconds()
        if ahead > 0:
            self._offset += datetime.timedelta(seconds=math.ceil(ahead))
        lag = self._offset - self._written
        if lag > (datetime.timedelta(0) if exactly else SERVER_LAG):
            self._fake.advance(seconds=lag.total_seconds())
            self._written = self._offset

    def at(self, moment: datetime.datetime, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, _Event(moment, next(self._order), action))

    def sleeper(self, name: str) -> Callable[[float], None]:
        """The `sleep` of actor `name`: give the turn back until the clock reaches it."""

        def sleep(seconds: float) -> None:
            actor = self._actors[name]
            if actor.done():
                raise Finished
            actor.wake = self.now() + datetime.timedelta(seconds=seconds)
            self._yield_turn(actor)
            if actor.done():
                raise Finished

        return sleep

    def _yield_turn(self, actor: _Actor) -> None:
        actor.turn.clear()
        self._idle.set()
        actor.turn.wait()

    def add(self, name: str, target: Callable[[], object], done: Callable[[], bool]) -> None:
        """An actor whose first turn is due now."""
        actor = _Actor(name, done, wake=self.now())
        self._actors[name] = actor

        def body() -> None:
            actor.turn.wait()
            try:
                if actor.done():
                    raise Finished
                target()
            except Finished:
                pass
            except BaseException as error:  # the scenario's failure, reported by the test
                self.failures[name] = error
            else:
                self.failures[name] = RuntimeError(f"{name} returned")
            finally:
                actor.wake = None
                self._idle.set()

        actor.thread = threading.Thread(target=body, name=name, daemon=True)
        actor.thread.start()

    def _give_turn(self, actor: _Actor) -> None:
        """Let `actor` run until it sleeps again or ends."""
        actor.wake = None
        self._idle.clear()
        actor.turn.set()
        if not self._idle.wait(TURN_TIMEOUT):
            raise AssertionError(f"{actor.name} kept its turn for {TURN_TIMEOUT} s")

    def _next_due(self, end: datetime.datetime) -> _Event | _Actor | None:
        """The event or the sleeping actor due first, if it is due by `end`."""
        sleeping = [actor for actor in self._actors.values() if actor.wake is not None]
        actor = min(sleeping, key=lambda a: a.wake or end, default=None)
        event = self._events[0] if self._events else None
        if event is not None and (actor is None or event.moment <= (actor.wake or end)):
            return event if event.moment <= end else None
        if actor is not None and actor.wake is not None and actor.wake <= end:
            return actor
        return None

    def run_until(self, end: datetime.datetime) -> None:
        """Turns and events in time order, until nothing is due by `end`."""
        while True:
            due = self._next_due(end)
            if due is None:
                return
            if isinstance(due, _Event):
                heapq.heappop(self._events)
                self._jump_to(due.moment, exactly=True)
                due.action()
                continue
            assert due.wake is not None
            self._jump_to(due.wake)
            self._give_turn(due)

    def stop_all(self) -> None:
        """End every actor still in the simulation, at its turn."""
        for actor in self._actors.values():
            actor.done = lambda: True
            assert actor.thread is not None
            if actor.thread.is_alive():
                self._give_turn(actor)
                actor.thread.join(TURN_TIMEOUT)
