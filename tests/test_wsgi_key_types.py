"""Every key type through the WSGI application: CSRs, renewal and revocation by the key
holder, user authentication; unacceptable keys and mismatched envelopes are 400 with a
reason (the reference accepted every key and answered 500 to every non-RSA envelope)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from caucase.crypto import keys, x509util
from caucase.crypto.envelope import sign_envelope
from tests.conftest import FakeClock
from tests.support.wsgi_support import Deployment, call, deploy, name

JSON = "application/json"
PKCS10 = "application/pkcs10"
TYPES = list(keys.KeyType)
IDS = [key_type.value for key_type in TYPES]


@pytest.fixture(scope="module")
def leaf_keys() -> dict[keys.KeyType, keys.PrivateKey]:
    return {key_type: keys.generate(keys.KeySpec(key_type)) for key_type in TYPES}


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock) -> Deployment:
    return deploy(tmp_path, clock, keys.generate())


def csr(key: PrivateKeyTypes, common_name: str = "service") -> bytes:
    algorithm = hashes.SHA256() if isinstance(key, dsa.DSAPrivateKey) else None
    if algorithm is None:
        algorithm = keys.signature_hash(keys.usable(key))
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(common_name))
    return x509util.dump_certificate_request(builder.sign(key, algorithm))  # type: ignore[arg-type]


def service_crt(dep: Deployment, key: keys.PrivateKey) -> bytes:
    return dep.cas.create_certificate(dep.cas.append_csr(csr(key)))


def envelope_body(key: keys.PrivateKey, payload: dict[str, str], **changes: str) -> bytes:
    return json.dumps({**sign_envelope(key, json.dumps(payload)), **changes}).encode()


@pytest.mark.parametrize("old_type", TYPES, ids=IDS)
def test_every_key_type_renews_into_every_key_type_and_revokes_by_key(
    dep: Deployment, leaf_keys: dict[keys.KeyType, keys.PrivateKey], old_type: keys.KeyType
) -> None:
    old_key = leaf_keys[old_type]
    crt = service_crt(dep, old_key)
    for new_type in TYPES:
        if new_type is old_type:
            new_key = keys.generate(keys.KeySpec(new_type))  # a key is certified only once
        else:
            new_key = leaf_keys[new_type]
        payload = {"crt_pem": crt.decode(), "renew_csr_pem": csr(new_key, "ignored").decode()}
        reply = call(
            dep.app, "PUT", "/cas/crt/renew", envelope_body(old_key, payload), content_type=JSON
        )
        assert reply.status == 200, (new_type, reply.body)
        renewed = x509util.load_certificate(reply.body)
        assert renewed.subject.rfc4514_string() == "CN=service"
        assert keys.key_id(renewed.public_key()) == keys.key_id(new_key.public_key())
    body = envelope_body(old_key, {"revoke_crt_pem": crt.decode()})
    assert call(dep.app, "PUT", "/cas/crt/revoke", body, content_type=JSON).status == 204
    crl = x509util.load_crl(call(dep.app, "GET", "/cas/crl").body)
    assert [entry.serial_number for entry in crl] == [x509util.load_certificate(crt).serial_number]


@pytest.mark.parametrize(
    "bad_key, reason",
    [
        (lambda: ec.generate_private_key(ec.SECP192R1()), b"unsupported elliptic curve secp192r1"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), b"unsupported elliptic curve secp256k1"),
        (lambda: rsa.generate_private_key(65537, 1024), b"2048 to 16384 bits, not 1024"),
        (lambda: dsa.generate_private_key(2048), b"unsupported key type DSA"),
    ],
    ids=["p192", "secp256k1", "rsa-1024", "dsa"],
)
def test_csrs_with_unacceptable_keys_are_400_with_the_reason(
    dep: Deployment,
    leaf_keys: dict[keys.KeyType, keys.PrivateKey],
    bad_key: object,
    reason: bytes,
) -> None:
    bad_csr = csr(bad_key())  # type: ignore[operator]
    reply = call(dep.app, "PUT", "/cas/csr", bad_csr, content_type=PKCS10)
    assert (reply.status, reason in reply.body) == (400, True), reply.body
    old_key = leaf_keys[keys.KeyType.EC_P256]
    crt = service_crt(dep, old_key)
    payload = {"crt_pem": crt.decode(), "renew_csr_pem": bad_csr.decode()}
    reply = call(
        dep.app, "PUT", "/cas/crt/renew", envelope_body(old_key, payload), content_type=JSON
    )
    assert (reply.status, reason in reply.body) == (400, True), reply.body
    assert dep.cas.get_csr_list() == []


@pytest.mark.parametrize(
    "signer, digest, reason",
    [
        (
            keys.KeyType.ED25519,
            "sha256",
            b"Ed25519 envelopes use the digest 'ed25519', not 'sha256'",
        ),
        (keys.KeyType.EC_P256, "ed25519", b"Digest 'ed25519' needs an Ed25519 key, not ECDSA"),
        (keys.KeyType.RSA, "ed25519", b"Digest 'ed25519' needs an Ed25519 key, not RSA"),
        (keys.KeyType.EC_P384, "sha256", b"Invalid envelope signature"),
    ],
    ids=["ed25519-as-sha256", "ecdsa-as-ed25519", "rsa-as-ed25519", "wrong-hash"],
)
def test_envelopes_with_a_mismatched_algorithm_are_400(
    dep: Deployment,
    leaf_keys: dict[keys.KeyType, keys.PrivateKey],
    signer: keys.KeyType,
    digest: str,
    reason: bytes,
) -> None:
    crt = service_crt(dep, leaf_keys[signer])
    body = envelope_body(leaf_keys[signer], {"revoke_crt_pem": crt.decode()}, digest=digest)
    reply = call(dep.app, "PUT", "/cas/crt/revoke", body, content_type=JSON)
    assert (reply.status, reply.body) == (400, reason)
    assert len(x509util.load_crl(call(dep.app, "GET", "/cas/crl").body)) == 0


def test_an_envelope_signed_by_another_key_type_is_400(
    dep: Deployment, leaf_keys: dict[keys.KeyType, keys.PrivateKey]
) -> None:
    crt = service_crt(dep, leaf_keys[keys.KeyType.EC_P256])
    body = envelope_body(leaf_keys[keys.KeyType.RSA], {"revoke_crt_pem": crt.decode()})
    reply = call(dep.app, "PUT", "/cas/crt/revoke", body, content_type=JSON)
    assert (reply.status, reply.body) == (400, b"Invalid envelope signature")


@pytest.mark.parametrize("user_type", TYPES, ids=IDS)
def test_users_of_every_key_type_authenticate(
    dep: Deployment, leaf_keys: dict[keys.KeyType, keys.PrivateKey], user_type: keys.KeyType
) -> None:
    csr_id = dep.cau.append_csr(csr(leaf_keys[user_type], "second user"))
    user_crt = dep.cau.create_certificate(csr_id)
    reply = call(dep.app, "GET", "/cas/csr", https=True, cert=user_crt)
    assert (reply.status, reply.body) == (200, b"[]")
