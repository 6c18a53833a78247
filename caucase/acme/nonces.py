"""Replay nonces (RFC 8555 6.5): what the request verifier needs, and one bounded store.

``NonceSource`` is the interface: ``issue`` for the Replay-Nonce header of every answer,
``consume`` once per signed request. ``MemoryNonces`` keeps them in memory with a lifetime
and a capacity, so that clients asking for nonces they never use cannot grow it without
bound: past the capacity the oldest are forgotten, and their holders get badNonce with a
fresh one, which every client retries with (6.5).
"""

from __future__ import annotations

import collections
import datetime
import secrets
import threading
from typing import Protocol

from caucase.clock import Clock, utcnow

NONCE_BYTES = 16
DEFAULT_LIFETIME = datetime.timedelta(minutes=30)
DEFAULT_CAPACITY = 10_000


class NonceSource(Protocol):
    def issue(self) -> str:
        """A new nonce, base64url without padding (6.5.1)."""

    def consume(self, nonce: str) -> bool:
        """True once for a nonce this source issued and that has not expired."""


def new_nonce_value() -> str:
    return secrets.token_urlsafe(NONCE_BYTES)


class MemoryNonces:
    """Nonces of one process, oldest first; thread-safe."""

    def __init__(
        self,
        clock: Clock = utcnow,
        lifetime: datetime.timedelta = DEFAULT_LIFETIME,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._capacity = capacity
        self._expiry: collections.OrderedDict[str, datetime.datetime] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def issue(self) -> str:
        nonce = new_nonce_value()
        now = self._clock()
        with self._lock:
            self._forget_expired(now)
            while len(self._expiry) >= self._capacity:
                self._expiry.popitem(last=False)
            self._expiry[nonce] = now + self._lifetime
        return nonce

    def consume(self, nonce: str) -> bool:
        now = self._clock()
        with self._lock:
            expiry = self._expiry.pop(nonce, None)
        return expiry is not None and now < expiry

    def _forget_expired(self, now: datetime.datetime) -> None:
        """Issue order is expiry order: stop at the first nonce still alive."""
        while self._expiry:
            oldest, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                return
            del self._expiry[oldest]
