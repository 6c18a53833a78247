"""Replay nonces (RFC 8555 6.5): what the request verifier needs, and caucased's nonces.

``NonceSource`` is the interface: ``issue`` for the Replay-Nonce header of every answer,
``consume`` once per signed request. ``SignedNonces`` issues nonces that carry their own
proof: the time they were issued, random bits, and an HMAC over both with a secret kept in
the database. Issuing stores nothing, so clients asking for nonces they never use grow
nothing, and every caucased sharing the database accepts the nonces of the others.
Consuming one records it as used (one indexed insert; the unique key refuses a replay);
used nonces are forgotten once they expired, since their time then refuses them anyway.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
import threading
from typing import Protocol

from josepy import b64

from caucase.clock import Clock, to_timestamp, utcnow

DEFAULT_LIFETIME = datetime.timedelta(minutes=15)
SECRET_BYTES = 32
# Nodes' clocks may differ a little: a nonce from slightly ahead is still good.
CLOCK_SKEW = 60
PURGE_INTERVAL = 60
_TIME_BYTES = 8
_RANDOM_BYTES = 8
_TAG_BYTES = 16
_NONCE_BYTES = _TIME_BYTES + _RANDOM_BYTES + _TAG_BYTES


class NonceSource(Protocol):
    def issue(self) -> str:
        """A new nonce, base64url without padding (6.5.1)."""

    def consume(self, nonce: str) -> bool:
        """True once for a nonce this source issued and that has not expired."""

    def authentic(self, nonce: str) -> bool:
        """Whether `nonce` is one this source issued and has not expired (used or not)."""


class UsedNonces(Protocol):
    """Where consumed nonces are recorded (caucase.storage.acme)."""

    def use_nonce(self, nonce: str, expires: int, now: int, purge: bool) -> bool:
        """False when `nonce` was used already; `purge` forgets those expired by `now`."""


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


class SignedNonces:
    """Stateless issuance, one recorded use each; thread-safe."""

    def __init__(
        self,
        secret: bytes,
        used: UsedNonces,
        clock: Clock = utcnow,
        lifetime: datetime.timedelta = DEFAULT_LIFETIME,
    ) -> None:
        self._secret = secret
        self._used = used
        self._clock = clock
        self._lifetime = int(lifetime.total_seconds())
        self._next_purge = 0
        self._lock = threading.Lock()

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:_TAG_BYTES]

    def issue(self) -> str:
        issued = to_timestamp(self._clock()).to_bytes(_TIME_BYTES, "big")
        body = issued + secrets.token_bytes(_RANDOM_BYTES)
        return b64.b64encode(body + self._tag(body)).decode("ascii")

    def _expiry(self, nonce: str, now: int) -> int | None:
        """When `nonce` expires, if it is one of ours and fresh at `now`."""
        try:
            raw = b64.b64decode(nonce)
        except (ValueError, TypeError):
            return None
        # Only the canonical spelling counts: another text decoding to the same bytes
        # would be a second, unrecorded use of the same nonce.
        if len(raw) != _NONCE_BYTES or b64.b64encode(raw).decode("ascii") != nonce:
            return None
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            return None
        issued = int.from_bytes(body[:_TIME_BYTES], "big")
        if not issued - CLOCK_SKEW <= now < issued + self._lifetime:
            return None
        return issued + self._lifetime

    def authentic(self, nonce: str) -> bool:
        return self._expiry(nonce, to_timestamp(self._clock())) is not None

    def consume(self, nonce: str) -> bool:
        now = to_timestamp(self._clock())
        expiry = self._expiry(nonce, now)
        if expiry is None:
            return False
        return self._used.use_nonce(nonce, expiry, now, self._purge_due(now))

    def _purge_due(self, now: int) -> bool:
        with self._lock:
            if now < self._next_purge:
                return False
            self._next_purge = now + PURGE_INTERVAL
            return True
