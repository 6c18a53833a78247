"""CertificateAuthority policy: construction, CSRs, approval, signing, renewal, revocation.

Real SQLite files in tmp_path and a FakeClock; no mocks. CRLs, the CA chain and the
rollover are in test_ca_rollover.py."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtensionOID

from caucase.ca import CertificateAuthority
from caucase.crypto import x509util
from caucase.crypto.x509util import SigningMode
from caucase.exceptions import (
    BadSerial,
    CertificateVerificationError,
    Found,
    NoStorage,
    NotACertificateSigningRequest,
    NotFound,
)
from caucase.storage import Storage
from tests.conftest import FakeClock
from tests.support.ca_helpers import (
    CA_SUBJECT,
    CRT_LIFE,
    MakeCA,
    ca_factory,
    crl_list,
    generate_keys,
    make_csr,
    name,
    pem,
    self_signed,
    signed,
)


@pytest.fixture(scope="module")
def user_keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(6)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "ca.sqlite")


@pytest.fixture
def make_ca(db_path: str, clock: FakeClock) -> MakeCA:
    return ca_factory(db_path, clock)


@pytest.fixture
def ca(make_ca: MakeCA) -> CertificateAuthority:
    return make_ca()


def foreign_certificate(key: rsa.RSAPrivateKey, now: datetime.datetime) -> bytes:
    """A certificate no caucase CA signed, naming the CA as its issuer."""
    return pem(self_signed(key, "intruder", issuer=CA_SUBJECT, now=now, days=30))


# Construction and CA material


def test_ca_life_period_below_three_is_refused(make_ca: MakeCA) -> None:
    with pytest.raises(ValueError):
        make_ca(ca_life_period=2)


def test_first_ca_is_generated_at_construction(ca: CertificateAuthority, clock: FakeClock) -> None:
    (ca_crt,) = ca.get_ca_certificate_list()
    assert ca_crt.subject == CA_SUBJECT
    assert ca_crt.issuer == CA_SUBJECT
    assert ca_crt.not_valid_before_utc == clock() - datetime.timedelta(seconds=10)
    assert ca_crt.not_valid_after_utc - ca_crt.not_valid_before_utc == datetime.timedelta(
        days=4 * CRT_LIFE
    )
    assert x509util.load_certificate(ca.get_ca_certificate()) == ca_crt
    assert ca.get_ca_certificate_chain() == []


def test_restart_reuses_the_stored_ca(make_ca: MakeCA) -> None:
    first = make_ca().get_ca_certificate()
    assert make_ca().get_ca_certificate() == first


def test_unusable_ca_row_is_skipped_with_a_warning(
    make_ca: MakeCA, db_path: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    storage = Storage(db_path, "cas")
    far = int((clock() + datetime.timedelta(days=1000)).timestamp())
    storage.append_ca_key_pair(far, b"not a key", b"not a certificate")
    with caplog.at_level(logging.WARNING, logger="caucase.ca"):
        ca = make_ca()
    assert len(ca.get_ca_certificate_list()) == 1
    assert any("CA" in record.getMessage() for record in caplog.records)


def test_extra_ca_extensions_are_added(make_ca: MakeCA) -> None:
    constraints = x509util.name_constraints_for_host("127.0.0.1")
    ca = make_ca(ca_extensions=[constraints])
    (ca_crt,) = ca.get_ca_certificate_list()
    extension = ca_crt.extensions.get_extension_for_oid(ExtensionOID.NAME_CONSTRAINTS)
    assert extension.critical
    assert extension.value == constraints.value


# CSR submission, quota, auto-approval


def test_identical_csr_is_stored_once(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    csr_pem = make_csr(user_keys[0])
    csr_id = ca.append_csr(csr_pem)
    assert ca.append_csr(csr_pem) == csr_id
    assert ca.get_csr_list() == [(csr_id, csr_pem)]
    assert ca.get_csr(csr_id) == csr_pem


def test_pending_quota(make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey]) -> None:
    ca = make_ca(max_csr_amount=2)
    first = ca.append_csr(make_csr(user_keys[0]))
    ca.append_csr(make_csr(user_keys[1]))
    with pytest.raises(NoStorage):
        ca.append_csr(make_csr(user_keys[2]))
    assert len(ca.get_csr_list()) == 2
    ca.delete_pending_csr(first)
    ca.append_csr(make_csr(user_keys[2]))
    assert len(ca.get_csr_list()) == 2


def test_first_csrs_are_auto_approved(make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey]) -> None:
    ca = make_ca(auto_sign_csr_amount=1)
    signed_id = ca.append_csr(make_csr(user_keys[0]))
    pending_id = ca.append_csr(make_csr(user_keys[1]))
    crt = x509util.load_certificate(ca.get_certificate(signed_id))
    assert x509util.is_auto_signed(crt)
    assert crt.public_key() == user_keys[0].public_key()
    with pytest.raises(NotFound):
        ca.get_certificate(pending_id)
    assert [csr_id for csr_id, _ in ca.get_csr_list()] == [pending_id]


def test_locked_auto_approve_amount_wins_on_later_runs(
    make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    ca = make_ca(auto_sign_csr_amount=2, lock_auto_sign_csr_amount=True)
    ca.append_csr(make_csr(user_keys[0]))
    restarted = make_ca(auto_sign_csr_amount=0, lock_auto_sign_csr_amount=True)
    second = restarted.append_csr(make_csr(user_keys[1]))
    third = restarted.append_csr(make_csr(user_keys[2]))
    assert x509util.is_auto_signed(x509util.load_certificate(restarted.get_certificate(second)))
    assert [csr_id for csr_id, _ in restarted.get_csr_list()] == [third]


def test_limit_overriding_csr_is_neither_counted_nor_signed(
    make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    ca = make_ca(auto_sign_csr_amount=1, max_csr_amount=1)
    overridden = [ca.append_csr(make_csr(key), override_limits=True) for key in user_keys[:2]]
    assert sorted(csr_id for csr_id, _ in ca.get_csr_list()) == sorted(overridden)
    with pytest.raises(NoStorage):
        ca.append_csr(make_csr(user_keys[2]))
    for csr_id in overridden:
        ca.delete_pending_csr(csr_id)
    counted = ca.append_csr(make_csr(user_keys[2]))
    assert x509util.is_auto_signed(x509util.load_certificate(ca.get_certificate(counted)))


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"-----BEGIN CERTIFICATE REQUEST-----\n"])
def test_garbage_csr_is_refused(ca: CertificateAuthority, garbage: bytes) -> None:
    with pytest.raises(NotACertificateSigningRequest):
        ca.append_csr(garbage)
    assert ca.get_csr_list() == []


def test_csr_with_bad_signature_is_refused(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    csr = x509util.load_certificate_request(make_csr(user_keys[0], "original"))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 1  # flip a bit of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(NotACertificateSigningRequest):
        ca.append_csr(tampered)
    assert ca.get_csr_list() == []


# Signing, rejection, retrieval


def test_sign_pending_csr(ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]) -> None:
    csr_id = ca.append_csr(make_csr(user_keys[0], "service", san="service.example"))
    crt_pem = ca.create_certificate(csr_id)
    crt = x509util.load_certificate(crt_pem)
    (ca_crt,) = ca.get_ca_certificate_list()
    assert crt.subject == name("service")
    assert crt.issuer == ca_crt.subject
    assert crt.public_key() == user_keys[0].public_key()
    assert crt.not_valid_after_utc - crt.not_valid_before_utc == datetime.timedelta(days=CRT_LIFE)
    san = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["service.example"]
    assert not x509util.is_auto_signed(crt)
    assert ca.get_certificate(csr_id) == crt_pem
    assert ca.get_csr_list() == []
    ca.verify_certificate(crt)
    with pytest.raises(NotFound):
        ca.create_certificate(csr_id)


def test_sign_with_template(ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]) -> None:
    csr_id = ca.append_csr(make_csr(user_keys[0], "asked"))
    template = make_csr(user_keys[1], "granted", san="granted.example")
    crt = x509util.load_certificate(ca.create_certificate(csr_id, template))
    assert crt.subject == name("granted")
    assert crt.public_key() == user_keys[0].public_key()
    san = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["granted.example"]


def test_bad_template_leaves_the_csr_pending(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    csr_id = ca.append_csr(make_csr(user_keys[0]))
    with pytest.raises(NotACertificateSigningRequest):
        ca.create_certificate(csr_id, b"not a csr")
    assert [row_id for row_id, _ in ca.get_csr_list()] == [csr_id]


def test_auto_signed_mode_on_manual_signing(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    csr_id = ca.append_csr(make_csr(user_keys[0]))
    crt = x509util.load_certificate(ca.create_certificate(csr_id, mode=SigningMode.YES))
    assert x509util.is_auto_signed(crt)


def test_unknown_ids(ca: CertificateAuthority) -> None:
    for operation in (
        ca.get_csr,
        ca.get_certificate,
        ca.create_certificate,
        ca.delete_pending_csr,
    ):
        with pytest.raises(NotFound):
            operation(12345)


def test_reject_only_pending(ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]) -> None:
    pending = ca.append_csr(make_csr(user_keys[0]))
    signed = ca.append_csr(make_csr(user_keys[1]))
    ca.create_certificate(signed)
    ca.delete_pending_csr(pending)
    with pytest.raises(NotFound):
        ca.get_csr(pending)
    with pytest.raises(NotFound):
        ca.delete_pending_csr(signed)
    assert ca.get_certificate(signed)


# Renewal


def test_renew_keeps_subject_and_auto_signed_mark(
    make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    ca = make_ca(auto_sign_csr_amount=1)
    old_pem = ca.get_certificate(ca.append_csr(make_csr(user_keys[0], "alice")))
    clock.advance(days=10)
    new_pem = ca.renew(old_pem, make_csr(user_keys[1], "ignored"))
    new = x509util.load_certificate(new_pem)
    assert new.subject == name("alice")
    assert x509util.is_auto_signed(new)
    assert new.public_key() == user_keys[1].public_key()
    assert new.not_valid_before_utc == clock() - datetime.timedelta(seconds=10)
    ca.verify_certificate(new)
    ca.verify_certificate(x509util.load_certificate(old_pem))  # renewal does not revoke
    assert ca.get_csr_list() == []


def test_renew_with_an_already_signed_csr_is_not_found(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    old_pem = signed(ca, make_csr(user_keys[0])).public_bytes(serialization.Encoding.PEM)
    renew_csr = make_csr(user_keys[1])
    ca.renew(old_pem, renew_csr)
    with pytest.raises(NotFound):
        ca.renew(old_pem, renew_csr)


def test_renew_refuses_revoked_expired_foreign_and_garbage(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    revoked = signed(ca, make_csr(user_keys[0], "revoked")).public_bytes(
        serialization.Encoding.PEM
    )
    expiring = signed(ca, make_csr(user_keys[1], "expiring")).public_bytes(
        serialization.Encoding.PEM
    )
    ca.revoke_certificate(revoked)
    with pytest.raises(CertificateVerificationError, match="revoked"):
        ca.renew(revoked, make_csr(user_keys[2]))
    with pytest.raises(CertificateVerificationError):
        ca.renew(foreign_certificate(user_keys[3], clock()), make_csr(user_keys[2]))
    for garbage in (b"", b"garbage", make_csr(user_keys[3])):
        with pytest.raises(CertificateVerificationError):
            ca.renew(garbage, make_csr(user_keys[2]))
    clock.advance(days=CRT_LIFE + 1)
    with pytest.raises(CertificateVerificationError):
        ca.renew(expiring, make_csr(user_keys[2]))
    assert ca.get_csr_list() == []


def test_renew_with_garbage_csr(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    old_pem = signed(ca, make_csr(user_keys[0])).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(NotACertificateSigningRequest):
        ca.renew(old_pem, b"garbage")


# Revocation


def test_revoke_certificate(ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]) -> None:
    crt = signed(ca, make_csr(user_keys[0]))
    crt_pem = crt.public_bytes(serialization.Encoding.PEM)
    ca.revoke_certificate(crt_pem)
    with pytest.raises(CertificateVerificationError, match="revoked"):
        ca.verify_certificate(crt)
    with pytest.raises(CertificateVerificationError, match="revoked"):
        ca.revoke_certificate(crt_pem)
    (crl,) = crl_list(ca)
    assert [entry.serial_number for entry in crl] == [crt.serial_number]


def test_revoke_garbage_or_foreign(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    for crt_pem in (b"garbage", foreign_certificate(user_keys[0], clock())):
        with pytest.raises(CertificateVerificationError):
            ca.revoke_certificate(crt_pem)
    (crl,) = crl_list(ca)
    assert len(crl) == 0


@pytest.mark.parametrize("serial", ["0x10", "16", 1.5, True, False, -5, None, [1]])
def test_revoke_serial_refuses_non_integers(ca: CertificateAuthority, serial: Any) -> None:
    before = ca.get_crl_dict()
    with pytest.raises(BadSerial):
        ca.revoke_serial(serial)
    assert ca.get_crl_dict() == before
    (crl,) = crl_list(ca)
    assert len(crl) == 0


def test_revoke_serial(ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]) -> None:
    crt = signed(ca, make_csr(user_keys[0]))
    ca.revoke_serial(crt.serial_number)
    ca.revoke_serial(0)
    ca.revoke_serial(2**200)
    with pytest.raises(Found):
        ca.revoke_serial(crt.serial_number)
    with pytest.raises(CertificateVerificationError, match="revoked"):
        ca.verify_certificate(crt)
    (crl,) = crl_list(ca)
    assert [entry.serial_number for entry in crl] == [crt.serial_number, 0, 2**200]


def test_a_revocation_reason_goes_into_the_crl_entry(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    plain, with_reason, unspecified = (signed(ca, make_csr(key)) for key in user_keys[:3])
    ca.revoke_certificate(pem(plain))
    ca.revoke_certificate(pem(with_reason), x509.ReasonFlags.key_compromise)
    ca.revoke_certificate(pem(unspecified), x509.ReasonFlags.unspecified)

    (crl,) = crl_list(ca)
    entries = {entry.serial_number: entry for entry in crl}
    reason = entries[with_reason.serial_number].extensions.get_extension_for_class(x509.CRLReason)
    assert reason.value.reason is x509.ReasonFlags.key_compromise and not reason.critical
    # RFC 5280 5.3.1: no reasonCode rather than "unspecified".
    assert len(entries[plain.serial_number].extensions) == 0
    assert len(entries[unspecified.serial_number].extensions) == 0


def test_a_reason_leaves_with_its_expired_revocation(
    make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock, db_path: str
) -> None:
    ca = make_ca()
    crt = signed(ca, make_csr(user_keys[0]))
    ca.revoke_certificate(pem(crt), x509.ReasonFlags.superseded)
    storage = Storage(db_path, "cas")
    assert storage.get_revocation_reasons() == {crt.serial_number: 4}

    clock.advance(days=CRT_LIFE * 2)
    ca.get_crl_dict()

    assert storage.get_revocation_reasons() == {}
    storage.close()


def test_a_certificate_signed_for_an_order_is_stored_as_a_new_row_each_time(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    """ACME finalize: the profile of a user-approved CSR, and a client reusing its key sends
    the same CSR twice, for two certificates."""
    csr = x509util.load_certificate_request(make_csr(user_keys[0], "a.example", san="a.example"))
    rows = []
    for _ in range(2):
        crt_pem, now = ca.sign_for_order(csr, csr)
        rows.append(ca.store_signed(csr, crt_pem, now))
        crt = x509util.load_certificate(crt_pem)
        assert not x509util.is_auto_signed(crt)
        ca.verify_certificate(crt)
        assert ca.get_certificate(rows[-1]) == crt_pem

    assert rows[0] != rows[1]
