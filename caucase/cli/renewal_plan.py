"""When caucase-updater renews its certificate: at a random moment of the window the server
suggests (RFC 9773 4.2's client rule), ending no later than --threshold before notAfter;
without a suggestion, once --threshold is reached (the reference's rule)."""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass

from cryptography import x509

from caucase.renewal import RenewalWindow


@dataclass(frozen=True)
class Plan:
    """The window in force (None: the threshold rule) and the moment drawn in it."""

    window: RenewalWindow | None
    moment: datetime.datetime

    def due(self, now: datetime.datetime, *, inside_window: bool = False) -> bool:
        """Whether to renew now: the moment came, or (`inside_window`, for a check an
        operator asked for) the window opened."""
        if inside_window and self.window is not None:
            return now >= self.window.start
        return now >= self.moment


class RenewalPlanner:
    """Draws the renewal moment once per certificate and window, so that checking again
    (every few hours) does not draw again, which would pull renewals towards the start."""

    def __init__(self, rng: random.Random, threshold: datetime.timedelta) -> None:
        self._rng = rng
        self._threshold = threshold
        self._drawn: tuple[tuple[int, RenewalWindow], datetime.datetime] | None = None

    def plan(self, certificate: x509.Certificate, suggested: RenewalWindow | None) -> Plan:
        latest = certificate.not_valid_after_utc - self._threshold
        if suggested is None:
            return Plan(None, latest)
        window = suggested.capped(latest)
        key = (certificate.serial_number, window)
        if self._drawn is None or self._drawn[0] != key:
            self._drawn = (key, window.random_moment(self._rng))
        return Plan(window, self._drawn[1])
