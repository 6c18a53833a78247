"""CAs of every key type, and CA rollovers that change the key type.

Real SQLite files, a FakeClock and the real `openssl verify -crl_check` at every step: a CA
of each type signs leaves of each type and CRLs; a CA moves from RSA to ECDSA and from ECDSA
to Ed25519 through the normal passive-then-active rollover, clients learning the new CA
from the chain document before it signs anything."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import SignatureAlgorithmOID

from caucase.ca import CertificateAuthority
from caucase.client import verify_ca_chain
from caucase.crypto import keys, x509util
from caucase.exceptions import CertificateAuthorityException, UnsupportedKey
from caucase.storage import Storage
from tests.conftest import FakeClock
from tests.support.ca_helpers import MakeCA, ca_factory, name, pem
from tests.test_ca_rollover import openssl_verify

TYPES = list(keys.KeyType)
IDS = [key_type.value for key_type in TYPES]
SIGNATURE_ALGORITHMS = {
    keys.KeyType.RSA: SignatureAlgorithmOID.RSA_WITH_SHA256,
    keys.KeyType.EC_P256: SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    keys.KeyType.EC_P384: SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    keys.KeyType.ED25519: SignatureAlgorithmOID.ED25519,
}
CRT_LIFE = 30.0
STEP = datetime.timedelta(days=5)


def spec(key_type: keys.KeyType) -> keys.KeySpec:
    return keys.KeySpec(key_type)


@pytest.fixture(scope="module")
def leaf_keys() -> dict[keys.KeyType, keys.PrivateKey]:
    return {key_type: keys.generate(spec(key_type)) for key_type in TYPES}


@pytest.fixture
def make_ca(tmp_path: Path, clock: FakeClock) -> MakeCA:
    return ca_factory(str(tmp_path / "ca.sqlite"), clock)


def csr(key: CertificateIssuerPrivateKeyTypes, common_name: str = "leaf") -> bytes:
    """A CSR signed as caucase would sign it, for any key (DSA included)."""
    algorithm = hashes.SHA256() if isinstance(key, dsa.DSAPrivateKey) else _hash(key)
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(common_name))
    return x509util.dump_certificate_request(builder.sign(key, algorithm))


def _hash(key: object) -> hashes.SHA256 | hashes.SHA384 | None:
    return keys.signature_hash(key)  # type: ignore[arg-type]


def issue(
    ca: CertificateAuthority, key: CertificateIssuerPrivateKeyTypes, cn: str
) -> x509.Certificate:
    return x509util.load_certificate(ca.create_certificate(ca.append_csr(csr(key, cn))))


@pytest.mark.parametrize("ca_type", TYPES, ids=IDS)
def test_a_ca_of_each_type_signs_leaves_of_each_type_and_crls(
    make_ca: MakeCA,
    clock: FakeClock,
    tmp_path: Path,
    leaf_keys: dict[keys.KeyType, keys.PrivateKey],
    ca_type: keys.KeyType,
) -> None:
    ca = make_ca(ca_key_size=spec(ca_type), crt_life=CRT_LIFE)
    (ca_crt,) = ca.get_ca_certificate_list()
    assert keys.kind(ca_crt.public_key()) is ca_type
    assert ca_crt.signature_algorithm_oid == SIGNATURE_ALGORITHMS[ca_type]
    leaves = [issue(ca, leaf_keys[leaf_type], leaf_type.value) for leaf_type in TYPES]
    for leaf, leaf_type in zip(leaves, TYPES):
        assert keys.kind(leaf.public_key()) is leaf_type
        assert leaf.signature_algorithm_oid == SIGNATURE_ALGORITHMS[ca_type]
        ca.verify_certificate(leaf)
    ca.revoke_certificate(pem(leaves[0]))
    (crl_pem,) = ca.get_crl_dict().values()
    crl = x509util.load_crl(crl_pem)
    assert crl.signature_algorithm_oid == SIGNATURE_ALGORITHMS[ca_type]
    assert crl.is_signature_valid(ca_crt.public_key())  # type: ignore[arg-type]
    results = openssl_verify(ca, leaves, clock(), tmp_path)
    assert "certificate revoked" in results[0]
    assert results[1:] == ["OK"] * (len(TYPES) - 1)


@pytest.mark.parametrize(
    "old_type, new_type",
    [
        (keys.KeyType.RSA, keys.KeyType.EC_P256),
        (keys.KeyType.EC_P256, keys.KeyType.ED25519),
        (keys.KeyType.ED25519, keys.KeyType.EC_P384),
    ],
    ids=["rsa-to-ec-p256", "ec-p256-to-ed25519", "ed25519-to-ec-p384"],
)
def test_a_new_key_type_arrives_with_the_next_rollover(
    make_ca: MakeCA,
    clock: FakeClock,
    tmp_path: Path,
    leaf_keys: dict[keys.KeyType, keys.PrivateKey],
    old_type: keys.KeyType,
    new_type: keys.KeyType,
) -> None:
    make_ca(ca_key_size=spec(old_type), crt_life=CRT_LIFE)
    ca = make_ca(ca_key_size=spec(new_type), crt_life=CRT_LIFE)  # the operator's new setting
    (old_ca,) = ca.get_ca_certificate_list()
    assert keys.kind(old_ca.public_key()) is old_type  # nothing changes at once
    client_known = [ca.get_ca_certificate()]
    live: list[x509.Certificate] = []
    phases = []
    while old_ca in (ca_list := ca.get_ca_certificate_list()):
        now = clock()
        client_known += verify_ca_chain(
            json.loads(json.dumps(ca.get_ca_certificate_chain())), client_known, now
        )
        assert all(pem(held) in client_known for held in ca_list)
        leaf = issue(ca, leaf_keys[keys.KeyType.EC_P256], f"leaf at {now}")
        if len(ca_list) == 1:
            phase = "before"
        else:
            phase = "passive" if _signed_by(leaf, old_ca) else "active"
        if phase != (phases or [None])[-1]:
            phases.append(phase)
        live = [crt for crt in [*live, leaf] if crt.not_valid_after_utc > now]
        assert openssl_verify(ca, live, now, tmp_path) == ["OK"] * len(live)
        clock.advance(days=STEP.days)
    assert phases == ["before", "passive", "active"]
    new_ca = ca_list[0]
    assert keys.kind(new_ca.public_key()) is new_type
    assert new_ca.subject == old_ca.subject
    assert all(
        _signed_by(crt, new_ca) for crt in live if crt.not_valid_before_utc > clock() - STEP
    )


def _signed_by(leaf: x509.Certificate, ca_crt: x509.Certificate) -> bool:
    return x509util.authority_key_id_int(leaf) == x509util.authority_key_id_int(ca_crt)


def test_start_rollover_makes_a_passive_ca_at_once(
    make_ca: MakeCA, clock: FakeClock, leaf_keys: dict[keys.KeyType, keys.PrivateKey]
) -> None:
    make_ca(crt_life=CRT_LIFE)
    ca = make_ca(ca_key_size=spec(keys.KeyType.EC_P256), crt_life=CRT_LIFE)
    with pytest.raises(CertificateAuthorityException, match="younger than one certificate"):
        ca.start_rollover()  # the new CA would sign at once: clients could not know it
    clock.advance(days=CRT_LIFE + 1)
    (old_ca,) = ca.get_ca_certificate_list()
    new_ca = ca.start_rollover()
    assert ca.get_ca_certificate_list() == [old_ca, new_ca]
    assert keys.kind(new_ca.public_key()) is keys.KeyType.EC_P256
    assert len(ca.get_ca_certificate_chain()) == 1
    with pytest.raises(CertificateAuthorityException, match="rollover may be under way"):
        ca.start_rollover()
    key = leaf_keys[keys.KeyType.RSA]
    assert _signed_by(issue(ca, key, "passive"), old_ca)
    clock.advance(days=CRT_LIFE + 1)
    assert _signed_by(issue(ca, key, "active"), new_ca)


def test_start_rollover_needs_generation_enabled(make_ca: MakeCA) -> None:
    make_ca()
    with pytest.raises(CertificateAuthorityException, match="disabled"):
        make_ca(ca_key_size=None).start_rollover()


@pytest.mark.parametrize(
    "make_key, reason",
    [
        (lambda: ec.generate_private_key(ec.SECP192R1()), "unsupported elliptic curve secp192r1"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "unsupported elliptic curve secp256k1"),
        (lambda: rsa.generate_private_key(65537, 1024), "2048 to 16384 bits, not 1024"),
        (lambda: dsa.generate_private_key(2048), "unsupported key type DSA"),
    ],
    ids=["p192", "secp256k1", "rsa-1024", "dsa"],
)
def test_csrs_with_unacceptable_keys_are_refused_and_not_stored(
    make_ca: MakeCA,
    leaf_keys: dict[keys.KeyType, keys.PrivateKey],
    make_key: object,
    reason: str,
) -> None:
    ca = make_ca()
    bad_csr = csr(make_key(), "bad")  # type: ignore[operator]
    with pytest.raises(UnsupportedKey, match=reason):
        ca.append_csr(bad_csr)
    old = issue(ca, leaf_keys[keys.KeyType.EC_P256], "holder")
    with pytest.raises(UnsupportedKey, match=reason):
        ca.renew(pem(old), bad_csr)
    assert ca.get_csr_list() == []


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: rsa.generate_private_key(65537, 1024),
        lambda: ec.generate_private_key(ec.SECP521R1()),
    ],
    ids=["rsa-1024", "p521"],
)
def test_a_stored_ca_key_no_longer_accepted_as_new_keeps_signing(
    tmp_path: Path, clock: FakeClock, make_key: object
) -> None:
    """A reference database may hold such a CA (its --import-ca takes any key)."""
    key = make_key()  # type: ignore[operator]
    life = datetime.timedelta(days=4 * CRT_LIFE)
    ca_crt = x509util.make_ca_certificate(key, name("legacy CA"), clock(), life)
    storage = Storage(str(tmp_path / "ca.sqlite"), "cas")
    storage.append_ca_key_pair(
        int(ca_crt.not_valid_after_utc.timestamp()),
        key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption()),
        x509util.dump_certificate(ca_crt),
    )
    ca = CertificateAuthority(storage, name("ignored"), 2048, CRT_LIFE, clock=clock)
    assert ca.get_ca_certificate_list() == [ca_crt]
    leaf = issue(ca, keys.generate(spec(keys.KeyType.EC_P256)), "leaf")
    assert _signed_by(leaf, ca_crt)
    ca.verify_certificate(leaf)
