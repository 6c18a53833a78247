"""The renewal windows of one CA's certificates, as caucased serves them (RFC 9773
renewalInfo), and the requests of operators who pull them forward.

The rule is caucase.renewal's; this module feeds it from storage: the certificate's times
from the renewal index, an early-renewal band an operator stored, the revocation table.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from caucase import renewal
from caucase.clock import Clock, from_timestamp, to_timestamp
from caucase.exceptions import CertificateAuthorityException
from caucase.renewal import RenewalWindow
from caucase.storage import Storage
from caucase.storage.renewal import EarlyRenewal

MINIMUM_SPREAD = datetime.timedelta(seconds=1)
# Beyond this, "early" renewal would be later than the default window of most lifetimes.
MAXIMUM_SPREAD = datetime.timedelta(days=31)


@dataclass(frozen=True)
class ServedWindow:
    """A certificate's window, and why it is not the default one (if it is not)."""

    window: RenewalWindow
    moved_early: bool = False
    revoked: bool = False


@dataclass(frozen=True)
class EarlyRenewalResult:
    """What an early-renewal request did: the band the windows were moved into, the
    serials moved (a count for a whole authority), the serials this CA does not know."""

    band: RenewalWindow
    moved: Sequence[int] | int
    unknown: Sequence[int] = ()


class RenewalSchedule:
    """The windows of the certificates of one CA instance (its storage)."""

    def __init__(self, storage: Storage, clock: Clock, latest: datetime.timedelta) -> None:
        """`latest`: no default window ends later than this before notAfter."""
        self._storage = storage
        self._index = storage.renewal_index
        self._clock = clock
        self._latest = latest

    @property
    def latest(self) -> datetime.timedelta:
        return self._latest

    def window(self, authority_key_id: bytes, serial: int) -> ServedWindow | None:
        """The window of the certificate a certID names; None unless it was issued here
        and has not expired."""
        found = self._index.find(authority_key_id, serial)
        now = self._clock()
        if found is None or found.not_after < to_timestamp(now):
            return None
        if serial in self._storage.revoked_serials(to_timestamp(now)):
            return ServedWindow(renewal.immediate_window(now), revoked=True)
        if found.early is not None:
            band_start = from_timestamp(found.early.start)
            spread = from_timestamp(found.early.end) - band_start
            return ServedWindow(renewal.early_window(band_start, spread, serial), moved_early=True)
        window = renewal.suggested_window(
            from_timestamp(found.not_before), from_timestamp(found.not_after), serial, self._latest
        )
        return ServedWindow(window)

    def _request(self, spread: datetime.timedelta, requested_by: str) -> EarlyRenewal:
        if not MINIMUM_SPREAD <= spread <= MAXIMUM_SPREAD:
            raise CertificateAuthorityException(
                f"spread must be at least 1 second and at most {MAXIMUM_SPREAD.days} days"
            )
        now = to_timestamp(self._clock())
        return EarlyRenewal(now, now + int(spread.total_seconds()), requested_by, now)

    def renew_early(
        self, serials: Sequence[int], spread: datetime.timedelta, requested_by: str
    ) -> EarlyRenewalResult:
        """Move the windows of these certificates to now, spread over `spread`."""
        early = self._request(spread, requested_by)
        moved = self._index.move_serials(serials, early, early.requested_at)
        unknown = [serial for serial in dict.fromkeys(serials) if serial not in moved]
        return EarlyRenewalResult(_band(early), moved, unknown)

    def renew_early_all(
        self,
        spread: datetime.timedelta,
        requested_by: str,
        issued_before: datetime.datetime | None = None,
    ) -> EarlyRenewalResult:
        """Move the windows of every valid certificate (issued before `issued_before`,
        when given) to now, spread over `spread`."""
        early = self._request(spread, requested_by)
        before = early.requested_at + 1 if issued_before is None else to_timestamp(issued_before)
        count = self._index.move_all(early, before, early.requested_at)
        return EarlyRenewalResult(_band(early), count)


def _band(early: EarlyRenewal) -> RenewalWindow:
    return RenewalWindow(from_timestamp(early.start), from_timestamp(early.end))
