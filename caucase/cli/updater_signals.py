"""The signals caucase-updater obeys.

SIGINT, SIGTERM: stop and exit 0, at once (in a sleep or a request: nothing is half done
there), except inside `critical()` blocks (files being replaced, the hook running), which
are finished first. SIGHUP: check now, renewing if inside the renewal window. SIGUSR1:
renew now, whatever the window. Both cut a sleep short, or apply to the next pass when
one is under way.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType


class Shutdown(BaseException):
    """SIGINT or SIGTERM arrived: leave quietly with status 0 (not an error)."""


class WakeUp(BaseException):
    """SIGHUP or SIGUSR1 arrived during a sleep: the pass it asks for is due now."""


class SignalGuard:
    """Turns the signals into exceptions and requests for the next pass."""

    def __init__(self) -> None:
        self._stop_requested = False
        self._depth = 0
        self._sleeping = False
        self.check_requested = False
        self.renewal_requested = False

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop)
        signal.signal(signal.SIGHUP, self._check)
        signal.signal(signal.SIGUSR1, self._renew)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested = True
        if not self._depth:
            raise Shutdown

    def _check(self, signum: int, frame: FrameType | None) -> None:
        self.check_requested = True
        self._wake()

    def _renew(self, signum: int, frame: FrameType | None) -> None:
        self.renewal_requested = True
        self._wake()

    def _wake(self) -> None:
        if self._sleeping:
            self._sleeping = False
            raise WakeUp

    @property
    def wake_requested(self) -> bool:
        return self.check_requested or self.renewal_requested

    @contextlib.contextmanager
    def sleeping(self) -> Iterator[None]:
        """A sleep that SIGHUP/SIGUSR1 cut short (WakeUp); at once when one came before."""
        self._sleeping = True
        try:
            if self.wake_requested:
                raise WakeUp
            yield
        finally:
            self._sleeping = False

    def take_requests(self) -> tuple[bool, bool]:
        """(check requested, renewal requested) since the last pass, now cleared."""
        requests = (self.check_requested, self.renewal_requested)
        self.check_requested = self.renewal_requested = False
        return requests

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Defer shutdown while files are being replaced or the hook runs."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._stop_requested:
                raise Shutdown
