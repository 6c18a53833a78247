"""Signed JSON envelopes (http-api 7): renew and revoke requests, and ca.crt.json items.

The signature covers the payload string as sent, so verifiers never re-serialise it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from caucase import exceptions

DIGEST_LIST = ("sha256", "sha384", "sha512")
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _pss(algorithm: hashes.HashAlgorithm, salt_length: Any) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=salt_length)


def _envelope_message(payload: str, digest: str) -> bytes:
    return payload.encode("utf-8") + digest.encode("ascii") + b" "


def sign_envelope(key: PrivateKeyTypes, payload: str, digest: str = "sha256") -> dict[str, Any]:
    """{"payload", "digest", "signature"}: RSA-PSS, MGF1 same hash, max salt, over
    payload+digest+" " (http-api 7.1). ValueError for a non-RSA key or an unknown digest."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("Envelopes are signed with RSA keys only")
    if digest not in _HASHES:
        raise ValueError(f"Unsupported digest {digest!r}")
    algorithm = _HASHES[digest]()
    signature = key.sign(
        _envelope_message(payload, digest), _pss(algorithm, padding.PSS.MAX_LENGTH), algorithm
    )
    return {
        "payload": payload,
        "digest": digest,
        "signature": binascii.b2a_base64(signature).decode("ascii"),
    }


def verify_envelope(envelope: Mapping[str, Any], public_key: Any) -> None:
    """Raise BadEnvelope unless the envelope signature verifies (any PSS salt length, since
    other clients may not use the maximum)."""
    if not isinstance(envelope, Mapping):
        raise exceptions.BadEnvelope("Envelope is not an object")
    payload, digest, signature = (envelope.get(k) for k in ("payload", "digest", "signature"))
    if not isinstance(payload, str) or not isinstance(signature, str):
        raise exceptions.BadEnvelope("Envelope payload and signature must be strings")
    if not isinstance(digest, str) or digest not in _HASHES:
        raise exceptions.BadEnvelope(f"Unsupported digest {digest!r}")
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise exceptions.BadEnvelope("Envelopes can only be verified with RSA keys")
    try:
        raw_signature = base64.b64decode("".join(signature.split()), validate=True)
        message = _envelope_message(payload, digest)
    except (binascii.Error, ValueError) as error:
        raise exceptions.BadEnvelope(f"Malformed envelope: {error}") from None
    algorithm = _HASHES[digest]()
    try:
        public_key.verify(raw_signature, message, _pss(algorithm, padding.PSS.AUTO), algorithm)
    except InvalidSignature:
        raise exceptions.BadEnvelope("Invalid envelope signature") from None
