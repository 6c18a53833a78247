"""The caucase certificate profile, checked field by field and against the real `openssl`."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from caucase.crypto import crl_profile, verification, x509util
from caucase.crypto.envelope import DIGEST_LIST, sign_envelope, verify_envelope
from caucase.crypto.keys import dump_private_key, generate, key_id, load_private_key
from caucase.crypto.x509util import SigningMode
from caucase.exceptions import (
    BadEnvelope,
    CertificateAuthorityException,
    CertificateVerificationError,
    NotACertificateSigningRequest,
)
from tests.conftest import FakeClock
from tests.support.servers import request, start_caucased

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = datetime.timedelta(days=1)
CA_LIFE = 372 * DAY
CRT_LIFE = 93 * DAY
CA_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Caucase CAS at 127.0.0.1:80")])
CRL_BASE = "http://127.0.0.1:80/cas/crl"
AUTO_SIGNED_DER = (
    bytes.fromhex("30423040060d2b0601040182a464c628460000302f302d06082b0601050507020230210c1f")
    + b"Auto-signed caucase certificate"
)

ExtensionRequest = tuple[x509.ExtensionType, bool]


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    """A few 2048-bit keys, generated once for the module."""
    return [generate() for _ in range(4)]


@pytest.fixture(scope="module")
def ca_key(keys: list[rsa.RSAPrivateKey]) -> rsa.RSAPrivateKey:
    return keys[0]


@pytest.fixture(scope="module")
def leaf_key(keys: list[rsa.RSAPrivateKey]) -> rsa.RSAPrivateKey:
    return keys[1]


@pytest.fixture(scope="module")
def ca_crt(ca_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return x509util.make_ca_certificate(ca_key, CA_SUBJECT, NOW, CA_LIFE)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _csr(
    key: rsa.RSAPrivateKey,
    extensions: Sequence[ExtensionRequest] = (),
    subject: x509.Name | None = None,
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        _name("leaf") if subject is None else subject
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical)
    return builder.sign(key, hashes.SHA256())


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    bits = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    return x509.KeyUsage(**{**bits, **enabled})


def _issue(
    ca_key: rsa.RSAPrivateKey,
    ca_crt: x509.Certificate,
    template: x509util.Template,
    mode: SigningMode = SigningMode.NO,
    crl_base_url: str | None = None,
    public_key: Any = None,
    now: datetime.datetime = NOW,
) -> x509.Certificate:
    key = public_key or template.public_key()
    return x509util.issue_certificate(
        ca_key, ca_crt, key, template, mode, now, CRT_LIFE, crl_base_url
    )


def _oids(crt: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return [extension.oid for extension in crt.extensions]


def _policy_oids(crt: x509.Certificate) -> list[str]:
    policies = crt.extensions.get_extension_for_class(x509.CertificatePolicies).value
    return [policy.policy_identifier.dotted_string for policy in policies]


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


# --- CA certificates -------------------------------------------------------------------------


def test_ca_certificate_profile(ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate) -> None:
    ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    assert ca_crt.version is x509.Version.v3
    assert ca_crt.subject == ca_crt.issuer == CA_SUBJECT
    assert ca_crt.not_valid_before_utc == NOW - datetime.timedelta(seconds=10)
    assert ca_crt.not_valid_after_utc == ca_crt.not_valid_before_utc + CA_LIFE
    assert ca_crt.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
    assert 0 < ca_crt.serial_number < 2**159
    assert [(e.oid, e.critical) for e in ca_crt.extensions] == [
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.KEY_USAGE, True),
    ]
    values = [extension.value for extension in ca_crt.extensions]
    assert values[0] == ski
    assert values[1].public_bytes() == bytes.fromhex("30168014") + ski.digest
    assert values[2].public_bytes() == bytes.fromhex("30060101ff020100")
    assert values[3].public_bytes() == bytes.fromhex("03020106")
    assert verification.is_valid_ca(ca_crt, NOW)


def test_https_ca_gets_name_constraints_last(ca_key: rsa.RSAPrivateKey) -> None:
    constraints = x509util.name_constraints_for_host("127.0.0.1")
    crt = x509util.make_ca_certificate(ca_key, CA_SUBJECT, NOW, CA_LIFE, [constraints])
    assert crt.extensions[4] == constraints
    assert crt.extensions[4].critical


def test_name_constraints_for_ipv4_match_reference_bytes() -> None:
    extension = x509util.name_constraints_for_host("127.0.0.1")
    assert extension.critical
    assert extension.oid == ExtensionOID.NAME_CONSTRAINTS
    assert extension.value.public_bytes() == bytes.fromhex(
        "3014a00c300a87087f000001ffffffffa10430028200"
    )


def test_name_constraints_for_ipv6_exclude_every_dns_name() -> None:
    constraints = x509util.name_constraints_for_host("[::1]").value
    assert constraints.permitted_subtrees == [x509.IPAddress(ipaddress.ip_network("::1/128"))]
    assert constraints.excluded_subtrees == [x509.DNSName("")]


def test_name_constraints_for_dns_name_are_lowercased() -> None:
    constraints = x509util.name_constraints_for_host("LocalHost").value
    assert constraints.permitted_subtrees == [x509.DNSName("localhost")]
    assert constraints.excluded_subtrees is None


def test_renewed_ca_copies_subject_and_extensions(
    keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    private = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00")
    first = x509util.make_ca_certificate(
        keys[0],
        CA_SUBJECT,
        clock(),
        CA_LIFE,
        [
            x509util.name_constraints_for_host("example.org"),
            x509.Extension(private.oid, True, private),
        ],
    )
    later = clock.advance(days=200)
    renewed = x509util.renew_ca_certificate(first, keys[2], later, CA_LIFE)
    new_ski = x509.SubjectKeyIdentifier.from_public_key(keys[2].public_key())
    assert renewed.subject == renewed.issuer == first.subject
    assert renewed.not_valid_before_utc == later - datetime.timedelta(seconds=10)
    assert renewed.not_valid_after_utc == renewed.not_valid_before_utc + CA_LIFE
    assert renewed.serial_number != first.serial_number
    assert renewed.extensions[0].value == new_ski
    assert renewed.extensions[1].value.key_identifier == new_ski.digest
    assert list(renewed.extensions)[2:] == list(first.extensions)[2:]
    assert verification.is_valid_ca(renewed, later)


# --- leaf certificates -----------------------------------------------------------------------


def test_leaf_without_crl_url_has_the_fixed_head(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    crt = _issue(ca_key, ca_crt, _csr(leaf_key))
    assert _oids(crt) == [
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ]
    basic = crt.extensions[0]
    assert basic.critical and basic.value.public_bytes() == b"\x30\x00"
    assert crt.extensions[1].value == x509.SubjectKeyIdentifier.from_public_key(
        leaf_key.public_key()
    )
    ca_aki = ca_crt.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert crt.extensions[2].value == ca_aki
    assert crt.issuer == ca_crt.subject
    assert crt.not_valid_before_utc == NOW - datetime.timedelta(seconds=10)
    assert crt.not_valid_after_utc == crt.not_valid_before_utc + CRT_LIFE
    assert crt.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
    crt.verify_directly_issued_by(ca_crt)


def test_leaf_crl_distribution_point_names_the_ca_by_decimal_aki(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    crt = _issue(ca_key, ca_crt, _csr(leaf_key), crl_base_url=CRL_BASE)
    extension = crt.extensions[3]
    assert extension.oid == ExtensionOID.CRL_DISTRIBUTION_POINTS and not extension.critical
    (point,) = extension.value
    aki = ca_crt.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    expected = f"{CRL_BASE}/{int.from_bytes(aki.key_identifier, 'big')}"
    assert point.full_name == [x509.UniformResourceIdentifier(expected)]
    assert point.reasons is None and point.crl_issuer is None and point.relative_name is None
    assert x509util.authority_key_id_int(ca_crt) == int(expected.rsplit("/", 1)[1])


def test_leaf_takes_public_key_from_argument_not_template(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, keys: list[rsa.RSAPrivateKey]
) -> None:
    crt = _issue(ca_key, ca_crt, _csr(keys[1]), public_key=keys[2].public_key())
    assert key_id(crt.public_key()) == key_id(keys[2].public_key())
    assert crt.extensions[1].value.digest.hex() == key_id(keys[2].public_key())


def test_leaf_subject_is_copied_verbatim(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Nexedi"),
                ]
            ),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(
                        NameOID.COMMON_NAME, "printable", x509.name._ASN1Type.PrintableString
                    )
                ]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.c")]),
        ]
    )
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, subject=subject))
    assert crt.subject.public_bytes() == subject.public_bytes()
    empty = _issue(ca_key, ca_crt, _csr(leaf_key, subject=x509.Name([])))
    assert empty.subject == x509.Name([])


def test_key_usage_drops_ca_bits_and_keeps_critical_flag(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    usage = _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True)
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, [(usage, False)]))
    extension = crt.extensions.get_extension_for_class(x509.KeyUsage)
    assert not extension.critical
    assert extension.value == _key_usage(digital_signature=True)
    assert _oids(crt)[3] == ExtensionOID.KEY_USAGE


def test_key_usage_keeps_encipher_only_with_key_agreement(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    usage = _key_usage(key_agreement=True, encipher_only=True, decipher_only=True)
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, [(usage, True)]))
    extension = crt.extensions.get_extension_for_class(x509.KeyUsage)
    assert extension.critical
    assert extension.value == usage


def test_key_usage_left_empty_is_omitted(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    """Deviation: the reference writes an empty KeyUsage, which RFC 5280 forbids."""
    usage = _key_usage(key_cert_sign=True, crl_sign=True)
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, [(usage, True)]))
    assert x509.KeyUsage not in {type(extension.value) for extension in crt.extensions}


def test_extended_key_usage_drops_ocsp_signing(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    usage = x509.ExtendedKeyUsage(
        [
            ExtendedKeyUsageOID.CLIENT_AUTH,
            ExtendedKeyUsageOID.OCSP_SIGNING,
            ExtendedKeyUsageOID.SERVER_AUTH,
        ]
    )
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, [(usage, True)]))
    extension = crt.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert extension.critical
    assert list(extension.value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
    ]


def test_extended_key_usage_left_empty_is_omitted(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    """Deviation: the reference writes an empty SEQUENCE, which nothing can parse."""
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING])
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, [(usage, False)]))
    reparsed = x509util.load_certificate(x509util.dump_certificate(crt))
    assert ExtensionOID.EXTENDED_KEY_USAGE not in _oids(reparsed)


def test_subject_alternative_name_copied_verbatim_in_order(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    names = x509.SubjectAlternativeName(
        [
            x509.DNSName("Example.ORG"),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            x509.RFC822Name("a@example.org"),
            x509.UniformResourceIdentifier("https://example.org/x"),
        ]
    )
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    template = _csr(
        leaf_key, [(names, True), (usage, False), (_key_usage(digital_signature=True), True)]
    )
    crt = _issue(ca_key, ca_crt, template, crl_base_url=CRL_BASE)
    assert _oids(crt)[3:] == [
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ]
    extension = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert extension.critical and extension.value == names


def test_other_template_extensions_are_dropped(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    private = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00")
    template = _csr(
        leaf_key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (private, False),
            (x509.SubjectKeyIdentifier(b"\x01" * 20), False),
            (x509util.name_constraints_for_host("example.org").value, True),
        ],
    )
    crt = _issue(ca_key, ca_crt, template)
    assert len(crt.extensions) == 3
    assert crt.extensions[0].value.ca is False
    assert crt.extensions[1].value.digest != b"\x01" * 20


def _policy(oid: str, text: str | None = None) -> x509.PolicyInformation:
    qualifiers = None if text is None else [text]
    return x509.PolicyInformation(x509.ObjectIdentifier(oid), qualifiers)


def test_auto_signing_adds_the_policy_exactly_as_the_reference(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    crt = _issue(ca_key, ca_crt, _csr(leaf_key), SigningMode.YES)
    extension = crt.extensions[-1]
    assert extension.oid == ExtensionOID.CERTIFICATE_POLICIES and not extension.critical
    assert extension.value.public_bytes() == AUTO_SIGNED_DER
    assert x509util.is_auto_signed(crt)


@pytest.mark.parametrize("mode", [SigningMode.NO, SigningMode.PASSTHROUGH])
def test_no_policy_is_added_unless_auto_signing(
    ca_key: rsa.RSAPrivateKey,
    ca_crt: x509.Certificate,
    leaf_key: rsa.RSAPrivateKey,
    mode: SigningMode,
) -> None:
    crt = _issue(ca_key, ca_crt, _csr(leaf_key), mode)
    assert ExtensionOID.CERTIFICATE_POLICIES not in _oids(crt)
    assert not x509util.is_auto_signed(crt)


def test_auto_signing_strips_caucase_policies_and_keeps_criticality(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    requested = x509.CertificatePolicies(
        [
            _policy(x509util.AUTO_SIGNED_OID, "forged"),
            _policy(x509util.CAUCASE_OID_TOP + ".5"),
            _policy("1.2.3", "kept"),
        ]
    )
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, [(requested, True)]), SigningMode.YES)
    extension = crt.extensions.get_extension_for_class(x509.CertificatePolicies)
    assert extension.critical
    assert _policy_oids(crt) == ["1.2.3", x509util.AUTO_SIGNED_OID]
    assert extension.value[0].policy_qualifiers == ["kept"]
    assert extension.value[1] == x509.PolicyInformation(
        x509.ObjectIdentifier(x509util.AUTO_SIGNED_OID),
        [x509.UserNotice(None, x509util.AUTO_SIGNED_TEXT)],
    )


def test_manual_signing_strips_caucase_and_legacy_policies(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    requested = x509.CertificatePolicies(
        [
            _policy(x509util.LEGACY_AUTO_SIGNED_OID),
            _policy(x509util.CAUCASE_OID_TOP + ".999"),
            _policy("1.2.3"),
        ]
    )
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, [(requested, False)]), SigningMode.NO)
    assert _policy_oids(crt) == ["1.2.3"]
    assert not x509util.is_auto_signed(crt)


def test_manual_signing_omits_a_policy_list_left_empty(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    """Deviation: the reference writes an empty list, which RFC 5280 forbids."""
    requested = x509.CertificatePolicies([_policy(x509util.AUTO_SIGNED_OID)])
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, [(requested, True)]), SigningMode.NO)
    reparsed = x509util.load_certificate(x509util.dump_certificate(crt))
    assert x509.CertificatePolicies not in {type(e.value) for e in reparsed.extensions}


def test_passthrough_keeps_the_mark_and_rewrites_the_legacy_arc(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    requested = x509.CertificatePolicies(
        [
            _policy(x509util.AUTO_SIGNED_OID, "kept"),
            _policy(x509util.LEGACY_OID_TOP + ".999", "legacy qualifier"),
            _policy("1.2.3"),
        ]
    )
    crt = _issue(ca_key, ca_crt, _csr(leaf_key, [(requested, False)]), SigningMode.PASSTHROUGH)
    extension = crt.extensions.get_extension_for_class(x509.CertificatePolicies)
    assert _policy_oids(crt) == [
        x509util.AUTO_SIGNED_OID,
        x509util.CAUCASE_OID_TOP + ".999",
        "1.2.3",
    ]
    assert extension.value[1].policy_qualifiers == ["legacy qualifier"]
    assert x509util.is_auto_signed(crt)


def test_renewal_reads_a_certificate_template(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, keys: list[rsa.RSAPrivateKey]
) -> None:
    names = x509.SubjectAlternativeName([x509.DNSName("svc.example.org")])
    old = _issue(ca_key, ca_crt, _csr(keys[1], [(names, False)]), SigningMode.YES, CRL_BASE)
    renewed = _issue(
        ca_key, ca_crt, old, SigningMode.PASSTHROUGH, CRL_BASE, keys[2].public_key(), NOW + DAY
    )
    assert renewed.subject == old.subject
    assert [(e.oid, e.critical) for e in renewed.extensions] == [
        (e.oid, e.critical) for e in old.extensions
    ]
    assert renewed.extensions[1].value.digest.hex() == key_id(keys[2].public_key())
    assert x509util.is_auto_signed(renewed)


def test_legacy_auto_signed_mark_is_recognised(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    policies = x509.CertificatePolicies([_policy(x509util.LEGACY_AUTO_SIGNED_OID)])
    crt = (
        x509.CertificateBuilder()
        .subject_name(_name("old"))
        .issuer_name(ca_crt.subject)
        .public_key(leaf_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + DAY)
        .add_extension(policies, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    assert x509util.is_auto_signed(crt)


def test_unparsable_template_extensions_are_a_clean_error(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    """encipherOnly without keyAgreement: cryptography cannot read it back (the reference 500s)."""
    raw_usage = x509.UnrecognizedExtension(ExtensionOID.KEY_USAGE, bytes.fromhex("03020001"))
    template = _csr(leaf_key, [(raw_usage, True)])
    with pytest.raises(CertificateAuthorityException):
        _issue(ca_key, ca_crt, template)
    with pytest.raises(NotACertificateSigningRequest):
        x509util.load_certificate_request(x509util.dump_certificate_request(template))


def test_csr_with_an_unsupported_general_name_is_refused(leaf_key: rsa.RSAPrivateKey) -> None:
    x400_address = bytes.fromhex("3004a3023000")  # SAN holding one empty x400Address
    names = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, x400_address)
    pem = x509util.dump_certificate_request(_csr(leaf_key, [(names, False)]))
    with pytest.raises(NotACertificateSigningRequest):
        x509util.load_certificate_request(pem)


def test_serials_are_positive_and_at_most_159_bits() -> None:
    serials = [x509util.random_serial() for _ in range(2000)]
    assert all(0 < serial < 2**159 for serial in serials)
    assert max(serials).bit_length() >= 150
    assert len(set(serials)) == len(serials)


def test_time_switches_to_generalized_time_from_2050(ca_key: rsa.RSAPrivateKey) -> None:
    start = datetime.datetime(2049, 12, 31, 23, 0, 0, 900000, tzinfo=UTC)
    crt = x509util.make_ca_certificate(ca_key, CA_SUBJECT, start, CA_LIFE)
    der = crt.public_bytes(serialization.Encoding.DER)
    assert b"\x17\x0d491231225950Z" in der  # UTCTime, sub-second part floored
    assert b"\x18\x0f20510107225950Z" in der  # GeneralizedTime from 2050 on
    assert crt.not_valid_after_utc == datetime.datetime(2051, 1, 7, 22, 59, 50, tzinfo=UTC)


def test_key_id_is_the_sha1_of_the_pkcs1_key_and_equals_the_ski(
    ca_crt: x509.Certificate, ca_key: rsa.RSAPrivateKey
) -> None:
    pkcs1 = ca_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    expected = hashlib.sha1(pkcs1).hexdigest()
    assert key_id(ca_key.public_key()) == expected
    ski = ca_crt.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest.hex() == expected


def test_key_id_of_a_compressed_ec_point_hashes_the_uncompressed_point() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    uncompressed = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    compressed = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    reloaded = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), compressed)
    assert key_id(reloaded) == hashlib.sha1(uncompressed).hexdigest()


def test_authority_key_id_int_refuses_documents_without_aki(
    leaf_key: rsa.RSAPrivateKey,
) -> None:
    bare = (
        x509.CertificateBuilder()
        .subject_name(_name("bare"))
        .issuer_name(_name("bare"))
        .public_key(leaf_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + DAY)
        .sign(leaf_key, hashes.SHA256())
    )
    with pytest.raises(ValueError):
        x509util.authority_key_id_int(bare)


# --- CRLs ------------------------------------------------------------------------------------


def test_crl_fields(ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate) -> None:
    this_update = NOW - datetime.timedelta(seconds=10)
    next_update = this_update + CRT_LIFE * 0.33
    revoked = [(12345, NOW + datetime.timedelta(seconds=5)), (2**158 + 1, NOW - DAY)]
    crl = crl_profile.make_crl(ca_key, ca_crt, revoked, 42, this_update, next_update)
    reparsed = x509util.load_crl(x509util.dump_crl(crl))
    assert reparsed.issuer == ca_crt.subject
    assert reparsed.last_update_utc == this_update
    assert reparsed.next_update_utc == datetime.datetime(2026, 12, 28, 4, 33, 26, tzinfo=UTC)
    assert reparsed.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
    assert reparsed.is_signature_valid(ca_key.public_key())
    assert [(entry.serial_number, entry.revocation_date_utc) for entry in reparsed] == revoked
    assert all(len(entry.extensions) == 0 for entry in reparsed)
    assert [(e.oid, e.critical) for e in reparsed.extensions] == [
        (ExtensionOID.CRL_NUMBER, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
    ]
    assert reparsed.extensions[0].value.crl_number == 42
    assert x509util.authority_key_id_int(reparsed) == x509util.authority_key_id_int(ca_crt)


def test_crl_version_is_v2(ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate) -> None:
    crl = crl_profile.make_crl(ca_key, ca_crt, [], 1, NOW, NOW + DAY)
    text = _openssl_text("crl", x509util.dump_crl(crl))
    assert "Version 2 (0x1)" in text
    assert "No Revoked Certificates." in text


def test_crl_lists_zero_and_oversized_serials_but_not_negative(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate
) -> None:
    revoked = [(0, NOW), (2**200, NOW)]
    crl = crl_profile.make_crl(ca_key, ca_crt, revoked, 1, NOW, NOW + DAY)
    reparsed = x509util.load_crl(x509util.dump_crl(crl))
    assert [entry.serial_number for entry in reparsed] == [0, 2**200]
    with pytest.raises(ValueError):
        crl_profile.make_crl(ca_key, ca_crt, [(-5, NOW)], 1, NOW, NOW + DAY)


# --- caucased's own CSR, renewal CSR ---------------------------------------------------------


def test_server_csr_for_an_ip(leaf_key: rsa.RSAPrivateKey) -> None:
    csr = x509util.make_server_csr(leaf_key, "127.0.0.1")
    assert csr.subject == x509.Name([])
    assert csr.is_signature_valid
    assert csr.signature_hash_algorithm is not None
    assert csr.signature_hash_algorithm.name == "sha256"
    assert [(e.oid, e.critical) for e in csr.extensions] == [
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, True),
    ]
    assert csr.extensions[0].value == _key_usage(digital_signature=True)
    assert list(csr.extensions[1].value) == [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def test_server_csr_for_a_dns_name_is_lowercased(leaf_key: rsa.RSAPrivateKey) -> None:
    csr = x509util.make_server_csr(leaf_key, "LocalHost")
    assert list(csr.extensions[1].value) == [x509.DNSName("localhost")]
    ipv6 = x509util.make_server_csr(leaf_key, "::1")
    assert list(ipv6.extensions[1].value) == [x509.IPAddress(ipaddress.ip_address("::1"))]


def test_server_certificate_has_the_observed_extension_order(
    ca_key: rsa.RSAPrivateKey, leaf_key: rsa.RSAPrivateKey
) -> None:
    constraints = x509util.name_constraints_for_host("127.0.0.1")
    https_ca = x509util.make_ca_certificate(
        ca_key, _name("Caucased CA"), NOW, CA_LIFE, [constraints]
    )
    crt = _issue(ca_key, https_ca, x509util.make_server_csr(leaf_key, "127.0.0.1"))
    assert [(e.oid, e.critical) for e in crt.extensions] == [
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, True),
    ]


def test_renewal_csr_has_the_old_subject_and_no_extension(leaf_key: rsa.RSAPrivateKey) -> None:
    csr = x509util.make_renewal_csr(leaf_key, _name("old subject"))
    assert csr.subject == _name("old subject")
    assert len(csr.extensions) == 0
    assert csr.is_signature_valid


# --- verification ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leaf(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> x509.Certificate:
    return _issue(ca_key, ca_crt, _csr(leaf_key))


def _reason(
    crt: x509.Certificate,
    ca_list: list[x509.Certificate],
    now: datetime.datetime,
    revoked: frozenset[int] = frozenset(),
) -> str | None:
    try:
        verification.verify_certificate(crt, ca_list, revoked, now)
    except CertificateVerificationError as error:
        return error.reason
    return None


def test_verify_accepts_a_valid_certificate(
    leaf: x509.Certificate, ca_crt: x509.Certificate, clock: FakeClock
) -> None:
    assert _reason(leaf, [ca_crt], clock()) is None
    assert _reason(leaf, [ca_crt], clock.advance(days=92)) is None


def test_verify_each_failure_reason(
    leaf: x509.Certificate, ca_crt: x509.Certificate, clock: FakeClock
) -> None:
    assert _reason(leaf, [], clock()) == "unable to get local issuer certificate"
    assert _reason(leaf, [ca_crt], clock() - DAY) == "certificate is not yet valid"
    assert _reason(leaf, [ca_crt], clock() + 94 * DAY) == "certificate has expired"
    assert _reason(leaf, [ca_crt], clock(), frozenset({leaf.serial_number})) == (
        "certificate revoked"
    )


def test_verify_reports_revoked_before_expired_like_openssl(
    leaf: x509.Certificate, ca_crt: x509.Certificate
) -> None:
    revoked = frozenset({leaf.serial_number})
    assert _reason(leaf, [ca_crt], NOW + 200 * DAY, revoked) == "certificate revoked"


def test_verify_refuses_a_ca_with_the_same_name_but_another_key(
    leaf: x509.Certificate, keys: list[rsa.RSAPrivateKey]
) -> None:
    impostor = x509util.make_ca_certificate(keys[3], CA_SUBJECT, NOW, CA_LIFE)
    assert _reason(leaf, [impostor], NOW) == "unable to get local issuer certificate"


def test_verify_finds_the_issuer_among_generations(
    leaf: x509.Certificate, ca_crt: x509.Certificate, keys: list[rsa.RSAPrivateKey]
) -> None:
    renewed = x509util.renew_ca_certificate(ca_crt, keys[2], NOW + DAY, CA_LIFE)
    assert _reason(leaf, [renewed, ca_crt], NOW) is None
    new_leaf = _issue(keys[2], renewed, _csr(keys[1]), now=NOW + DAY)
    assert _reason(new_leaf, [ca_crt, renewed], NOW + DAY) is None
    assert _reason(new_leaf, [ca_crt], NOW + DAY) == "unable to get local issuer certificate"


def test_is_valid_ca(ca_crt: x509.Certificate, leaf: x509.Certificate, clock: FakeClock) -> None:
    assert verification.is_valid_ca(ca_crt, clock())
    assert not verification.is_valid_ca(ca_crt, clock() + CA_LIFE + DAY)
    assert not verification.is_valid_ca(ca_crt, clock() - DAY)
    assert not verification.is_valid_ca(leaf, clock())


# --- envelopes -------------------------------------------------------------------------------

PAYLOAD = json.dumps({"crt_pem": "-----BEGIN CERTIFICATE-----\nMII\u00e9\n", "renew_csr_pem": "x"})


@pytest.mark.parametrize("digest", DIGEST_LIST)
def test_envelope_round_trip(leaf_key: rsa.RSAPrivateKey, digest: str) -> None:
    envelope = sign_envelope(leaf_key, PAYLOAD, digest)
    assert envelope["payload"] == PAYLOAD and envelope["digest"] == digest
    assert envelope["signature"].endswith("\n")
    verify_envelope(json.loads(json.dumps(envelope)), leaf_key.public_key())
    stripped = dict(envelope, signature=envelope["signature"].rstrip("\n"))
    verify_envelope(stripped, leaf_key.public_key())


def test_envelope_uses_the_maximum_salt(leaf_key: rsa.RSAPrivateKey) -> None:
    envelope = sign_envelope(leaf_key, PAYLOAD)
    salt_length = 2048 // 8 - 32 - 2
    leaf_key.public_key().verify(
        base64.b64decode(envelope["signature"]),
        PAYLOAD.encode("utf-8") + b"sha256 ",
        padding.PSS(padding.MGF1(hashes.SHA256()), salt_length),
        hashes.SHA256(),
    )


def test_envelope_with_a_32_byte_salt_is_accepted(leaf_key: rsa.RSAPrivateKey) -> None:
    signature = leaf_key.sign(
        PAYLOAD.encode("utf-8") + b"sha512 ",
        padding.PSS(padding.MGF1(hashes.SHA512()), 32),
        hashes.SHA512(),
    )
    envelope = {
        "payload": PAYLOAD,
        "digest": "sha512",
        "signature": base64.b64encode(signature).decode(),
    }
    verify_envelope(envelope, leaf_key.public_key())


def _signed(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    return sign_envelope(key, PAYLOAD)


@pytest.mark.parametrize(
    "change",
    [
        {"payload": PAYLOAD + " "},
        {"digest": "sha384"},
        {"digest": "md5"},
        {"digest": None},
        {"payload": None},
        {"payload": {"crt_pem": "x"}},
        {"signature": None},
        {"signature": 12},
        {"signature": "not base64!"},
        {"signature": "QUJD\u00e9"},
        {"payload": "\ud800"},
    ],
)
def test_envelope_tampering_is_refused(
    leaf_key: rsa.RSAPrivateKey, change: dict[str, Any]
) -> None:
    envelope = {**_signed(leaf_key), **change}
    with pytest.raises(BadEnvelope):
        verify_envelope(envelope, leaf_key.public_key())


def test_envelope_without_a_field_is_refused(leaf_key: rsa.RSAPrivateKey) -> None:
    for field in ("payload", "digest", "signature"):
        envelope = _signed(leaf_key)
        del envelope[field]
        with pytest.raises(BadEnvelope):
            verify_envelope(envelope, leaf_key.public_key())


def test_envelope_signed_by_another_key_is_refused(keys: list[rsa.RSAPrivateKey]) -> None:
    with pytest.raises(BadEnvelope):
        verify_envelope(_signed(keys[1]), keys[2].public_key())


def test_envelope_digest_must_fit_the_key(leaf_key: rsa.RSAPrivateKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(BadEnvelope):
        verify_envelope(_signed(leaf_key), ec_key.public_key())
    with pytest.raises(ValueError):
        sign_envelope(leaf_key, PAYLOAD, "ed25519")
    with pytest.raises(ValueError):
        sign_envelope(leaf_key, PAYLOAD, "md5")


# --- PEM loading -----------------------------------------------------------------------------


def test_load_certificate_request_accepts_one_block(leaf_key: rsa.RSAPrivateKey) -> None:
    pem = x509util.dump_certificate_request(_csr(leaf_key))
    assert x509util.load_certificate_request(b"\n  " + pem + b"\n\n").subject == _name("leaf")
    legacy = pem.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    assert x509util.load_certificate_request(legacy).subject == _name("leaf")


def _flip_signature(csr: x509.CertificateSigningRequest) -> bytes:
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte belongs to the signature BIT STRING
    flipped = x509.load_der_x509_csr(bytes(der))
    return flipped.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda pem, crt: b"garbage",
        lambda pem, crt: b"",
        lambda pem, crt: pem + pem,
        lambda pem, crt: b"hello\n" + pem,
        lambda pem, crt: pem + b"trailing",
        lambda pem, crt: pem.replace(b"\n-----END", b"AAAA\n-----END"),
        lambda pem, crt: crt,
        lambda pem, crt: pem + crt,
        lambda pem, crt: pem.replace(b"CERTIFICATE REQUEST", b"CERTIFICATE"),
    ],
)
def test_load_certificate_request_refuses(
    leaf_key: rsa.RSAPrivateKey, leaf: x509.Certificate, mangle: Any
) -> None:
    pem = x509util.dump_certificate_request(_csr(leaf_key))
    with pytest.raises(NotACertificateSigningRequest):
        x509util.load_certificate_request(mangle(pem, x509util.dump_certificate(leaf)))


def test_load_certificate_request_refuses_a_bad_self_signature(
    leaf_key: rsa.RSAPrivateKey,
) -> None:
    with pytest.raises(NotACertificateSigningRequest, match="self-signature"):
        x509util.load_certificate_request(_flip_signature(_csr(leaf_key)))


def test_load_certificate_and_crl_need_exactly_one_block(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf: x509.Certificate
) -> None:
    crt_pem = x509util.dump_certificate(leaf)
    crl_pem = x509util.dump_crl(crl_profile.make_crl(ca_key, ca_crt, [], 1, NOW, NOW + DAY))
    assert x509util.load_certificate(b"\r\n" + crt_pem + b"  \n") == leaf
    assert x509util.load_crl(crl_pem).extensions[0].value.crl_number == 1
    for bad in (b"", b"junk", crt_pem + crt_pem, b"x" + crt_pem, crl_pem):
        with pytest.raises(ValueError):
            x509util.load_certificate(bad)
    for bad in (crl_pem + crl_pem, crt_pem, crl_pem + b"x"):
        with pytest.raises(ValueError):
            x509util.load_crl(bad)


def test_private_key_round_trip(leaf_key: rsa.RSAPrivateKey, leaf: x509.Certificate) -> None:
    plain = dump_private_key(leaf_key)
    assert plain.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    with_certificate = plain + x509util.dump_certificate(leaf)
    loaded = load_private_key(with_certificate)
    assert key_id(loaded.public_key()) == key_id(leaf_key.public_key())
    encrypted = dump_private_key(leaf_key, b"secret")
    assert b"ENCRYPTED" in encrypted and encrypted.startswith(b"-----BEGIN RSA PRIVATE KEY")
    loaded = load_private_key(encrypted, b"secret")
    assert key_id(loaded.public_key()) == key_id(leaf_key.public_key())
    for pem, password in (
        (encrypted, None),
        (encrypted, b"wrong"),
        (plain, b"secret"),
        (plain + plain, None),
        (b"junk", None),
    ):
        with pytest.raises(ValueError):
            load_private_key(pem, password)


def test_generated_keys_are_rsa_65537() -> None:
    key = generate()
    assert key.key_size == 2048
    assert key.public_key().public_numbers().e == 65537


# --- the real openssl ------------------------------------------------------------------------


def _openssl_text(kind: str, pem: bytes) -> str:
    result = subprocess.run(
        ["openssl", kind, "-noout", "-text"], input=pem, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def test_openssl_parses_every_document(
    ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, keys: list[rsa.RSAPrivateKey]
) -> None:
    constraints = x509util.name_constraints_for_host("127.0.0.1")
    https_ca = x509util.make_ca_certificate(
        ca_key, _name("Caucased CA"), NOW, CA_LIFE, [constraints]
    )
    renewed = x509util.renew_ca_certificate(https_ca, keys[2], NOW, CA_LIFE)
    template = _csr(
        keys[1],
        [
            (_key_usage(key_cert_sign=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False),
            (x509.SubjectAlternativeName([x509.DNSName("a.example")]), False),
            (x509.CertificatePolicies([_policy("1.2.3")]), False),
        ],
    )
    leaf = _issue(ca_key, ca_crt, template, SigningMode.YES, CRL_BASE)
    crl = crl_profile.make_crl(
        ca_key, ca_crt, [(0, NOW), (leaf.serial_number, NOW)], 7, NOW, NOW + DAY
    )
    assert "Permitted" in _openssl_text("x509", x509util.dump_certificate(renewed))
    assert "CA:TRUE, pathlen:0" in _openssl_text("x509", x509util.dump_certificate(https_ca))
    leaf_text = _openssl_text("x509", x509util.dump_certificate(leaf))
    assert "Auto-signed caucase certificate" in leaf_text
    assert f"URI:{CRL_BASE}/{x509util.authority_key_id_int(ca_crt)}" in leaf_text
    assert "Extended Key Usage" not in leaf_text
    assert "X509v3 CRL Number" in _openssl_text("crl", x509util.dump_crl(crl))
    server_csr = x509util.dump_certificate_request(x509util.make_server_csr(keys[1], "::1"))
    result = subprocess.run(
        ["openssl", "req", "-noout", "-verify", "-text"],
        input=server_csr,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert b"IP Address:0:0:0:0:0:0:0:1" in result.stdout


def test_openssl_verifies_then_sees_the_revocation(
    tmp_path: Path, ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate, leaf: x509.Certificate
) -> None:
    (tmp_path / "ca.pem").write_bytes(x509util.dump_certificate(ca_crt))
    (tmp_path / "leaf.pem").write_bytes(x509util.dump_certificate(leaf))
    at_time = str(int((NOW + DAY).timestamp()))

    def openssl_verify(revoked: list[tuple[int, datetime.datetime]]) -> str:
        crl = crl_profile.make_crl(ca_key, ca_crt, revoked, 1, NOW, NOW + 30 * DAY)
        (tmp_path / "crl.pem").write_bytes(x509util.dump_crl(crl))
        result = _openssl(
            "verify", "-attime", at_time, "-crl_check", "-CAfile", str(tmp_path / "ca.pem"),
            "-CRLfile", str(tmp_path / "crl.pem"), str(tmp_path / "leaf.pem"),
        )  # fmt: skip
        return result.stdout + result.stderr

    assert "leaf.pem: OK" in openssl_verify([(5, NOW)])
    assert "certificate revoked" in openssl_verify([(5, NOW), (leaf.serial_number, NOW)])


@pytest.mark.interop
def test_reference_key_id_agrees(
    tmp_path: Path, reference_bin: Path, leaf_key: rsa.RSAPrivateKey
) -> None:
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(dump_private_key(leaf_key))
    result = subprocess.run(
        [str(reference_bin / "caucase-key-id"), "--private-key", str(key_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert key_id(leaf_key.public_key()) in result.stdout


# --- side by side with the reference release --------------------------------------------------


@pytest.fixture(scope="module")
def reference_server(reference_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The reference caucased, auto-approving one service CSR (mode YES, with a CRL URL)."""
    workdir = tmp_path_factory.mktemp("reference")
    server = start_caucased(
        [reference_bin / "caucased"], workdir, ["--service-auto-approve-count", "1"]
    )
    yield server
    server.stop()


def _rich_template(key: rsa.RSAPrivateKey) -> x509.CertificateSigningRequest:
    """A CSR exercising every filter: CA key usages, OCSP signing, caucase and legacy policies."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.COMMON_NAME, "svc", x509.name._ASN1Type.PrintableString),
        ]
    )
    usage = _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True)
    purposes = [ExtendedKeyUsageOID.OCSP_SIGNING, ExtendedKeyUsageOID.CLIENT_AUTH]
    names = [x509.DNSName("svc.example"), x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]
    policies = [
        _policy(x509util.AUTO_SIGNED_OID),
        _policy("1.2.3", "https://example.org/cps"),
        _policy(x509util.LEGACY_OID_TOP + ".999"),
        _policy(x509util.CAUCASE_OID_TOP + ".5"),
    ]
    extensions: list[ExtensionRequest] = [
        (usage, True),
        (x509.ExtendedKeyUsage(purposes), False),
        (x509.SubjectAlternativeName(names), True),
        (x509.CertificatePolicies(policies), True),
        (x509.BasicConstraints(ca=True, path_length=None), True),
    ]
    return _csr(key, extensions, subject)


def _fetch(server: Any, path: str) -> bytes:
    status, _, body = request(server, "GET", path)
    assert status == 200, (path, status)
    return body


@pytest.mark.interop
def test_leaf_matches_the_reference_extension_for_extension(
    reference_server: Any,
    ca_key: rsa.RSAPrivateKey,
    ca_crt: x509.Certificate,
    leaf_key: rsa.RSAPrivateKey,
) -> None:
    template = _rich_template(leaf_key)
    status, headers, _ = request(
        reference_server,
        "PUT",
        "/cas/csr",
        x509util.dump_certificate_request(template),
        {"Content-Type": "application/pkcs10"},
    )
    assert status == 201
    theirs = x509util.load_certificate(_fetch(reference_server, "/cas/crt/" + headers["Location"]))
    their_ca = x509util.load_certificate(_fetch(reference_server, "/cas/crt/ca.crt.pem"))
    base = f"{reference_server.http_url}/cas/crl"
    ours = _issue(ca_key, ca_crt, template, SigningMode.YES, base)

    def comparable(crt: x509.Certificate, ca: x509.Certificate) -> list[tuple[Any, ...]]:
        rows = []
        for extension in crt.extensions:
            value = extension.value.public_bytes()
            if extension.oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
                value = ca.extensions.get_extension_for_class(type(extension.value)).value == (
                    extension.value
                )
            elif extension.oid == ExtensionOID.CRL_DISTRIBUTION_POINTS:
                (point,) = extension.value
                value = point.full_name == [
                    x509.UniformResourceIdentifier(f"{base}/{x509util.authority_key_id_int(ca)}")
                ]
            rows.append((extension.oid, extension.critical, value))
        return rows

    assert comparable(ours, ca_crt) == comparable(theirs, their_ca)
    assert ours.subject.public_bytes() == theirs.subject.public_bytes()
    validity = theirs.not_valid_after_utc - theirs.not_valid_before_utc
    assert ours.not_valid_after_utc - ours.not_valid_before_utc == validity
    assert x509util.is_auto_signed(theirs) and x509util.is_auto_signed(ours)


@pytest.mark.interop
def test_ca_and_crl_match_the_reference_structure(
    reference_server: Any, ca_key: rsa.RSAPrivateKey, ca_crt: x509.Certificate
) -> None:
    their_ca = x509util.load_certificate(_fetch(reference_server, "/cas/crt/ca.crt.pem"))
    their_crl = x509util.load_crl(_fetch(reference_server, "/cas/crl"))
    our_crl = crl_profile.make_crl(ca_key, ca_crt, [], 1, NOW, NOW + DAY)

    def shape(extensions: x509.Extensions) -> list[tuple[Any, ...]]:
        return [
            (e.oid, e.critical, e.value.public_bytes() if e.oid != ExtensionOID.CRL_NUMBER else 0)
            for e in extensions
            if e.oid
            not in (ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        ]

    assert [e.oid for e in ca_crt.extensions] == [e.oid for e in their_ca.extensions]
    assert shape(ca_crt.extensions) == shape(their_ca.extensions)
    assert shape(our_crl.extensions) == shape(their_crl.extensions)
    assert [e.oid for e in our_crl.extensions] == [e.oid for e in their_crl.extensions]
    assert their_ca.not_valid_after_utc - their_ca.not_valid_before_utc == CA_LIFE
    aki = their_crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki == their_ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
