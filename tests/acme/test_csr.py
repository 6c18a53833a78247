"""The finalize CSR must name exactly the order's identifiers; the certificate's names
come from the order, an IP address never in the CN."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caucase.acme import problems
from caucase.acme.csr import check_finalize_csr
from caucase.acme.identifiers import Identifier
from caucase.crypto import keys

ACCOUNT_KEY_ID = "0" * 40


def encoded_csr(
    common_name: str | None,
    alt_names: list[x509.GeneralName],
    key: ec.EllipticCurvePrivateKey | None = None,
) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(der).rstrip(b"=").decode()


def dns(name: str) -> x509.DNSName:
    return x509.DNSName(name)


def ip(address: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_address(address))


ORDER = (Identifier.dns("a.example"), Identifier.dns("*.b.example"), Identifier.ip("10.0.0.7"))


def test_a_matching_csr_names_the_order() -> None:
    csr = encoded_csr(None, [dns("A.example"), dns("*.b.example"), ip("10.0.0.7")])

    checked = check_finalize_csr(csr, ORDER, ACCOUNT_KEY_ID)

    assert checked.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "*.b.example")])
    assert list(checked.subject_alt_name) == [dns("*.b.example"), dns("a.example"), ip("10.0.0.7")]


def test_a_csr_cn_that_is_a_dns_identifier_is_kept() -> None:
    csr = encoded_csr("A.example", [dns("a.example"), dns("*.b.example"), ip("10.0.0.7")])

    subject = check_finalize_csr(csr, ORDER, ACCOUNT_KEY_ID).subject

    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a.example"


def test_names_in_the_cn_only_count() -> None:
    order = (Identifier.dns("a.example"),)
    checked = check_finalize_csr(encoded_csr("a.example", []), order, ACCOUNT_KEY_ID)
    assert list(checked.subject_alt_name) == [dns("a.example")]


def test_an_ip_address_never_becomes_the_cn() -> None:
    order = (Identifier.ip("2001:db8::1"),)

    checked = check_finalize_csr(
        encoded_csr("2001:DB8::1", [ip("2001:db8::1")]), order, ACCOUNT_KEY_ID
    )

    assert checked.subject == x509.Name([])
    assert list(checked.subject_alt_name) == [ip("2001:db8::1")]


@pytest.mark.parametrize(
    "alt_names",
    [
        [dns("a.example"), dns("*.b.example")],
        [dns("a.example"), dns("*.b.example"), ip("10.0.0.7"), dns("c.example")],
        [dns("a.example"), dns("x.b.example"), ip("10.0.0.7")],
        [dns("a.example"), dns("*.b.example"), ip("10.0.0.8")],
        [dns("a.example"), dns("*.b.example"), ip("10.0.0.7"), x509.RFC822Name("a@a.example")],
        [dns("a.example"), dns("*.b.example"), ip("10.0.0.7"), dns("bad_name.example")],
    ],
)
def test_a_csr_for_other_names_is_bad(alt_names: list[x509.GeneralName]) -> None:
    with pytest.raises(problems.BadCSR):
        check_finalize_csr(encoded_csr(None, alt_names), ORDER, ACCOUNT_KEY_ID)


def test_a_cn_outside_the_order_is_bad() -> None:
    csr = encoded_csr("c.example", [dns("a.example"), dns("*.b.example"), ip("10.0.0.7")])
    with pytest.raises(problems.BadCSR, match=r"c\.example"):
        check_finalize_csr(csr, ORDER, ACCOUNT_KEY_ID)


def test_the_account_key_cannot_be_certified() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = encoded_csr("a.example", [], key)
    with pytest.raises(problems.BadCSR, match="account key"):
        check_finalize_csr(csr, (Identifier.dns("a.example"),), keys.key_id(key.public_key()))


@pytest.mark.parametrize("encoded", [None, 5, "", "!!!!", "AAAA", "x" * 30_000])
def test_undecodable_csrs(encoded: object) -> None:
    with pytest.raises((problems.BadCSR, problems.Malformed)):
        check_finalize_csr(encoded, ORDER, ACCOUNT_KEY_ID)


def test_a_csr_with_a_bad_self_signature_is_bad() -> None:
    der = bytearray(base64.urlsafe_b64decode(encoded_csr("a.example", []) + "=="))
    der[-5] ^= 1

    with pytest.raises(problems.BadCSR):
        check_finalize_csr(
            base64.urlsafe_b64encode(bytes(der)).rstrip(b"=").decode(),
            (Identifier.dns("a.example"),),
            ACCOUNT_KEY_ID,
        )
