"""The key seam: every key type caucase makes generates, dumps, loads, signs and verifies;
the keys it refuses are refused with a reason; envelopes work for every type."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Callable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from caucase.crypto import keys
from caucase.crypto.envelope import default_digest, sign_envelope, verify_envelope
from caucase.exceptions import BadEnvelope, UnsupportedKey

SPECS = [
    keys.KeySpec.rsa(2048),
    keys.KeySpec(keys.KeyType.EC_P256),
    keys.KeySpec(keys.KeyType.EC_P384),
    keys.KeySpec(keys.KeyType.ED25519),
]
IDS = ["rsa", "ec-p256", "ec-p384", "ed25519"]
PEM_LABELS = [b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"EC PRIVATE KEY", b"PRIVATE KEY"]
DIGESTS = ["sha256", "sha256", "sha384", "ed25519"]


@pytest.fixture(scope="module")
def generated() -> dict[str, keys.PrivateKey]:
    return {name: keys.generate(spec) for name, spec in zip(IDS, SPECS)}


@pytest.mark.parametrize("name, spec, label", list(zip(IDS, SPECS, PEM_LABELS)), ids=IDS)
def test_generated_keys_have_their_spec_and_survive_pem(
    generated: dict[str, keys.PrivateKey], name: str, spec: keys.KeySpec, label: bytes
) -> None:
    key = generated[name]
    assert keys.spec_of(key.public_key()) == spec
    assert keys.kind(key.public_key()) is spec.type
    pem = keys.dump_private_key(key)
    assert pem.startswith(b"-----BEGIN " + label + b"-----\n")
    assert keys.key_id(keys.load_private_key(pem).public_key()) == keys.key_id(key.public_key())
    encrypted = keys.dump_private_key(key, b"secret")
    assert b"ENCRYPTED" in encrypted
    reloaded = keys.load_private_key(encrypted, b"secret")
    assert keys.key_id(reloaded.public_key()) == keys.key_id(key.public_key())
    with pytest.raises(ValueError):
        keys.load_private_key(encrypted, b"wrong")


def test_spec_names_and_default() -> None:
    assert [str(spec) for spec in SPECS] == ["RSA-2048", "ECDSA P-256", "ECDSA P-384", "Ed25519"]
    assert keys.KeySpec.rsa(2048) == keys.DEFAULT_SPEC
    assert keys.KEY_TYPE_NAMES == ("rsa", "ec-p256", "ec-p384", "ed25519")


@pytest.mark.parametrize("bits", [1024, 2047, 16385])
def test_rsa_sizes_outside_2048_to_16384_are_refused(bits: int) -> None:
    with pytest.raises(UnsupportedKey, match="2048 to 16384 bits"):
        keys.KeySpec.rsa(bits)


def test_options_default_to_the_key_being_replaced(generated: dict[str, keys.PrivateKey]) -> None:
    assert keys.spec_from_options(None, None) == keys.DEFAULT_SPEC
    for name, spec in zip(IDS, SPECS):
        assert keys.spec_from_options(None, None, generated[name].public_key()) == spec
    rsa_3072 = rsa.generate_private_key(65537, 3072).public_key()
    assert keys.spec_from_options(None, None, rsa_3072) == keys.KeySpec.rsa(3072)
    assert keys.spec_from_options("rsa", None, rsa_3072) == keys.KeySpec.rsa(3072)
    assert keys.spec_from_options("rsa", None, generated["ed25519"].public_key()) == (
        keys.KeySpec.rsa(2048)
    )
    legacy = rsa.generate_private_key(65537, 1024).public_key()
    assert keys.spec_from_options(None, None, legacy) == keys.KeySpec.rsa(2048)
    secp256k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    assert keys.spec_from_options(None, None, secp256k1) == keys.DEFAULT_SPEC


def test_options_choose_type_and_rsa_size(generated: dict[str, keys.PrivateKey]) -> None:
    current = generated["ec-p256"].public_key()
    assert keys.spec_from_options(None, 4096, current) == keys.KeySpec.rsa(4096)
    assert keys.spec_from_options("ed25519", None, current) == SPECS[3]
    assert keys.spec_from_options("ec-p384", None) == SPECS[2]
    with pytest.raises(UnsupportedKey, match="--key-len is an RSA size"):
        keys.spec_from_options("ec-p256", 2048)
    with pytest.raises(UnsupportedKey, match="2048 to 16384"):
        keys.spec_from_options(None, 1024)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: rsa.generate_private_key(65537, 1024), "RSA keys must have 2048 to 16384 bits"),
        (lambda: ec.generate_private_key(ec.SECP192R1()), "unsupported elliptic curve secp192r1"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "unsupported elliptic curve secp256k1"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "unsupported elliptic curve secp521r1"),
        (lambda: dsa.generate_private_key(2048), "unsupported key type DSA"),
        (ed448.Ed448PrivateKey.generate, "unsupported key type Ed448"),
    ],
    ids=["rsa-1024", "p192", "secp256k1", "p521", "dsa", "ed448"],
)
def test_unacceptable_keys_are_refused_with_a_reason(
    make: Callable[[], PrivateKeyTypes], reason: str
) -> None:
    with pytest.raises(UnsupportedKey, match=reason):
        keys.check_acceptable(make().public_key())


def test_other_key_kinds_load_for_their_id_only() -> None:
    key = dsa.generate_private_key(2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="unsupported key type DSA"):
        keys.load_private_key(pem)
    assert keys.private_key_id(pem) == keys.key_id(key.public_key())


def test_ed25519_key_id_is_the_sha1_of_the_raw_key(generated: dict[str, keys.PrivateKey]) -> None:
    public_key = generated["ed25519"].public_key()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert keys.key_id(public_key) == hashlib.sha1(raw).hexdigest()


@pytest.mark.parametrize(
    "name, expected",
    [("rsa", hashes.SHA256), ("ec-p256", hashes.SHA256), ("ec-p384", hashes.SHA384)],
)
def test_signature_hash_follows_the_key(
    generated: dict[str, keys.PrivateKey], name: str, expected: type
) -> None:
    assert isinstance(keys.signature_hash(generated[name]), expected)
    assert isinstance(keys.signature_hash(generated[name].public_key()), expected)


def test_ed25519_signs_without_a_separate_hash(generated: dict[str, keys.PrivateKey]) -> None:
    key = generated["ed25519"]
    assert keys.signature_hash(key) is None
    with pytest.raises(UnsupportedKey):
        keys.sign(key, b"data", hashes.SHA256())
    with pytest.raises(UnsupportedKey):
        keys.sign(generated["ec-p256"], b"data", None)


@pytest.mark.parametrize("name", IDS)
def test_sign_and_verify(generated: dict[str, keys.PrivateKey], name: str) -> None:
    key = generated[name]
    algorithm = keys.signature_hash(key)
    signature = keys.sign(key, b"message", algorithm)
    keys.verify(key.public_key(), signature, b"message", algorithm)
    with pytest.raises(InvalidSignature):
        keys.verify(key.public_key(), signature, b"other message", algorithm)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["p256", "p384"])
def test_ephemeral_static_ecdh_agrees(curve: ec.EllipticCurve) -> None:
    recipient = ec.generate_private_key(curve)
    point, shared = keys.ecdh_ephemeral(recipient.public_key())
    assert keys.ecdh_static(recipient, point) == shared
    assert len(point) == 1 + 2 * curve.key_size // 8


def test_only_ed25519_cannot_receive_a_secret(generated: dict[str, keys.PrivateKey]) -> None:
    assert [keys.can_agree(generated[name].public_key()) for name in IDS] == [
        True,
        True,
        True,
        False,
    ]
    with pytest.raises(UnsupportedKey):
        keys.ecdh_ephemeral(generated["ed25519"].public_key())
    with pytest.raises(UnsupportedKey):
        keys.rsa_oaep_sha1_encrypt(generated["ec-p256"].public_key(), b"secret")


# --- envelopes of every key type --------------------------------------------------------------

PAYLOAD = json.dumps({"revoke_crt_pem": "-----BEGIN CERTIFICATE-----\n"})


@pytest.mark.parametrize("name, digest", list(zip(IDS, DIGESTS)), ids=IDS)
def test_envelopes_of_every_key_type_verify(
    generated: dict[str, keys.PrivateKey], name: str, digest: str
) -> None:
    key = generated[name]
    assert default_digest(key) == digest
    envelope = sign_envelope(key, PAYLOAD)
    assert envelope["digest"] == digest and envelope["signature"].endswith("\n")
    verify_envelope(json.loads(json.dumps(envelope)), key.public_key())
    tampered = dict(envelope, payload=PAYLOAD + " ")
    with pytest.raises(BadEnvelope, match="Invalid envelope signature"):
        verify_envelope(tampered, key.public_key())


def test_ecdsa_envelopes_may_name_any_accepted_hash(generated: dict[str, keys.PrivateKey]) -> None:
    key = generated["ec-p256"]
    for digest in ("sha256", "sha384", "sha512"):
        verify_envelope(sign_envelope(key, PAYLOAD, digest), key.public_key())


def test_ecdsa_envelope_signature_is_over_payload_digest_and_space(
    generated: dict[str, keys.PrivateKey],
) -> None:
    key = generated["ec-p384"]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    envelope = sign_envelope(key, PAYLOAD)
    key.public_key().verify(
        base64.b64decode(envelope["signature"]),
        PAYLOAD.encode() + b"sha384 ",
        ec.ECDSA(hashes.SHA384()),
    )


def test_ed25519_envelope_signature_is_over_payload_digest_and_space(
    generated: dict[str, keys.PrivateKey],
) -> None:
    key = generated["ed25519"]
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    envelope = sign_envelope(key, PAYLOAD)
    key.public_key().verify(
        base64.b64decode(envelope["signature"]), PAYLOAD.encode() + b"ed25519 "
    )


@pytest.mark.parametrize(
    "signer, verifier, digest, reason",
    [
        ("ed25519", "ed25519", "sha256", "Ed25519 envelopes use the digest 'ed25519'"),
        ("ec-p256", "ec-p256", "ed25519", "needs an Ed25519 key, not ECDSA"),
        ("rsa", "rsa", "ed25519", "needs an Ed25519 key, not RSA"),
        ("ec-p256", "rsa", "sha256", "Invalid envelope signature"),
        ("rsa", "ec-p256", "sha256", "Invalid envelope signature"),
        ("ed25519", "rsa", "ed25519", "needs an Ed25519 key"),
    ],
)
def test_envelopes_with_a_mismatched_algorithm_are_refused(
    generated: dict[str, keys.PrivateKey], signer: str, verifier: str, digest: str, reason: str
) -> None:
    envelope = sign_envelope(generated[signer], PAYLOAD)
    envelope["digest"] = digest
    with pytest.raises(BadEnvelope, match=reason):
        verify_envelope(envelope, generated[verifier].public_key())


def test_envelopes_cannot_be_checked_with_unsupported_keys() -> None:
    envelope = sign_envelope(keys.generate(), PAYLOAD)
    with pytest.raises(BadEnvelope, match="unsupported key type DSA"):
        verify_envelope(envelope, dsa.generate_private_key(2048).public_key())
