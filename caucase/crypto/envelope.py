"""Signed JSON envelopes (http-api 7): renew and revoke requests, and ca.crt.json items.

The signature covers the payload string as sent, so verifiers never re-serialise it. The
signed message is `payload || digest || " "` for every key type: RSA signs it with
RSASSA-PSS (as the reference does), ECDSA with the named hash, and Ed25519 with no separate
hash under the digest name "ed25519" (a null digest already means "authenticated by the TLS
user certificate", http-api 7.2).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from caucase import exceptions
from caucase.crypto import keys

# Hashes RSA and ECDSA envelopes may name; the first one is what the reference produces.
DIGEST_LIST = ("sha256", "sha384", "sha512")
ED25519_DIGEST = "ed25519"
DIGEST_NAMES = (*DIGEST_LIST, ED25519_DIGEST)
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _envelope_message(payload: str, digest: str) -> bytes:
    return payload.encode("utf-8") + digest.encode("ascii") + b" "


def default_digest(key: keys.PrivateKey) -> str:
    """The digest name `key` signs with: "sha256" for RSA (the reference's) and P-256,
    "sha384" for P-384, "ed25519" for Ed25519."""
    algorithm = keys.signature_hash(key)
    return ED25519_DIGEST if algorithm is None else algorithm.name


def _algorithm(digest: str, public_key: keys.PublicKey) -> hashes.HashAlgorithm | None:
    """The hash `digest` names for this key; BadEnvelope when the two do not go together."""
    is_ed25519 = keys.signature_hash(public_key) is None
    if digest == ED25519_DIGEST:
        if not is_ed25519:
            raise exceptions.BadEnvelope(
                f"Digest {digest!r} needs an Ed25519 key, not {keys.family(public_key)}"
            )
        return None
    if digest not in _HASHES:
        raise exceptions.BadEnvelope(f"Unsupported digest {digest!r}")
    if is_ed25519:
        raise exceptions.BadEnvelope(
            f"Ed25519 envelopes use the digest {ED25519_DIGEST!r}, not {digest!r}"
        )
    return _HASHES[digest]()


def sign_envelope(key: keys.PrivateKey, payload: str, digest: str | None = None) -> dict[str, Any]:
    """{"payload", "digest", "signature"} over payload+digest+" " (http-api 7.1), with the
    key's default digest unless one is named. ValueError for a digest that does not fit the
    key."""
    digest = default_digest(key) if digest is None else digest
    try:
        algorithm = _algorithm(digest, key.public_key())
    except exceptions.BadEnvelope as error:
        raise ValueError(str(error)) from None
    signature = keys.sign(key, _envelope_message(payload, digest), algorithm)
    return {
        "payload": payload,
        "digest": digest,
        "signature": binascii.b2a_base64(signature).decode("ascii"),
    }


def verify_envelope(envelope: Mapping[str, Any], public_key: Any) -> None:
    """Raise BadEnvelope unless the envelope signature verifies with `public_key`, with a
    digest that fits the key."""
    if not isinstance(envelope, Mapping):
        raise exceptions.BadEnvelope("Envelope is not an object")
    payload, digest, signature = (envelope.get(k) for k in ("payload", "digest", "signature"))
    if not isinstance(payload, str) or not isinstance(signature, str):
        raise exceptions.BadEnvelope("Envelope payload and signature must be strings")
    if not isinstance(digest, str) or digest not in DIGEST_NAMES:
        raise exceptions.BadEnvelope(f"Unsupported digest {digest!r}")
    try:
        keys.kind(public_key)
    except exceptions.UnsupportedKey as error:
        raise exceptions.BadEnvelope(
            f"Envelopes cannot be verified with this key: {error}"
        ) from None
    algorithm = _algorithm(digest, public_key)
    try:
        raw_signature = base64.b64decode("".join(signature.split()), validate=True)
        message = _envelope_message(payload, digest)
    except (binascii.Error, ValueError) as error:
        raise exceptions.BadEnvelope(f"Malformed envelope: {error}") from None
    try:
        keys.verify(public_key, raw_signature, message, algorithm)
    except InvalidSignature:
        raise exceptions.BadEnvelope("Invalid envelope signature") from None
