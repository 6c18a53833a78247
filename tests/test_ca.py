"""CertificateAuthority policy: CSRs, approval, signing, renewal, revocation, CRLs, chain.

Real SQLite files in tmp_path and a FakeClock; no mocks."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from caucase import x509util
from caucase.ca import CertificateAuthority
from caucase.exceptions import (
    BadSerial,
    CertificateAuthorityException,
    CertificateVerificationError,
    Found,
    NoStorage,
    NotACertificateSigningRequest,
    NotFound,
)
from caucase.storage import Storage
from caucase.x509util import SigningMode
from tests.conftest import FakeClock
from tests.servers import make_user, request, start_caucased

CA_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Caucase CAS at test")])
CRT_LIFE = 93.0


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def user_keys() -> list[rsa.RSAPrivateKey]:
    """Leaf keys generated once for the whole module: CSR keys need not be fresh."""
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(6)]


def make_csr(key: rsa.RSAPrivateKey, common_name: str = "user", *, san: str = "") -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name))
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def foreign_certificate(key: rsa.RSAPrivateKey, now: datetime.datetime) -> bytes:
    """A self-issued certificate no caucase CA signed."""
    crt = (
        x509.CertificateBuilder()
        .subject_name(_name("intruder"))
        .issuer_name(CA_SUBJECT)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return crt.public_bytes(serialization.Encoding.PEM)


MakeCA = Callable[..., CertificateAuthority]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "ca.sqlite")


@pytest.fixture
def make_ca(db_path: str, clock: FakeClock) -> MakeCA:
    """Build a CA instance over the test database; a second call is a daemon restart."""

    def factory(
        *, max_csr_amount: int = 50, ca_key_size: int | None = 2048, **kw: Any
    ) -> CertificateAuthority:
        storage = Storage(db_path, "cas", max_csr_amount=max_csr_amount)
        kw.setdefault("crt_life", CRT_LIFE)
        return CertificateAuthority(storage, CA_SUBJECT, ca_key_size, clock=clock, **kw)

    return factory


@pytest.fixture
def ca(make_ca: MakeCA) -> CertificateAuthority:
    return make_ca()


def _crl_list(ca: CertificateAuthority) -> list[x509.CertificateRevocationList]:
    return [x509util.load_crl(pem) for pem in ca.get_crl_dict().values()]


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _signed(ca: CertificateAuthority, csr_pem: bytes) -> x509.Certificate:
    return x509util.load_certificate(ca.create_certificate(ca.append_csr(csr_pem)))


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
    assert crt.public_key().public_numbers() == user_keys[0].public_key().public_numbers()
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
    assert crt.subject == _name("service")
    assert crt.issuer == ca_crt.subject
    assert crt.public_key().public_numbers() == user_keys[0].public_key().public_numbers()
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
    assert crt.subject == _name("granted")
    assert crt.public_key().public_numbers() == user_keys[0].public_key().public_numbers()
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
    assert new.subject == _name("alice")
    assert x509util.is_auto_signed(new)
    assert new.public_key().public_numbers() == user_keys[1].public_key().public_numbers()
    assert new.not_valid_before_utc == clock() - datetime.timedelta(seconds=10)
    ca.verify_certificate(new)
    ca.verify_certificate(x509util.load_certificate(old_pem))  # renewal does not revoke
    assert ca.get_csr_list() == []


def test_renew_with_an_already_signed_csr_is_not_found(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    old_pem = _signed(ca, make_csr(user_keys[0])).public_bytes(serialization.Encoding.PEM)
    renew_csr = make_csr(user_keys[1])
    ca.renew(old_pem, renew_csr)
    with pytest.raises(NotFound):
        ca.renew(old_pem, renew_csr)


def test_renew_refuses_revoked_expired_foreign_and_garbage(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    revoked = _signed(ca, make_csr(user_keys[0], "revoked")).public_bytes(
        serialization.Encoding.PEM
    )
    expiring = _signed(ca, make_csr(user_keys[1], "expiring")).public_bytes(
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
    old_pem = _signed(ca, make_csr(user_keys[0])).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(NotACertificateSigningRequest):
        ca.renew(old_pem, b"garbage")


# Revocation


def test_revoke_certificate(ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]) -> None:
    crt = _signed(ca, make_csr(user_keys[0]))
    crt_pem = crt.public_bytes(serialization.Encoding.PEM)
    ca.revoke_certificate(crt_pem)
    with pytest.raises(CertificateVerificationError, match="revoked"):
        ca.verify_certificate(crt)
    with pytest.raises(CertificateVerificationError, match="revoked"):
        ca.revoke_certificate(crt_pem)
    (crl,) = _crl_list(ca)
    assert [entry.serial_number for entry in crl] == [crt.serial_number]


def test_revoke_garbage_or_foreign(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    for crt_pem in (b"garbage", foreign_certificate(user_keys[0], clock())):
        with pytest.raises(CertificateVerificationError):
            ca.revoke_certificate(crt_pem)
    (crl,) = _crl_list(ca)
    assert len(crl) == 0


@pytest.mark.parametrize("serial", ["0x10", "16", 1.5, True, False, -5, None, [1]])
def test_revoke_serial_refuses_non_integers(ca: CertificateAuthority, serial: Any) -> None:
    before = ca.get_crl_dict()
    with pytest.raises(BadSerial):
        ca.revoke_serial(serial)
    assert ca.get_crl_dict() == before
    (crl,) = _crl_list(ca)
    assert len(crl) == 0


def test_revoke_serial(ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey]) -> None:
    crt = _signed(ca, make_csr(user_keys[0]))
    ca.revoke_serial(crt.serial_number)
    ca.revoke_serial(0)
    ca.revoke_serial(2**200)
    with pytest.raises(Found):
        ca.revoke_serial(crt.serial_number)
    with pytest.raises(CertificateVerificationError, match="revoked"):
        ca.verify_certificate(crt)
    (crl,) = _crl_list(ca)
    assert [entry.serial_number for entry in crl] == [crt.serial_number, 0, 2**200]


# CRLs


def test_crl_content(ca: CertificateAuthority, clock: FakeClock) -> None:
    (ca_crt,) = ca.get_ca_certificate_list()
    ((aki, pem),) = ca.get_crl_dict().items()
    crl = x509util.load_crl(pem)
    assert aki == x509util.authority_key_id_int(ca_crt)
    assert crl.issuer == ca_crt.subject
    assert crl.is_signature_valid(ca_crt.public_key())  # type: ignore[arg-type]
    assert _crl_number(crl) == 1
    assert crl.last_update_utc == clock() - datetime.timedelta(seconds=10)
    assert crl.next_update_utc == crl.last_update_utc + datetime.timedelta(days=CRT_LIFE * 0.33)
    assert ca.get_crl_bundle() == pem


def test_crl_numbering_and_this_update_reuse(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    (first,) = _crl_list(ca)
    clock.advance(days=1)
    assert _crl_list(ca)[0].public_bytes(serialization.Encoding.PEM) == first.public_bytes(
        serialization.Encoding.PEM
    )
    ca.revoke_serial(1)
    ca.revoke_serial(2)
    (after_revocations,) = _crl_list(ca)
    assert _crl_number(after_revocations) == 3
    assert after_revocations.last_update_utc == first.last_update_utc
    assert len(after_revocations) == 2
    clock.advance(days=CRT_LIFE * 0.33 / 2)  # now past the cached CRL's half life
    (regenerated,) = _crl_list(ca)
    assert _crl_number(regenerated) == 4
    assert regenerated.last_update_utc == clock() - datetime.timedelta(seconds=10)
    assert len(regenerated) == 2


def test_restart_serves_a_byte_identical_crl(make_ca: MakeCA, clock: FakeClock) -> None:
    before = make_ca().get_crl_dict()
    clock.advance(days=2)
    assert make_ca().get_crl_dict() == before


def test_restart_after_half_life_takes_a_new_number(make_ca: MakeCA, clock: FakeClock) -> None:
    (first,) = _crl_list(make_ca())
    clock.advance(days=CRT_LIFE * 0.33 / 2 + 1)
    (later,) = _crl_list(make_ca())
    assert _crl_number(later) == _crl_number(first) + 1
    assert later.last_update_utc == clock() - datetime.timedelta(seconds=10)


def test_expired_cache_takes_a_new_number_even_when_storage_is_fresh(
    make_ca: MakeCA, clock: FakeClock
) -> None:
    """ca-profile 2.3: an expired cached CRL forgets the stored last update, so a fresher
    one written meanwhile by another CA object still gives way to a new number."""
    first_process = make_ca()
    first_process.get_crl_dict()
    clock.advance(days=CRT_LIFE * 0.33 / 2 + 1)
    (second,) = _crl_list(make_ca())
    (first_again,) = _crl_list(first_process)
    assert _crl_number(second) == 2
    assert _crl_number(first_again) == 3
    assert first_again.last_update_utc == second.last_update_utc


def test_expired_revocations_are_pruned(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    crt = _signed(ca, make_csr(user_keys[0]))
    ca.revoke_certificate(crt.public_bytes(serialization.Encoding.PEM))
    ca.revoke_serial(7)
    clock.advance(days=CRT_LIFE + CRT_LIFE * 0.33 + 1)
    crl_serials = {entry.serial_number for crl in _crl_list(ca) for entry in crl}
    assert crl_serials == {7}


def test_cached_paths_do_not_touch_storage(
    db_path: str, clock: FakeClock, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    """Cached CRLs and revoked serials are served from memory: the fast path of every request."""
    storage = CountingStorage(db_path, "cas")
    ca = CertificateAuthority(storage, CA_SUBJECT, 2048, CRT_LIFE, clock=clock)
    valid = _signed(ca, make_csr(user_keys[0]))
    revoked = _signed(ca, make_csr(user_keys[1]))
    ca.revoke_certificate(revoked.public_bytes(serialization.Encoding.PEM))
    ca.get_crl_dict()
    storage.calls = 0
    for _ in range(3):
        ca.get_crl_dict()
        ca.get_crl_bundle()
        ca.get_ca_certificate()
        ca.get_ca_certificate_chain()
        ca.verify_certificate(valid)
        with pytest.raises(CertificateVerificationError, match="revoked"):
            ca.verify_certificate(revoked)
    assert storage.calls == 0


class CountingStorage(Storage):
    """Storage counting the calls the CA makes: proves the cached paths stay in memory."""

    calls = 0

    def get_crl_state(self) -> tuple[int, int | None]:
        self.calls += 1
        return super().get_crl_state()

    def get_revoked(self, now: int) -> list[tuple[int, int]]:
        self.calls += 1
        return super().get_revoked(now)

    def get_ca_key_pairs(self, now: int) -> list[tuple[bytes, bytes]]:
        self.calls += 1
        return super().get_ca_key_pairs(now)


# Restore-style CA: no key size, never generates


def test_no_key_size_never_generates(make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey]) -> None:
    ca = make_ca(ca_key_size=None)
    assert ca.get_ca_certificate_list() == []
    assert ca.get_crl_dict() == {}
    assert ca.get_ca_certificate_chain() == []
    with pytest.raises(NotFound):
        ca.get_ca_certificate()
    csr_id = ca.append_csr(make_csr(user_keys[0]))
    with pytest.raises(CertificateAuthorityException):
        ca.create_certificate(csr_id)


def test_no_key_size_keeps_an_old_ca_without_crashing(
    make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    anchor = make_ca().get_ca_certificate()
    clock.advance(days=3 * CRT_LIFE)  # past the renewal point (2 periods left)
    restoring = make_ca(ca_key_size=None)
    assert [
        crt.public_bytes(serialization.Encoding.PEM) for crt in restoring.get_ca_certificate_list()
    ] == [anchor]
    crt = _signed(restoring, make_csr(user_keys[0]))
    restoring.verify_certificate(crt)


# Chain document


def test_chain_links_consecutive_cas(make_ca: MakeCA, clock: FakeClock) -> None:
    ca = make_ca()
    clock.advance(days=2 * CRT_LIFE + 1)  # two periods left: the next CA is due
    old, new = ca.get_ca_certificate_list()
    assert new.subject == old.subject
    assert x509util.load_certificate(ca.get_ca_certificate()) == old
    (item,) = ca.get_ca_certificate_chain()
    assert set(item) == {"payload", "digest", "signature"}
    assert item["digest"] == "sha256"
    payload = json.loads(item["payload"])
    assert list(payload) == ["old_pem", "new_pem"]
    assert x509util.load_certificate(payload["old_pem"].encode()) == old
    assert x509util.load_certificate(payload["new_pem"].encode()) == new
    assert item["payload"] == json.dumps(payload)
    x509util.verify_envelope(item, old.public_key())
    _verify_max_salt_pss(item, old.public_key())
    old_crl, new_crl = _crl_list(ca)
    assert list(ca.get_crl_dict()) == [x509util.authority_key_id_int(crt) for crt in (old, new)]
    assert old_crl.issuer == new_crl.issuer == old.subject
    assert old_crl.is_signature_valid(old.public_key())  # type: ignore[arg-type]
    assert new_crl.is_signature_valid(new.public_key())  # type: ignore[arg-type]
    assert _crl_number(old_crl) == _crl_number(new_crl)
    assert old_crl.last_update_utc == new_crl.last_update_utc


def _verify_max_salt_pss(item: dict[str, Any], public_key: Any) -> None:
    """The chain signature as the reference client checks it: PSS, MGF1-SHA256, max salt."""
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(
        base64.b64decode(item["signature"]),
        (item["payload"] + item["digest"] + " ").encode(),
        padding.PSS(padding.MGF1(hashes.SHA256()), public_key.key_size // 8 - 32 - 2),
        hashes.SHA256(),
    )


# Threads


def test_concurrent_requests_generate_one_new_ca(
    make_ca: MakeCA, db_path: str, clock: FakeClock, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    ca = make_ca()
    clock.advance(days=2 * CRT_LIFE + 1)  # every thread finds the next CA due
    barrier = threading.Barrier(len(user_keys))
    issued: list[x509.Certificate] = []
    errors: list[BaseException] = []

    def request(key: rsa.RSAPrivateKey) -> None:
        try:
            barrier.wait(timeout=30)
            ca.get_crl_dict()
            issued.append(_signed(ca, make_csr(key)))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=request, args=(key,)) for key in user_keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(ca.get_ca_certificate_list()) == 2
    with sqlite3.connect(db_path) as connection:
        (stored_ca_rows,) = connection.execute("SELECT COUNT(*) FROM casca").fetchone()
    assert stored_ca_rows == 2
    assert len({crt.serial_number for crt in issued}) == len(user_keys)
    for crt in issued:
        ca.verify_certificate(crt)


# Interoperability with the reference's database


@pytest.mark.interop
def test_reference_database_round_trip(tmp_path: Path, reference_bin: Path) -> None:
    """Our CA serves the reference's CRL byte for byte from its database, and a revocation
    we record there is served by the reference after a restart."""
    workdir = tmp_path / "reference"
    server = start_caucased([reference_bin / "caucased"], workdir)
    try:
        user = make_user(server, tmp_path / "user.pem")
        envelope = {"digest": None, "payload": json.dumps({"revoke_serial": 4242})}
        status, _, _ = request(
            server,
            "PUT",
            "/cas/crt/revoke",
            json.dumps(envelope).encode(),
            {"Content-Type": "application/json"},
            https=True,
            cert_file=user,
        )
        assert status == 204
        _, _, reference_ca = request(server, "GET", "/cas/crt/ca.crt.pem")
        _, _, reference_crl = request(server, "GET", "/cas/crl")
    finally:
        server.stop()
    db_path = str(workdir / "caucase.sqlite")
    ours = CertificateAuthority(Storage(db_path, "cas"), CA_SUBJECT, 2048, CRT_LIFE)
    assert ours.get_ca_certificate() == reference_ca
    assert ours.get_crl_bundle() == reference_crl
    ours.revoke_serial(4343)
    (our_crl,) = _crl_list(ours)
    assert _crl_number(our_crl) == 3
    server = start_caucased([reference_bin / "caucased"], workdir)
    try:
        _, _, reference_crl = request(server, "GET", "/cas/crl")
    finally:
        server.stop()
    assert reference_crl == ours.get_crl_bundle()
    assert [entry.serial_number for entry in x509util.load_crl(reference_crl)] == [4242, 4343]
