"""ACME requests signed the way certbot signs them: with certbot's own ``acme`` library.

Tests of the server's JWS checks build their valid requests here, and their hostile ones
by editing what these return, so that what is accepted is exactly what a real client sends.
"""

from __future__ import annotations

import json
from typing import Any

from acme import jws as acme_jws
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from josepy import b64, jwa
from josepy.jwk import JWK, JWKEC, JWKRSA

from caucase.acme.keys import JWKOKP, EdDSA
from caucase.acme.nonces import SignedNonces, new_secret
from caucase.clock import Clock, utcnow

ALGORITHMS = ("RS256", "ES256", "ES384", "EdDSA")


class UsedNonceSet:
    """Consumed nonces in memory (caucased records them in its database)."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    def use_nonce(self, nonce: str, expires: int, now: int, purge: bool) -> bool:
        if purge:
            self.used = {key: end for key, end in self.used.items() if end >= now}
        if nonce in self.used:
            return False
        self.used[nonce] = expires
        return True


def memory_nonces(clock: Clock = utcnow) -> SignedNonces:
    """Nonces of a fresh secret, their uses recorded in memory."""
    return SignedNonces(new_secret(), UsedNonceSet(), clock)


def account_key(alg: str) -> tuple[JWK, jwa.JWASignature]:
    """A fresh private account key for `alg`, and the josepy algorithm."""
    if alg == "RS256":
        return JWKRSA(key=rsa.generate_private_key(65537, 2048)), jwa.RS256
    if alg == "ES256":
        return JWKEC(key=ec.generate_private_key(ec.SECP256R1())), jwa.ES256
    if alg == "ES384":
        return JWKEC(key=ec.generate_private_key(ec.SECP384R1())), jwa.ES384
    if alg == "EdDSA":
        return JWKOKP(key=ed25519.Ed25519PrivateKey.generate()), EdDSA
    raise ValueError(alg)


def sign(
    payload: dict[str, Any] | bytes | None,
    key: JWK,
    alg: jwa.JWASignature,
    *,
    url: str,
    nonce: str,
    kid: str | None = None,
) -> dict[str, Any]:
    """The flattened JWS object (as JSON-ready dict) of one request."""
    if payload is None:
        raw = b""
    elif isinstance(payload, bytes):
        raw = payload
    else:
        raw = json.dumps(payload).encode()
    signed = acme_jws.JWS.sign(raw, key=key, alg=alg, nonce=b64.b64decode(nonce), url=url, kid=kid)
    return dict(signed.to_partial_json(flat=True))


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def protected_of(document: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(b64.b64decode(document["protected"])))


def with_protected(document: dict[str, Any], protected: dict[str, Any]) -> dict[str, Any]:
    """`document` with another protected header (and so a signature that no longer fits)."""
    edited = dict(document)
    edited["protected"] = b64.b64encode(json.dumps(protected).encode()).decode()
    return edited


def sign_raw(
    protected: dict[str, Any], payload: bytes, key: JWK, alg: jwa.JWASignature
) -> dict[str, Any]:
    """A flattened JWS over any protected header, validly signed: for requests that a
    client library would refuse to build (no url, both jwk and kid, ...)."""
    protected_b64 = b64.b64encode(json.dumps(protected).encode())
    payload_b64 = b64.b64encode(payload)
    signature = alg.sign(key.key, protected_b64 + b"." + payload_b64)
    return {
        "protected": protected_b64.decode(),
        "payload": payload_b64.decode(),
        "signature": b64.b64encode(signature).decode(),
    }
