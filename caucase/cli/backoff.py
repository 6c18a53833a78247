"""How long caucase-updater waits after a failed pass: capped exponential backoff with full
jitter, so that a fleet whose server went away neither hammers it nor comes back in step.

Attempt n (counting from 1) waits a uniformly random time between FLOOR and
min(cap, BASE * 2 ** (n - 1)): 10 s at first (the reference's fixed retry delay, cli.md
4.4), doubling up to the cap. The floor keeps even an unlucky draw from looping tightly.
"""

from __future__ import annotations

import datetime
import random

BASE = datetime.timedelta(seconds=10)
FLOOR = datetime.timedelta(seconds=1)
CAP = datetime.timedelta(hours=1)


class Backoff:
    """The delays of consecutive failures, reset by a success."""

    def __init__(self, rng: random.Random, cap: datetime.timedelta = CAP) -> None:
        self._rng = rng
        self._cap = max(cap, FLOOR)
        self.attempt = 0

    def ceiling(self, attempt: int) -> datetime.timedelta:
        """The longest wait after failed attempt number `attempt`."""
        if attempt > 40:  # 10 s * 2**40 is past any cap: no need to compute it
            return self._cap
        return max(FLOOR, min(self._cap, BASE * (1 << (attempt - 1))))

    def next_delay(self) -> datetime.timedelta:
        """Count one more failed attempt; how long to wait before the next one."""
        self.attempt += 1
        ceiling = self.ceiling(self.attempt)
        return FLOOR + (ceiling - FLOOR) * self._rng.random()

    def reset(self) -> None:
        self.attempt = 0
