"""Renewal windows: when a certificate should be renewed, one rule for the whole project.

caucased serves these windows (``GET {ca}/renewal-info/<certID>``, the renewalInfo of
RFC 9773 that ACME clients read too) and caucase-updater renews at a random moment inside
the one it is given. The rule:

- a certificate's *band* runs from one half to two thirds of its lifetime, both ends
  capped at ``latest`` before its notAfter (caucased's ``--threshold``), so that no window
  ends later than the reference updater's fixed threshold (31 days by default) renews;
- its *window* is one eighth of that band, placed inside it by a hash of the serial: a
  fleet issued in one minute gets windows spread evenly over the band (days for the
  default lifetime), whichever moment of its window each client picks;
- an operator may move windows forward (``caucase --renew-early``): the band becomes
  "from the request to the request plus the spread", the window placed in it the same way;
- a revoked certificate's window is now.

Pure functions of their arguments: no clock, no storage.
"""

from __future__ import annotations

import datetime
import hashlib
import random
from dataclasses import dataclass

BAND_START = 1 / 2
BAND_END = 2 / 3
# How much of the band one certificate's window covers: small enough that the renewals of
# a fleet are close to evenly spread over the whole band (a wider window piles them up in
# the middle), wide enough that clients still pick a moment of their own.
WINDOW_SHARE = 1 / 8
# RFC 9773 4.2: a window's end must follow its start; timestamps are sent to the second.
MINIMUM_WIDTH = datetime.timedelta(minutes=1)


@dataclass(frozen=True)
class RenewalWindow:
    """When to renew: any moment from `start` to `end`."""

    start: datetime.datetime
    end: datetime.datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("a renewal window ends after it starts")

    def random_moment(self, rng: random.Random) -> datetime.datetime:
        """A moment drawn uniformly inside the window (RFC 9773 4.2's client choice)."""
        return self.start + (self.end - self.start) * rng.random()

    def capped(self, latest: datetime.datetime) -> RenewalWindow:
        """This window, ending no later than `latest` (and then at least MINIMUM_WIDTH long,
        so a window already past stays a valid one, in the past)."""
        end = min(self.end, latest)
        start = min(self.start, end - MINIMUM_WIDTH)
        return RenewalWindow(start, end)


def placement(serial: int) -> float:
    """Where a certificate's window sits in its band, in [0, 1): a hash of the serial, so
    that sequential or clustered serials are spread as evenly as random ones."""
    digest = hashlib.sha256(serial.to_bytes((serial.bit_length() + 8) // 8, "big")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def placed_window(
    band_start: datetime.datetime, band_end: datetime.datetime, serial: int
) -> RenewalWindow:
    """The window of certificate `serial` inside the band: WINDOW_SHARE of it, but at
    least MINIMUM_WIDTH (the whole band when it is shorter)."""
    band = band_end - band_start
    if band <= datetime.timedelta(0):
        band = MINIMUM_WIDTH
    width = max(band * WINDOW_SHARE, min(MINIMUM_WIDTH, band))
    start = band_start + (band - width) * placement(serial)
    return RenewalWindow(start, start + width)


def suggested_window(
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    serial: int,
    latest: datetime.timedelta,
) -> RenewalWindow:
    """The default window, placed in the band from one half to two thirds of the lifetime
    whose ends are capped at `latest` before notAfter. A band the cap closes (a lifetime
    shorter than about three times `latest`) leaves the shortest window ending at the cap:
    past already when the whole lifetime is shorter than `latest`, as with the reference."""
    lifetime = not_after - not_before
    cap = not_after - latest
    band_start = min(not_before + lifetime * BAND_START, cap)
    band_end = min(not_before + lifetime * BAND_END, cap)
    if band_end - band_start < MINIMUM_WIDTH:
        return RenewalWindow(band_end - MINIMUM_WIDTH, band_end)
    return placed_window(band_start, band_end, serial)


def early_window(
    requested_at: datetime.datetime, spread: datetime.timedelta, serial: int
) -> RenewalWindow:
    """The window of a certificate whose renewal an operator pulled forward at
    `requested_at`, the fleet spread over `spread` from then."""
    return placed_window(requested_at, requested_at + spread, serial)


def immediate_window(now: datetime.datetime) -> RenewalWindow:
    """Renew now (a revoked certificate): the shortest valid window, starting now."""
    return RenewalWindow(now, now + MINIMUM_WIDTH)
