"""Replay nonces: each good once, until it expires, accepted by any node sharing the secret;
issuing one stores nothing."""

from __future__ import annotations

import datetime

from josepy import b64

from caucase.acme.nonces import SignedNonces, new_secret
from tests.conftest import FakeClock
from tests.support.acme_jws import UsedNonceSet, memory_nonces


def test_a_nonce_is_consumed_once(clock: FakeClock) -> None:
    nonces = memory_nonces(clock)
    nonce = nonces.issue()

    assert nonces.consume(nonce)
    assert not nonces.consume(nonce)


def test_a_nonce_expires(clock: FakeClock) -> None:
    nonces = SignedNonces(new_secret(), UsedNonceSet(), clock, datetime.timedelta(minutes=5))
    nonce = nonces.issue()

    clock.advance(minutes=5)

    assert not nonces.consume(nonce)


def test_issuing_stores_nothing_and_used_nonces_are_forgotten_once_expired(
    clock: FakeClock,
) -> None:
    used = UsedNonceSet()
    nonces = SignedNonces(new_secret(), used, clock, datetime.timedelta(minutes=5))
    issued = [nonces.issue() for _ in range(10)]
    assert used.used == {}
    assert nonces.consume(issued[0])

    clock.advance(minutes=6)
    assert nonces.consume(nonces.issue())

    assert list(used.used) != [] and issued[0] not in used.used


def test_a_node_sharing_the_secret_accepts_the_nonce_once(clock: FakeClock) -> None:
    secret, used = new_secret(), UsedNonceSet()
    first, second = SignedNonces(secret, used, clock), SignedNonces(secret, used, clock)
    nonce = first.issue()

    assert second.consume(nonce)
    assert not first.consume(nonce)


def test_unknown_forged_and_respelled_nonces_are_refused(clock: FakeClock) -> None:
    nonces = memory_nonces(clock)
    nonce = nonces.issue()
    raw = b64.b64decode(nonce)
    forged = b64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()

    assert not nonces.consume(memory_nonces(clock).issue())
    assert not nonces.consume(forged)
    assert not nonces.consume(nonce + "=")
    assert not nonces.consume("not base64!")
    assert nonces.consume(nonce)


def test_a_nonce_spelled_with_its_unused_bits_set_is_refused(clock: FakeClock) -> None:
    """The same bytes under another last character: a second use of one nonce."""
    nonces = memory_nonces(clock)
    nonce = nonces.issue()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = nonce[:-1] + alphabet[alphabet.index(nonce[-1]) | 3]
    assert b64.b64decode(respelled) == b64.b64decode(nonce)

    assert nonces.consume(respelled) is False
    assert nonces.consume(nonce)


def test_a_nonce_round_trips_through_base64url(clock: FakeClock) -> None:
    """certbot decodes the Replay-Nonce and encodes it again into the JWS header."""
    nonce = memory_nonces(clock).issue()
    assert b64.b64encode(b64.b64decode(nonce)).decode() == nonce
