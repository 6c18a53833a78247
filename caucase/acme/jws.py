"""Verification of ACME requests: flattened JWS over JSON (RFC 8555 6.2-6.5).

The order of the checks is deliberate: structure and algorithm first (cheap, no state),
then the ``url`` header against the URL actually requested, then the key (``jwk`` or the
``kid`` of a known account), then the signature, and only then the nonce is consumed, so
that a forged request cannot burn the nonces of honest clients.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from josepy import errors
from josepy.jwa import JWASignature
from josepy.jwk import JWK

from caucase.acme import keys
from caucase.acme.nonces import NonceSource
from caucase.acme.problems import BadNonce, Malformed, PayloadTooLarge, Unauthorized

# Far above any real request (a finalize with a 4096-bit CSR is ~3 KiB, a keyChange
# nests a JWS with a JWK), far below what could hurt.
MAX_REQUEST_BYTES = 64 * 1024
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_FLATTENED_MEMBERS = frozenset({"protected", "payload", "signature"})
# The order the members were checked in before they were decoded once: the first bad one
# names the problem.
_MEMBER_ORDER = sorted(_FLATTENED_MEMBERS)


class KeySource(enum.Enum):
    """Which header names the signing key (6.2): ``jwk`` for newAccount and revocation by
    certificate key, ``kid`` (an account URL) for everything else."""

    JWK = "jwk"
    KID = "kid"
    EITHER = "either"


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose signature, url and nonce have been checked."""

    url: str
    jwk: JWK
    kid: str | None
    payload: dict[str, Any] | None
    """None for POST-as-GET (6.3): the payload was the empty string."""
    protected: dict[str, Any]

    @property
    def nonce(self) -> str:
        return str(self.protected["nonce"])


AccountKeyLookup = Callable[[str], JWK]
"""kid (account URL) -> that account's key; raises accountDoesNotExist or unauthorized."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise Malformed(f"duplicate member {name!r}")
        result[name] = value
    return result


def load_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """A JSON object with unique member names; malformed otherwise."""
    try:
        value = json.loads(data, object_pairs_hook=_reject_duplicates)
    except (ValueError, RecursionError):
        raise Malformed(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not a JSON object")
    return value


def decode_base64url(value: object, what: str) -> bytes:
    """Unpadded base64url (RFC 7515 2), strictly: the standard library's decoder skips
    characters outside the alphabet, which would let two texts mean the same bytes."""
    if not isinstance(value, str) or not _BASE64URL.fullmatch(value):
        raise Malformed(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except binascii.Error:
        raise Malformed(f"{what} is not base64url") from None


@dataclass(frozen=True)
class FlattenedJWS:
    """A flattened JWS (RFC 7515 7.2.2) whose parts are base64url and whose protected
    header is a JSON object; nothing about its signature is known yet."""

    document: dict[str, Any]
    protected: dict[str, Any]
    payload: bytes
    """Decoded, not yet to be trusted: ``verify`` returns it once the signature verifies."""
    signature: bytes

    def verify(self, jwk: JWK, what: str = "request") -> bytes:
        """The payload, once the single signature verifies with `jwk` under the protected
        header's algorithm (which the caller checked), over the parts as they were sent
        (RFC 7515 5.2); malformed otherwise."""
        document = self.document
        try:
            alg = JWASignature.from_json(self.protected.get("alg"))
        except (errors.Error, KeyError, TypeError):
            raise Malformed(f"{what} names no known algorithm") from None
        message = f"{document['protected']}.{document['payload']}".encode("ascii")
        try:
            valid = alg.verify(jwk.key, message, self.signature)
        except (errors.Error, TypeError, ValueError, AttributeError):
            valid = False
        if not valid:
            raise Malformed(f"{what} signature does not verify")
        return self.payload


def parse_flattened(body: bytes | str | dict[str, Any], what: str = "request") -> FlattenedJWS:
    """A flattened JWS with a protected header only: no unprotected header, exactly one
    signature (RFC 8555 6.2); `body` is its JSON text or the already decoded object."""
    document = body if isinstance(body, dict) else load_json_object(body, f"{what} body")
    if document.keys() != _FLATTENED_MEMBERS:
        raise Malformed(f"{what} must be a flattened JWS with protected, payload and signature")
    decoded = {name: decode_base64url(document[name], f"JWS {name}") for name in _MEMBER_ORDER}
    protected = load_json_object(decoded["protected"], "header")
    if "crit" in protected:
        # RFC 7515 4.1.11: critical extensions we do not understand (we understand none).
        raise Malformed(f"{what} has critical header extensions")
    return FlattenedJWS(document, protected, decoded["payload"], decoded["signature"])


def _string_member(protected: dict[str, Any], name: str) -> str:
    value = protected.get(name)
    if not isinstance(value, str) or not value:
        raise Malformed(f"protected header has no {name!r}")
    return value


def _signing_key(
    protected: dict[str, Any], source: KeySource, lookup: AccountKeyLookup | None
) -> tuple[JWK, str | None]:
    has_jwk, has_kid = "jwk" in protected, "kid" in protected
    if has_jwk == has_kid:
        raise Malformed("protected header must hold exactly one of 'jwk' and 'kid'")
    if has_jwk:
        if source is KeySource.KID:
            raise Malformed("this request must be signed by an account ('kid')")
        return keys.load_account_key(protected["jwk"]), None
    if source is KeySource.JWK or lookup is None:
        raise Malformed("this request must carry its key ('jwk')")
    kid = _string_member(protected, "kid")
    return lookup(kid), kid


def _payload(payload: bytes) -> dict[str, Any] | None:
    if payload == b"":
        return None
    return load_json_object(payload, "payload")


def verify_request(
    body: bytes,
    *,
    url: str,
    nonces: NonceSource,
    source: KeySource = KeySource.KID,
    lookup: AccountKeyLookup | None = None,
    spend: bool = True,
) -> VerifiedRequest:
    """Check an ACME POST body for the request URL `url`; raise the RFC error type.

    Without `spend`, the nonce is only checked to be one of ours, still fresh: the caller
    spends it (``nonces.consume``) in the transaction of what the request changes."""
    if len(body) > MAX_REQUEST_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_REQUEST_BYTES} bytes")
    jws = parse_flattened(body)
    protected = jws.protected
    alg = keys.signature_algorithm(protected.get("alg"))
    nonce = _string_member(protected, "nonce")
    if _string_member(protected, "url") != url:
        # 6.4: a request replayed to another resource is unauthorized.
        raise Unauthorized("the 'url' header does not match the request URL")
    jwk, kid = _signing_key(protected, source, lookup)
    keys.check_fits(jwk, alg)
    payload = jws.verify(jwk)
    if not (nonces.consume(nonce) if spend else nonces.authentic(nonce)):
        raise BadNonce("unknown, expired or already used nonce")
    return VerifiedRequest(url, jwk, kid, _payload(payload), protected)
