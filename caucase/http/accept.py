"""Accepting connections while the process is out of descriptors (or the kernel out of
socket memory).

socketserver's accept loop ignores a failed accept() and selects again at once: the
pending connection keeps the listening socket readable, so for as long as the shortage
lasts the loop spins a core and says nothing. Here a shortage is said once, each retry
waits a little longer (5 ms doubling up to 1 s), and the recovery is said too; other
accept errors (a client that reset before it was accepted) keep socketserver's handling.
"""

from __future__ import annotations

import errno
import time
from typing import Callable

SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FIRST_PAUSE = 0.005
LONGEST_PAUSE = 1.0


class AcceptPacing:
    """The state of one listener's accept loop: how long to wait before the next try."""

    def __init__(
        self,
        listener: str,
        say: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._listener = listener
        self._say = say
        self._sleep = sleep
        self._pause = 0.0

    def failed(self, error: OSError) -> None:
        """After a failed accept(): pause when it was a shortage (said at its start)."""
        if error.errno not in SHORTAGES:
            return
        if not self._pause:
            self._say(f"cannot accept connections on {self._listener}: {error.strerror}")
        self._pause = min(max(self._pause * 2, FIRST_PAUSE), LONGEST_PAUSE)
        self._sleep(self._pause)

    def accepted(self) -> None:
        """After a successful accept(): a shortage, if there was one, is over."""
        if self._pause:
            self._pause = 0.0
            self._say(f"accepting connections on {self._listener} again")
