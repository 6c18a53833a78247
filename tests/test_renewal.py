"""The renewal-window rule of caucase.renewal, alone: bands, placement, caps, early windows."""

from __future__ import annotations

import datetime
import random
from collections import Counter

import pytest

from caucase import renewal
from caucase.renewal import RenewalWindow

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
THRESHOLD = 31 * DAY


def test_the_default_window_is_an_eighth_of_the_band_from_half_to_two_thirds() -> None:
    lifetime = 93 * DAY
    for serial in range(1, 200):
        window = renewal.suggested_window(T0, T0 + lifetime, serial, THRESHOLD)

        assert T0 + lifetime / 2 <= window.start < window.end <= T0 + lifetime * 2 / 3
        assert window.end - window.start == lifetime / 6 / 8
        assert window.end <= T0 + lifetime - THRESHOLD


def test_the_same_serial_always_gets_the_same_window() -> None:
    first = renewal.suggested_window(T0, T0 + 90 * DAY, 12345, THRESHOLD)
    assert renewal.suggested_window(T0, T0 + 90 * DAY, 12345, THRESHOLD) == first
    assert renewal.suggested_window(T0, T0 + 90 * DAY, 12346, THRESHOLD) != first


def test_sequential_serials_are_spread_evenly_over_the_band() -> None:
    deciles = Counter(int(renewal.placement(serial) * 10) for serial in range(10_000))
    assert set(deciles) == set(range(10))
    assert all(900 < count < 1100 for count in deciles.values()), deciles


def test_the_threshold_caps_both_ends_of_the_band() -> None:
    # 60 days: the band (30 to 40 days) ends after notAfter - 31 days (29 days): both ends
    # are capped, the band closes, the window is the shortest one ending at the cap.
    window = renewal.suggested_window(T0, T0 + 60 * DAY, 7, THRESHOLD)
    assert window == RenewalWindow(T0 + 29 * DAY - renewal.MINIMUM_WIDTH, T0 + 29 * DAY)
    # 80 days: the band runs from 40 to 49 days, its end capped.
    window = renewal.suggested_window(T0, T0 + 80 * DAY, 7, THRESHOLD)
    assert window.start >= T0 + 40 * DAY and window.end <= T0 + 49 * DAY


def test_a_lifetime_shorter_than_the_threshold_is_due_at_once() -> None:
    """As with the reference, which renews such a certificate at every wake-up."""
    window = renewal.suggested_window(T0, T0 + 10 * DAY, 7, THRESHOLD)
    assert window.end == T0 + 10 * DAY - THRESHOLD < T0


def test_an_early_window_lies_within_the_spread() -> None:
    spread = datetime.timedelta(hours=6)
    windows = [renewal.early_window(T0, spread, serial) for serial in range(100)]
    assert all(T0 <= window.start < window.end <= T0 + spread for window in windows)
    assert len({window.start for window in windows}) == 100


def test_a_spread_shorter_than_a_minute_is_the_whole_window() -> None:
    window = renewal.early_window(T0, datetime.timedelta(seconds=7), 1)
    assert window == RenewalWindow(T0, T0 + datetime.timedelta(seconds=7))


def test_a_revoked_certificate_is_due_now() -> None:
    assert renewal.immediate_window(T0) == RenewalWindow(T0, T0 + renewal.MINIMUM_WIDTH)


def test_a_window_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError):
        RenewalWindow(T0, T0)


def test_capping_keeps_a_valid_window() -> None:
    window = RenewalWindow(T0, T0 + DAY)
    assert window.capped(T0 + 2 * DAY) == window
    assert window.capped(T0 + DAY / 2) == RenewalWindow(T0, T0 + DAY / 2)
    assert window.capped(T0 - DAY) == RenewalWindow(T0 - DAY - renewal.MINIMUM_WIDTH, T0 - DAY)


def test_random_moments_cover_the_window(rng: random.Random) -> None:
    window = RenewalWindow(T0, T0 + DAY)
    moments = [window.random_moment(rng) for _ in range(1000)]
    assert all(window.start <= moment <= window.end for moment in moments)
    quarters = Counter(int((moment - T0) / (DAY / 4)) for moment in moments)
    assert all(180 < quarters[quarter] < 320 for quarter in range(4)), quarters
