"""Account keys: JWKs as josepy reads them, the algorithms we accept, and key identity.

josepy (certbot's JOSE library) reads RSA and EC keys exactly as certbot writes them; it has
no Ed25519, so the OKP key type of RFC 8037 and its EdDSA algorithm are registered here
through josepy's own extension points, the signature itself left to ``cryptography``.
Two JWKs are the same key when their RFC 7638 thumbprints are equal: member order,
whitespace and optional members do not matter (EAB, revocation by certificate key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from josepy import errors, json_util
from josepy.jwa import JWASignature
from josepy.jwk import JWK

from caucase.acme.problems import BadPublicKey, BadSignatureAlgorithm
from caucase.crypto import keys as crypto_keys

MIN_RSA_BITS = 2048
# Bounds the cost of one verification: an attacker chooses the key of every newAccount.
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT = 2**32
# Members that only a private JWK has (RFC 7518 6.3.2, 6.2.2; RFC 8037 2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@JWK.register
class JWKOKP(JWK):
    """RFC 8037 octet key pair; only Ed25519, the curve EdDSA account keys use."""

    typ = "OKP"
    __slots__ = ("key",)
    cryptography_key_types = (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)
    required = ("crv", JWK.type_field_name, "x")

    def fields_to_partial_json(self) -> dict[str, Any]:
        public = self.key
        if isinstance(public, ed25519.Ed25519PrivateKey):
            public = public.public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "x": json_util.encode_b64jose(raw)}

    @classmethod
    def fields_from_json(cls, jobj: Mapping[str, Any]) -> JWKOKP:
        if jobj.get("crv") != "Ed25519":
            raise errors.DeserializationError("only the Ed25519 curve is supported")
        raw = json_util.decode_b64jose(jobj["x"], size=32)
        return cls(key=ed25519.Ed25519PublicKey.from_public_bytes(raw))

    def public_key(self) -> JWKOKP:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return type(self)(key=self.key.public_key())
        return self


class _EdDSA(JWASignature):
    """RFC 8037 3.1: the JWS signature is the raw Ed25519 signature."""

    kty = JWKOKP

    def sign(self, key: ed25519.Ed25519PrivateKey, msg: bytes) -> bytes:
        return key.sign(msg)

    def verify(self, key: ed25519.Ed25519PublicKey, msg: bytes, sig: bytes) -> bool:
        try:
            key.verify(sig, msg)
        except InvalidSignature:
            return False
        return True


EdDSA = JWASignature.register(_EdDSA("EdDSA"))

# alg -> the check that a key may be used with it (RFC 7518 3.1, RFC 8037 3.1).
_KEY_FITS: dict[str, type[Any] | tuple[type[Any], type[ec.EllipticCurve]]] = {
    "RS256": rsa.RSAPublicKey,
    "ES256": (ec.EllipticCurvePublicKey, ec.SECP256R1),
    "ES384": (ec.EllipticCurvePublicKey, ec.SECP384R1),
    "EdDSA": ed25519.Ed25519PublicKey,
}
ACCOUNT_ALGORITHMS = tuple(_KEY_FITS)


def signature_algorithm(name: object) -> JWASignature:
    """The josepy algorithm for an account signature; badSignatureAlgorithm otherwise
    (``none`` and MAC algorithms included, RFC 8555 6.2)."""
    if not isinstance(name, str) or name not in _KEY_FITS:
        raise BadSignatureAlgorithm(
            f"unsupported signature algorithm {name!r}", ACCOUNT_ALGORITHMS
        )
    return JWASignature.from_json(name)


def public_key_of(jwk: JWK) -> Any:
    """The ``cryptography`` public key a josepy JWK wraps."""
    key = jwk.key
    return getattr(key, "_wrapped", key)


def check_fits(jwk: JWK, alg: JWASignature) -> None:
    """badSignatureAlgorithm unless `alg` is meant for `jwk`'s key type and curve."""
    fits = _KEY_FITS[alg.name]
    key = public_key_of(jwk)
    if isinstance(fits, tuple):
        key_type, curve = fits
        ok = isinstance(key, key_type) and isinstance(key.curve, curve)
    else:
        ok = isinstance(key, fits)
    if not ok:
        raise BadSignatureAlgorithm(
            f"algorithm {alg.name} does not match the {jwk.typ} key", ACCOUNT_ALGORITHMS
        )


def load_account_key(jobj: object) -> JWK:
    """A public JWK an account may sign with; badPublicKey for anything else."""
    if not isinstance(jobj, dict):
        raise BadPublicKey("jwk is not a JSON object")
    if _PRIVATE_MEMBERS & jobj.keys():
        raise BadPublicKey("jwk holds private key material")
    try:
        jwk = JWK.from_json(jobj)
    except (errors.Error, KeyError, TypeError, ValueError, AttributeError) as error:
        raise BadPublicKey(f"jwk is not a usable public key: {error}") from None
    if not isinstance(jwk, JWK):
        raise BadPublicKey("jwk is not a key")
    _check_strength(public_key_of(jwk))
    return jwk


def _check_strength(key: Any) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise BadPublicKey(
                f"RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, not {key.key_size}"
            )
        if key.public_numbers().e >= MAX_RSA_EXPONENT:
            raise BadPublicKey("RSA public exponent is too large")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1)):
            raise BadPublicKey(f"unsupported curve {key.curve.name}")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise BadPublicKey("unsupported key type")


def thumbprint(jwk: JWK) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: the key's identity and the key
    authorization suffix of challenges (RFC 8555 8.1)."""
    return json_util.encode_b64jose(jwk.thumbprint())


def same_key(first: JWK, second: JWK) -> bool:
    """Whether two JWKs hold the same public key, whatever their JSON formatting."""
    return thumbprint(first) == thumbprint(second)


def key_id(jwk: JWK) -> str:
    """The caucase key id (caucase.crypto.keys.key_id) of the account key, to compare it with
    the key of a certificate or a CSR."""
    return crypto_keys.key_id(public_key_of(jwk))
