"""Replay nonces: each good once, until it expires; the store never grows past its bound."""

from __future__ import annotations

import datetime

from josepy import b64

from caucase.acme.nonces import MemoryNonces
from tests.conftest import FakeClock


def test_a_nonce_is_consumed_once(clock: FakeClock) -> None:
    nonces = MemoryNonces(clock)
    nonce = nonces.issue()

    assert nonces.consume(nonce)
    assert not nonces.consume(nonce)


def test_a_nonce_expires(clock: FakeClock) -> None:
    nonces = MemoryNonces(clock, lifetime=datetime.timedelta(minutes=5))
    nonce = nonces.issue()

    clock.advance(minutes=5)

    assert not nonces.consume(nonce)


def test_expired_nonces_are_forgotten(clock: FakeClock) -> None:
    nonces = MemoryNonces(clock, lifetime=datetime.timedelta(minutes=5))
    for _ in range(10):
        nonces.issue()
    clock.advance(minutes=6)

    nonces.issue()

    assert len(nonces) == 1


def test_the_oldest_nonces_give_way_past_the_capacity(clock: FakeClock) -> None:
    nonces = MemoryNonces(clock, capacity=3)
    first = nonces.issue()
    later = [nonces.issue() for _ in range(3)]

    assert len(nonces) == 3
    assert not nonces.consume(first)
    assert all(nonces.consume(nonce) for nonce in later)


def test_a_nonce_round_trips_through_base64url(clock: FakeClock) -> None:
    """certbot decodes the Replay-Nonce and encodes it again into the JWS header."""
    nonce = MemoryNonces(clock).issue()
    assert b64.b64encode(b64.b64decode(nonce)).decode() == nonce
