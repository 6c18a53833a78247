"""The one source of "now" for every component, so that tests can move time."""

from __future__ import annotations

import datetime
from typing import Callable

Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    """Current time as an aware UTC datetime: the production clock."""
    return datetime.datetime.now(datetime.timezone.utc)


def to_timestamp(value: datetime.datetime) -> int:
    """Integer Unix seconds, truncated, as every stored date is."""
    return int(value.timestamp())


def from_timestamp(value: float) -> datetime.datetime:
    """Aware UTC datetime from Unix seconds."""
    return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)


def as_utc(moment: datetime.datetime) -> datetime.datetime:
    """Naive datetimes are taken as UTC, so they compare with cryptography's aware ones."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment
