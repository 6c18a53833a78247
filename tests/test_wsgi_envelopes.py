"""Renewal and revocation through the WSGI application: signed and null envelopes (http-api 7).

Every malformed envelope is a 400 that stores nothing; the reference answered 500 to many."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from caucase.crypto import x509util
from caucase.crypto.envelope import sign_envelope
from tests.conftest import FakeClock
from tests.support.ca_helpers import generate_keys
from tests.support.wsgi_support import (
    Deployment,
    call,
    deploy,
    foreign_certificate,
    make_csr,
    signed_body,
)

JSON = "application/json"


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    """Leaf keys made once: request keys need not be fresh per test."""
    return generate_keys(4)


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock, keys: list[rsa.RSAPrivateKey]) -> Deployment:
    return deploy(tmp_path, clock, keys[0])


def service_crt(dep: Deployment, key: rsa.RSAPrivateKey) -> bytes:
    csr_id = dep.cas.append_csr(make_csr(key, "service"))
    return dep.cas.create_certificate(csr_id)


def user(dep: Deployment) -> dict[str, object]:
    return {"https": True, "cert": dep.user_crt}


# Renewal


def renew_body(
    crt: bytes, key: rsa.RSAPrivateKey, new_key: rsa.RSAPrivateKey, digest: str = "sha256"
) -> bytes:
    payload = {"crt_pem": crt.decode(), "renew_csr_pem": make_csr(new_key, "ignored").decode()}
    return signed_body(key, payload, digest)


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
def test_renewal_keeps_subject_and_takes_new_key(
    dep: Deployment, keys: list[rsa.RSAPrivateKey], digest: str
) -> None:
    crt = service_crt(dep, keys[1])
    reply = call(
        dep.app,
        "PUT",
        "/cas/crt/renew",
        renew_body(crt, keys[1], keys[2], digest),
        content_type=JSON,
    )
    assert (reply.status, reply.header("Content-Type")) == (200, "application/pkix-cert")
    assert reply.header("Cache-Control") is None
    new = x509util.load_certificate(reply.body)
    assert new.subject.rfc4514_string() == "CN=service"
    assert new.public_key() == keys[2].public_key()


def _tamper(body: bytes, **changes: object) -> bytes:
    envelope = json.loads(body)
    for key, value in changes.items():
        if value is KeyError:
            del envelope[key]
        else:
            envelope[key] = value
    return json.dumps(envelope).encode()


def _unknown_key_type(crt_pem: bytes) -> bytes:
    """The certificate with its rsaEncryption key algorithm OID changed to an unknown one:
    it still parses, but its public key cannot be loaded."""
    der = x509.load_pem_x509_certificate(crt_pem).public_bytes(serialization.Encoding.DER)
    rsa_encryption = bytes.fromhex("06092A864886F70D010101")
    assert der.count(rsa_encryption) == 1
    unknown = der.replace(rsa_encryption, bytes.fromhex("06092A864886F70D010163"))
    return x509.load_der_x509_certificate(unknown).public_bytes(serialization.Encoding.PEM)


def test_bad_renewal_requests_are_400_and_store_nothing(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    crt = service_crt(dep, keys[1])
    good = renew_body(crt, keys[1], keys[2])
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(ec_key, hashes.SHA256())
    )
    ec_crt = dep.cas.create_certificate(
        dep.cas.append_csr(ec_csr.public_bytes(serialization.Encoding.PEM))
    )
    payload = json.loads(json.loads(good)["payload"])
    cases = {
        "not json": b"{",
        "nested too deeply": b"[" * 100000,
        "payload nested too deeply": _tamper(good, payload="[" * 100000),
        "lone surrogate in payload": _tamper(
            good, payload=json.dumps(payload)[:-1] + ', "x": "\ud800"}'
        ),
        "lone surrogate in csr": signed_body(keys[1], {**payload, "renew_csr_pem": "\ud800"}),
        "non-base64 signature": _tamper(good, signature="!!!"),
        "not utf-8": b"\xff",
        "not an object": b"[1]",
        "no digest": _tamper(good, digest=KeyError),
        "null digest": _tamper(good, digest=None),
        "md5": _tamper(good, digest="md5"),
        "bad signature": _tamper(good, signature="AAAA"),
        "no signature": _tamper(good, signature=KeyError),
        "no payload": _tamper(good, payload=KeyError),
        "payload not json": sign_envelope_raw(keys[1], "{nope"),
        "payload not object": sign_envelope_raw(keys[1], "[1]"),
        "no renew csr": signed_body(keys[1], {"crt_pem": crt.decode()}),
        "no crt": signed_body(keys[1], {"renew_csr_pem": payload["renew_csr_pem"]}),
        "garbage crt": signed_body(
            keys[1], {**payload, "crt_pem": "-----BEGIN CERTIFICATE-----\n"}
        ),
        "ec crt": _tamper(good, payload=json.dumps({**payload, "crt_pem": ec_crt.decode()})),
        "crt of an unknown key type": signed_body(
            keys[1], {**payload, "crt_pem": _unknown_key_type(crt).decode()}
        ),
        "wrong key": renew_body(crt, keys[3], keys[2]),
        "foreign crt": renew_body(foreign_certificate(keys[1], dep.clock()), keys[1], keys[2]),
    }
    before = dep.cas.get_csr_list()
    for label, body in cases.items():
        reply = call(dep.app, "PUT", "/cas/crt/renew", body, content_type=JSON)
        assert reply.status == 400, (label, reply.body, reply.errors)
    assert (
        call(dep.app, "PUT", "/cas/crt/renew", b"{", content_type=JSON).body == b"b'Invalid json'"
    )
    reply = call(dep.app, "PUT", "/cas/crt/renew", cases["payload not json"], content_type=JSON)
    assert reply.body == b"b'Invalid json payload'"
    reply = call(
        dep.app, "PUT", "/cas/crt/renew", good, content_type="application/json; charset=utf-8"
    )
    assert (reply.status, reply.body) == (400, b"b'Bad Content-Type'")
    assert dep.cas.get_csr_list() == before
    assert call(dep.app, "PUT", "/cas/crt/renew", good, content_type=JSON).status == 200


def sign_envelope_raw(key: rsa.RSAPrivateKey, payload: str) -> bytes:
    return json.dumps(sign_envelope(key, payload)).encode()


def test_invalid_renewal_csr_is_400_with_empty_body(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    crt = service_crt(dep, keys[1])
    body = signed_body(keys[1], {"crt_pem": crt.decode(), "renew_csr_pem": "nope"})
    reply = call(dep.app, "PUT", "/cas/crt/renew", body, content_type=JSON)
    assert (reply.status, reply.body) == (400, b"")


# Revocation


def _crl_serials(dep: Deployment) -> set[int]:
    crl = x509util.load_crl(call(dep.app, "GET", "/cas/crl").body)
    return {entry.serial_number for entry in crl}


def test_revoke_by_key_possession(dep: Deployment, keys: list[rsa.RSAPrivateKey]) -> None:
    crt = service_crt(dep, keys[1])
    body = signed_body(keys[1], {"revoke_crt_pem": crt.decode()})
    reply = call(dep.app, "PUT", "/cas/crt/revoke", body, content_type=JSON)
    assert (reply.status, reply.header("Cache-Control")) == (204, None)
    assert x509util.load_certificate(crt).serial_number in _crl_serials(dep)
    again = call(dep.app, "PUT", "/cas/crt/revoke", body, content_type=JSON)
    assert (again.status, again.body) == (
        400,
        b"Certificate verification error: certificate revoked",
    )


def test_revoke_with_null_envelope_needs_a_user(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    crt = service_crt(dep, keys[1])
    body = json.dumps(
        {"payload": json.dumps({"revoke_crt_pem": crt.decode()}), "digest": None}
    ).encode()
    assert call(dep.app, "PUT", "/cas/crt/revoke", body, content_type=JSON).status == 401
    reply = call(dep.app, "PUT", "/cas/crt/revoke", body, content_type=JSON, **user(dep))
    assert (reply.status, reply.header("Cache-Control")) == (204, "private")
    assert x509util.load_certificate(crt).serial_number in _crl_serials(dep)


def _serial_body(serial: object) -> bytes:
    return json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None}).encode()


def test_revoke_serial(dep: Deployment) -> None:
    reply = call(
        dep.app, "PUT", "/cas/crt/revoke", _serial_body(1234), content_type=JSON, **user(dep)
    )
    assert (reply.status, reply.header("Cache-Control")) == (204, "private")
    assert 1234 in _crl_serials(dep)
    again = call(
        dep.app, "PUT", "/cas/crt/revoke", _serial_body(1234), content_type=JSON, **user(dep)
    )
    assert (again.status, again.reason) == (409, "Conflict")


@pytest.mark.parametrize("serial", [-5, "0x10", "16", 1.5, True, None, [1], {"a": 1}])
def test_bad_revoke_serial_is_400_and_crl_still_builds(dep: Deployment, serial: object) -> None:
    reply = call(
        dep.app, "PUT", "/cas/crt/revoke", _serial_body(serial), content_type=JSON, **user(dep)
    )
    assert reply.status == 400
    assert call(dep.app, "GET", "/cas/crl").status == 200
    assert _crl_serials(dep) == set()


def test_null_envelope_payload_errors_are_400(dep: Deployment) -> None:
    bodies = [
        json.dumps({"payload": "{x", "digest": None}).encode(),
        json.dumps({"payload": json.dumps({}), "digest": None}).encode(),
        json.dumps({"payload": json.dumps({"revoke_crt_pem": "junk"}), "digest": None}).encode(),
        json.dumps({"digest": None}).encode(),
    ]
    for body in bodies:
        reply = call(dep.app, "PUT", "/cas/crt/revoke", body, content_type=JSON, **user(dep))
        assert reply.status == 400, reply.body
    assert _crl_serials(dep) == set()
