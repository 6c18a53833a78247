"""External Account Binding (RFC 8555 7.3.4): credentials a CAU user mints, and the check
of the binding a newAccount request carries.

A credential is a key identifier and an HMAC key, printed as ``<kid> <base64url key>``:
what certbot (``--eab-kid``/``--eab-hmac-key``), lego (``--kid``/``--hmac``) and uacme
(``--eab KID:KEY``) take. The binding is a flattened JWS, MAC'ed with that key, whose
payload is the account's JWK: it must be the very key that signed the outer request,
compared by content (RFC 7638 thumbprint) since clients format JSON differently.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from josepy import json_util
from josepy.jwk import JWK, JWKOct

from caucase.acme import keys
from caucase.acme.jws import FlattenedJWS, load_json_object, parse_flattened
from caucase.acme.problems import Malformed, Unauthorized

KID_BYTES = 16
HMAC_KEY_BYTES = 32
# RFC 8555 7.3.4: "MUST indicate a MAC-based algorithm".
MAC_ALGORITHMS = ("HS256", "HS384", "HS512")


@dataclass(frozen=True)
class Credential:
    kid: str
    hmac_key: bytes

    @classmethod
    def generate(cls) -> Credential:
        """A new credential; the kid holds no ``:`` (uacme splits KID:KEY there), and
        neither it nor the encoded key starts with ``-``, which certbot's and other clients'
        option parsers would take for an option (one credential in 32 otherwise)."""
        while True:
            credential = cls(secrets.token_urlsafe(KID_BYTES), secrets.token_bytes(HMAC_KEY_BYTES))
            if not credential.kid.startswith("-") and not credential.encoded_key.startswith("-"):
                return credential

    @property
    def encoded_key(self) -> str:
        return json_util.encode_b64jose(self.hmac_key)

    def line(self) -> str:
        """What ``caucase --new-acme-eab`` prints."""
        return f"{self.kid} {self.encoded_key}"


def decode_hmac_key(encoded: str) -> bytes:
    return json_util.decode_b64jose(encoded)


@dataclass(frozen=True)
class Binding:
    """The binding of a newAccount request, its structure checked, its MAC not yet."""

    kid: str
    jws: FlattenedJWS

    def verify(self, hmac_key: bytes) -> None:
        """unauthorized unless the MAC verifies with the credential's key."""
        try:
            self.jws.verify(JWKOct(key=hmac_key), "externalAccountBinding")
        except Malformed:
            raise Unauthorized("the external account binding's MAC does not verify") from None


def parse_binding(document: object, *, url: str, account_key: JWK) -> Binding:
    """The externalAccountBinding member of a newAccount payload, for a request to `url`
    signed by `account_key`; malformed or unauthorized for anything amiss (7.3.4 steps 1,
    2 and 5; the caller finds the key of ``kid`` and calls ``verify``)."""
    if not isinstance(document, dict):
        raise Malformed("externalAccountBinding is a flattened JWS object")
    jws = parse_flattened(document, "externalAccountBinding")
    protected = jws.protected
    alg_name = protected.get("alg")
    if alg_name not in MAC_ALGORITHMS:
        raise Malformed(f"externalAccountBinding must be MAC'ed with one of {MAC_ALGORITHMS}")
    if "nonce" in protected:
        raise Malformed("externalAccountBinding must not carry a nonce")
    if protected.get("url") != url:
        raise Unauthorized("externalAccountBinding 'url' is not the newAccount URL")
    kid = protected.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Malformed("externalAccountBinding has no 'kid'")
    payload = load_json_object(jws.payload, "externalAccountBinding payload")
    bound_key = keys.load_account_key(payload)
    if not keys.same_key(bound_key, account_key):
        raise Unauthorized("externalAccountBinding binds another key than the account's")
    return Binding(kid, jws)
