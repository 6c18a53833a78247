"""The one seam for key types: generate, load, dump, sign, verify, key id, key agreement.

caucase keys are RSA (2048 to 16384 bits), ECDSA on P-256 or P-384, or Ed25519; RSA-2048 is
the default, so that an existing deployment sees no change. Every other module asks this one
what a key can do instead of testing its class.

Keys of another kind that an older database or a foreign tool may hold (a smaller RSA key,
another curve) still load and sign, so their holders can renew into a supported key; only
new keys (generated here, or submitted in a CSR) must be of a supported kind.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Union

import pem as pemlib
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from caucase.exceptions import UnsupportedKey

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey]

RSA_PUBLIC_EXPONENT = 65537
DEFAULT_RSA_BITS = 2048
MINIMUM_RSA_BITS = 2048
# Verifying with a bigger key costs more than any caller should make the server spend.
MAXIMUM_RSA_BITS = 16384


class KeyType(enum.Enum):
    """The kinds of key caucase makes; the values are the `--key-type` option values."""

    RSA = "rsa"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    ED25519 = "ed25519"


_CURVES: dict[KeyType, ec.EllipticCurve] = {
    KeyType.EC_P256: ec.SECP256R1(),
    KeyType.EC_P384: ec.SECP384R1(),
}
_CURVE_TYPES: dict[str, KeyType] = {curve.name: key_type for key_type, curve in _CURVES.items()}
_PRIVATE_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
KEY_TYPE_NAMES = tuple(key_type.value for key_type in KeyType)


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """What key to generate: a type, and for RSA a size in bits."""

    type: KeyType
    rsa_bits: int = DEFAULT_RSA_BITS

    def __post_init__(self) -> None:
        if self.type is KeyType.RSA and not (
            MINIMUM_RSA_BITS <= self.rsa_bits <= MAXIMUM_RSA_BITS
        ):
            raise UnsupportedKey(
                f"RSA keys must have {MINIMUM_RSA_BITS} to {MAXIMUM_RSA_BITS} bits, "
                f"not {self.rsa_bits}"
            )

    @classmethod
    def rsa(cls, bits: int = DEFAULT_RSA_BITS) -> KeySpec:
        return cls(KeyType.RSA, bits)

    def __str__(self) -> str:
        if self.type is KeyType.RSA:
            return f"RSA-{self.rsa_bits}"
        return {KeyType.EC_P256: "ECDSA P-256", KeyType.EC_P384: "ECDSA P-384"}.get(
            self.type, "Ed25519"
        )


DEFAULT_SPEC = KeySpec.rsa()


def spec_from_options(
    key_type: str | None, key_len: int | None, current: object | None = None
) -> KeySpec:
    """The key a command makes from its `--key-type` and `--key-len` options, `current` being
    the public key the new one replaces (if any).

    Neither option: the same type and size as `current` (RSA-2048 without one, or when
    `current` is of a kind caucase no longer makes). `--key-len` alone keeps its old
    meaning, an RSA size; `--key-type rsa` alone keeps the size of an RSA `current`.
    UnsupportedKey (one clear line) for a size given with another type."""
    if key_type is None and key_len is None:
        if current is None:
            return DEFAULT_SPEC
        try:
            return spec_of(current)
        except UnsupportedKey:
            return DEFAULT_SPEC
    chosen = KeyType.RSA if key_type is None else KeyType(key_type)
    if chosen is not KeyType.RSA:
        if key_len is not None:
            raise UnsupportedKey(f"--key-len is an RSA size: it cannot be used with {key_type}")
        return KeySpec(chosen)
    if key_len is None and isinstance(current, rsa.RSAPublicKey):
        key_len = min(max(current.key_size, MINIMUM_RSA_BITS), MAXIMUM_RSA_BITS)
    return KeySpec.rsa(DEFAULT_RSA_BITS if key_len is None else key_len)


def generate(spec: KeySpec = DEFAULT_SPEC) -> PrivateKey:
    """A fresh private key (RSA keys use the public exponent 65537)."""
    if spec.type is KeyType.RSA:
        return rsa.generate_private_key(
            public_exponent=RSA_PUBLIC_EXPONENT, key_size=spec.rsa_bits
        )
    if spec.type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(_CURVES[spec.type])


def _describe(public_key: object) -> str:
    names = {
        "DSAPublicKey": "DSA",
        "Ed448PublicKey": "Ed448",
        "X25519PublicKey": "X25519",
        "X448PublicKey": "X448",
    }
    for base in type(public_key).__mro__:
        if base.__name__ in names:
            return names[base.__name__]
    return type(public_key).__name__


def kind(public_key: object) -> KeyType:
    """The key type family of a public key: RSA of any size, EC on P-256 or P-384, Ed25519.

    UnsupportedKey (whose message says why) for anything else."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyType.RSA
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        key_type = _CURVE_TYPES.get(public_key.curve.name)
        if key_type is None:
            raise UnsupportedKey(
                f"unsupported elliptic curve {public_key.curve.name} (supported: P-256, P-384)"
            )
        return key_type
    raise UnsupportedKey(
        f"unsupported key type {_describe(public_key)} "
        "(supported: RSA, ECDSA P-256 and P-384, Ed25519)"
    )


def spec_of(public_key: object) -> KeySpec:
    """The spec a new key would need to be like this one; UnsupportedKey unless it is a key
    caucase accepts (RSA of 2048 to 16384 bits, P-256, P-384, Ed25519)."""
    key_type = kind(public_key)
    if key_type is KeyType.RSA:
        assert isinstance(public_key, rsa.RSAPublicKey)
        return KeySpec.rsa(public_key.key_size)
    return KeySpec(key_type)


def check_acceptable(public_key: object) -> None:
    """UnsupportedKey unless a CSR may bring this key (the policy for new keys)."""
    spec_of(public_key)


def public_key_of(document: x509.Certificate | x509.CertificateSigningRequest) -> PublicKey:
    """The public key of a certificate or CSR, as a key caucase can use (UnsupportedKey
    otherwise: DSA, Ed448, other curves)."""
    public_key = document.public_key()
    kind(public_key)
    assert isinstance(
        public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)
    )
    return public_key


def key_id(public_key: object) -> str:
    """Lowercase hex SHA-1 of the key (RFC 5280 4.2.1.2 method 1, the SKI caucase writes):
    over the PKCS#1 RSAPublicKey, the uncompressed EC point (errata 14), the raw Ed25519 key."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest.hex()  # type: ignore[arg-type]


def same_public_key(
    document: x509.Certificate | x509.CertificateSigningRequest, key: PrivateKey
) -> bool:
    """Whether `key` is the private half of the document's public key: the one rule that
    pairs a key with its certificate (or CSR)."""
    return _public_der(document.public_key()) == _public_der(key.public_key())


def _public_der(public_key: object) -> bytes:
    public_bytes = public_key.public_bytes  # type: ignore[attr-defined]
    der: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


# PEM


def load_any_private_key(pem: bytes, password: bytes | None = None) -> PrivateKeyTypes:
    """The one PEM private key of `pem`, of whatever kind; ValueError when there is none, or
    when it does not load (wrong or missing password included)."""
    blocks = [block for block in pemlib.parse(pem) if isinstance(block, pemlib.PrivateKey)]
    if len(blocks) != 1:
        raise ValueError(f"Expected exactly one PEM private key, found {len(blocks)}")
    try:
        return serialization.load_pem_private_key(blocks[0].as_bytes(), password)
    except (TypeError, UnsupportedAlgorithm) as error:
        raise ValueError(f"Cannot load the private key: {error}") from None


def usable(key: PrivateKeyTypes) -> PrivateKey:
    """The key, if caucase can sign with it (RSA, EC, Ed25519); UnsupportedKey otherwise."""
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise UnsupportedKey(f"unsupported key type {_describe(key.public_key())}")


def private_key_id(pem: bytes) -> str:
    """The key id of the one PEM private key of `pem`, whatever its kind (DSA included, as
    the reference's caucase-key-id); ValueError when there is no loadable key."""
    return key_id(load_any_private_key(pem).public_key())


def load_private_key(pem: bytes, password: bytes | None = None) -> PrivateKey:
    """The one PEM private key of `pem`; ValueError otherwise, or for a kind of key caucase
    cannot use. Other PEM blocks (the certificate stored beside the key) are ignored."""
    try:
        return usable(load_any_private_key(pem, password))
    except UnsupportedKey as error:
        raise ValueError(f"Cannot use the private key: {error}") from None


def dump_private_key(key: PrivateKey, password: bytes | None = None) -> bytes:
    """PEM, encrypted with the best available cipher when a password is given.

    RSA and EC keys keep the traditional OpenSSL form the reference writes ("BEGIN RSA
    PRIVATE KEY", "BEGIN EC PRIVATE KEY"); Ed25519 has none, so it is PKCS#8."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    private_format = (
        serialization.PrivateFormat.PKCS8
        if isinstance(key, ed25519.Ed25519PrivateKey)
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(serialization.Encoding.PEM, private_format, encryption)


# Signatures


def signature_hash(key: PrivateKey | PublicKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash this key signs with: SHA-256 (as the reference) for RSA and P-256, SHA-384
    for P-384 (RFC 5758 3.2), none for Ed25519 (RFC 8410 6: it hashes internally).

    Used for certificates, CRLs, CSRs and, by default, signed envelopes."""
    public_key = key.public_key() if isinstance(key, _PRIVATE_TYPES) else key
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
        public_key.curve, ec.SECP384R1
    ):
        return hashes.SHA384()
    return hashes.SHA256()


def _pss(algorithm: hashes.HashAlgorithm, salt_length: Any) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=salt_length)


def sign(key: PrivateKey, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bytes:
    """Sign `data`: RSASSA-PSS (MGF1 with the same hash, maximum salt: the reference's
    envelope scheme), ECDSA (DER signature), or Ed25519 (`algorithm` None: pure EdDSA).

    UnsupportedKey when the algorithm does not fit the key."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        if algorithm is not None:
            raise UnsupportedKey("Ed25519 signatures take no separate hash")
        return key.sign(data)
    if algorithm is None:
        raise UnsupportedKey(f"{family(key.public_key())} signatures need a hash")
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, _pss(algorithm, padding.PSS.MAX_LENGTH), algorithm)
    return key.sign(data, ec.ECDSA(algorithm))


def verify(
    public_key: PublicKey, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None
) -> None:
    """Raise InvalidSignature unless `signature` is `sign`'s over `data` (RSA: any PSS salt
    length, since other clients may not use the maximum); UnsupportedKey when the algorithm
    does not fit the key."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        if algorithm is not None:
            raise UnsupportedKey("Ed25519 signatures take no separate hash")
        public_key.verify(signature, data)
        return
    if algorithm is None:
        raise UnsupportedKey(f"{family(public_key)} signatures need a hash")
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, _pss(algorithm, padding.PSS.AUTO), algorithm)
        return
    public_key.verify(signature, data, ec.ECDSA(algorithm))


def family(public_key: object) -> str:
    """ "RSA", "ECDSA", "Ed25519" or what else the key is, for messages."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ECDSA"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return _describe(public_key)


# Key transport and agreement (backup recipients)


def can_agree(public_key: PublicKey) -> bool:
    """Whether a secret can be sent to the holder of this key: RSA encrypts it, EC agrees on
    one; Ed25519 is a signature-only key (RFC 8032) and can do neither."""
    return not isinstance(public_key, ed25519.Ed25519PublicKey)


def rsa_oaep_sha1_encrypt(public_key: PublicKey, data: bytes) -> bytes:
    """RSAES-OAEP with SHA-1 and MGF1-SHA-1, empty label (the reference backup key wrap)."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise UnsupportedKey("RSA-OAEP needs an RSA key")
    return public_key.encrypt(data, _oaep_sha1())


def rsa_oaep_sha1_decrypt(private_key: PrivateKey, data: bytes) -> bytes:
    """Inverse of rsa_oaep_sha1_encrypt; ValueError when it does not decrypt."""
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise UnsupportedKey("RSA-OAEP needs an RSA key")
    return private_key.decrypt(data, _oaep_sha1())


def _oaep_sha1() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def ec_point(public_key: PublicKey) -> bytes:
    """The uncompressed X9.62 point of an EC public key."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise UnsupportedKey("not an elliptic curve key")
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def ecdh_ephemeral(public_key: PublicKey) -> tuple[bytes, bytes]:
    """ECDH ephemeral-static with the holder of `public_key` (NIST SP 800-56A C(1e, 1s)):
    the ephemeral public point (uncompressed) to send, and the shared secret Z."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise UnsupportedKey("ECDH needs an elliptic curve key")
    ephemeral = ec.generate_private_key(public_key.curve)
    return ec_point(ephemeral.public_key()), ephemeral.exchange(ec.ECDH(), public_key)


def ecdh_static(private_key: PrivateKey, ephemeral_point: bytes) -> bytes:
    """The shared secret Z of ecdh_ephemeral, computed by the holder of `private_key`.

    ValueError when the point is not on the key's curve."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise UnsupportedKey("ECDH needs an elliptic curve key")
    peer = ec.EllipticCurvePublicKey.from_encoded_point(private_key.curve, ephemeral_point)
    return private_key.exchange(ec.ECDH(), peer)
