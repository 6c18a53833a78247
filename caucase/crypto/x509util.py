"""Pure functions over `cryptography` objects for the caucase certificate profile.

No I/O and no clock: every time is a parameter, so callers (and tests) decide what "now" is.
The profile itself (extension order, filters, policies) follows ca-profile sections 1 and 2.
"""

from __future__ import annotations

import base64
import datetime
import enum
import ipaddress
import os
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Protocol

import pem as pemlib
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from caucase import exceptions
from caucase.clock import as_utc
from caucase.crypto import keys

BACKDATE = datetime.timedelta(seconds=10)
CAUCASE_OID_TOP = "1.3.6.1.4.1.37476.9000.70.0"
AUTO_SIGNED_OID = CAUCASE_OID_TOP + ".0"
LEGACY_OID_TOP = "2.25.285541874270823339875695650038637483517"
LEGACY_AUTO_SIGNED_OID = LEGACY_OID_TOP + ".0"
AUTO_SIGNED_TEXT = "Auto-signed caucase certificate"


class Template(Protocol):
    """What a leaf takes from its template: a CSR, the certificate being renewed, or the
    subject and extensions an ACME order decides (caucase.acme.csr)."""

    @property
    def subject(self) -> x509.Name: ...

    @property
    def extensions(self) -> x509.Extensions: ...


# An extension to write: its value (which knows its OID) and whether it is critical.
_Extension = tuple[x509.ExtensionType, bool]

# Errors cryptography raises when it cannot read the extensions of a document.
_EXTENSION_ERRORS = (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


class SigningMode(enum.Enum):
    """How CertificatePolicies are treated when issuing (ca-profile 1.7)."""

    NO = "no"
    YES = "yes"
    PASSTHROUGH = "passthrough"


def _single_pem_block(data: bytes, kind: type[pemlib.AbstractPEMObject], what: str) -> bytes:
    """The only PEM block of `data`, which must be of `kind` with nothing but whitespace around."""
    blocks = pemlib.parse(data)
    if len(blocks) != 1 or not isinstance(blocks[0], kind):
        raise ValueError(f"Expected exactly one PEM {what}, found {len(blocks)} PEM block(s)")
    block = blocks[0].as_bytes()
    before, _, after = data.partition(block)
    if before.strip() or after.strip():
        raise ValueError(f"Unexpected text around the PEM {what}")
    return block


def load_certificate(pem: bytes) -> x509.Certificate:
    """Exactly one PEM certificate; ValueError otherwise."""
    block = _single_pem_block(pem, pemlib.Certificate, "certificate")
    return x509.load_pem_x509_certificate(block)


def load_certificate_request(pem: bytes) -> x509.CertificateSigningRequest:
    """Exactly one PEM CSR whose self-signature verifies; NotACertificateSigningRequest otherwise.

    The extensions are parsed here too, so that a CSR cryptography cannot read is refused at
    submission rather than failing later when it is signed."""
    try:
        block = _single_pem_block(pem, pemlib.CertificateRequest, "certificate request")
        csr = x509.load_pem_x509_csr(block)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise exceptions.NotACertificateSigningRequest(
            f"Not a valid certificate signing request: {error}"
        ) from None
    return check_certificate_request(csr)


def check_certificate_request(
    csr: x509.CertificateSigningRequest,
) -> x509.CertificateSigningRequest:
    """`csr`, once its self-signature verifies and its extensions parse;
    NotACertificateSigningRequest otherwise."""
    try:
        signature_valid = csr.is_signature_valid
        csr.extensions  # noqa: B018 -- parsing is the check
    except (*_EXTENSION_ERRORS, UnsupportedAlgorithm) as error:
        raise exceptions.NotACertificateSigningRequest(
            f"Not a valid certificate signing request: {error}"
        ) from None
    if not signature_valid:
        raise exceptions.NotACertificateSigningRequest(
            "Not a valid certificate signing request: bad self-signature"
        )
    return csr


# Request bodies are read as the reference reads them (matched black-box): the first block
# of the wanted type counts, whatever surrounds it (`openssl -text` output, other blocks, a
# private key). Callers keep the object, re-encoded, never the text: it may hold a key.


def first_certificate(text: bytes) -> x509.Certificate:
    """The first PEM certificate in `text`; ValueError when there is none or it is malformed."""
    return x509.load_pem_x509_certificate(text)


def first_certificate_request(text: bytes) -> x509.CertificateSigningRequest:
    """The first PEM CSR in `text`; ValueError when there is none or it is malformed."""
    return x509.load_pem_x509_csr(text)


def load_crl(pem: bytes) -> x509.CertificateRevocationList:
    """Exactly one PEM CRL; ValueError otherwise."""
    block = _single_pem_block(pem, pemlib.CertificateRevocationList, "CRL")
    return x509.load_pem_x509_crl(block)


def dump_certificate(crt: x509.Certificate) -> bytes:
    """PEM encoding."""
    return crt.public_bytes(serialization.Encoding.PEM)


def dump_certificate_request(csr: x509.CertificateSigningRequest) -> bytes:
    """PEM encoding."""
    return csr.public_bytes(serialization.Encoding.PEM)


def dump_crl(crl: x509.CertificateRevocationList) -> bytes:
    """PEM encoding, armoured here from the DER: the same bytes as cryptography's PEM
    output, several times faster on CRLs of many megabytes."""
    encoded = base64.b64encode(crl.public_bytes(serialization.Encoding.DER))
    lines = [encoded[start : start + 64] for start in range(0, len(encoded), 64)]
    return b"".join(
        (b"-----BEGIN X509 CRL-----\n", b"\n".join(lines), b"\n-----END X509 CRL-----\n")
    )


def authority_key_identifier(
    document: x509.Certificate | x509.CertificateRevocationList,
) -> x509.AuthorityKeyIdentifier:
    try:
        return document.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise ValueError("No AuthorityKeyIdentifier extension") from None


def authority_key_id(document: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """AuthorityKeyIdentifier keyIdentifier octets; ValueError if absent."""
    identifier = authority_key_identifier(document).key_identifier
    if identifier is None:
        raise ValueError("AuthorityKeyIdentifier has no keyIdentifier")
    return identifier


def authority_key_id_int(document: x509.Certificate | x509.CertificateRevocationList) -> int:
    """AuthorityKeyIdentifier keyIdentifier as a big-endian integer; ValueError if absent."""
    return int.from_bytes(authority_key_id(document), "big")


def random_serial() -> int:
    """20 random bytes, big-endian, shifted right one bit: positive, at most 159 bits."""
    return int.from_bytes(os.urandom(20), "big") >> 1


def _host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `host` spells (brackets allowed around IPv6), or None for a DNS name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def name_constraints_for_host(host: str) -> x509.Extension[x509.NameConstraints]:
    """Critical NameConstraints for the HTTPS CA (ca-profile 1.4).

    For an IP the empty dNSName exclusion forbids every DNS name (RFC 5280 4.2.1.10)."""
    address = _host_address(host)
    if address is None:
        constraints = x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(host.lower())], excluded_subtrees=None
        )
    else:
        network = ipaddress.ip_network((address, address.max_prefixlen))
        constraints = x509.NameConstraints(
            permitted_subtrees=[x509.IPAddress(network)], excluded_subtrees=[x509.DNSName("")]
        )
    return x509.Extension(ExtensionOID.NAME_CONSTRAINTS, True, constraints)


def _certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    now: datetime.datetime,
    life: datetime.timedelta,
) -> x509.CertificateBuilder:
    """Back-dated validity, random serial; the encoder floors sub-seconds (ca-profile 1.1)."""
    not_before = as_utc(now) - BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_before + life)
    )


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    """A KeyUsage with only the named bits set."""
    bits = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{bit: enabled.get(bit, False) for bit in bits})


def _self_identifiers(public_key: CertificatePublicKeyTypes) -> list[_Extension]:
    """SKI, then AKI holding only the same key identifier: the head of every CA certificate."""
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki = x509.AuthorityKeyIdentifier(ski.digest, None, None)
    return [(ski, False), (aki, False)]


def _sign_with(
    builder: x509.CertificateBuilder, extensions: Iterable[_Extension], key: keys.PrivateKey
) -> x509.Certificate:
    for value, critical in extensions:
        builder = builder.add_extension(value, critical)
    return builder.sign(key, keys.signature_hash(key))


def make_ca_certificate(
    key: keys.PrivateKey,
    subject: x509.Name,
    now: datetime.datetime,
    life: datetime.timedelta,
    extra_extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> x509.Certificate:
    """First-generation self-signed CA certificate (ca-profile 1.3)."""
    public_key = key.public_key()
    key_usage = _key_usage(key_cert_sign=True, crl_sign=True)
    extensions = [
        *_self_identifiers(public_key),
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (key_usage, True),
        *((extension.value, extension.critical) for extension in extra_extensions),
    ]
    builder = _certificate_builder(subject, subject, public_key, now, life)
    return _sign_with(builder, extensions, key)


def renew_ca_certificate(
    previous: x509.Certificate,
    key: keys.PrivateKey,
    now: datetime.datetime,
    life: datetime.timedelta,
) -> x509.Certificate:
    """Next-generation CA certificate copying subject and extensions of `previous`
    (ca-profile 1.5): only the key identifiers change."""
    public_key = key.public_key()
    identifiers = (ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    inherited = [(e.value, e.critical) for e in previous.extensions if e.oid not in identifiers]
    builder = _certificate_builder(previous.subject, previous.subject, public_key, now, life)
    return _sign_with(builder, [*_self_identifiers(public_key), *inherited], key)


def _filter_key_usage(usage: x509.KeyUsage) -> x509.KeyUsage | None:
    """A leaf never signs certificates or CRLs; encipher/decipherOnly only mean something
    with keyAgreement (RFC 5280 4.2.1.3), and cryptography refuses them otherwise. None when
    no bit remains: the reference emits an empty KeyUsage, which RFC 5280 forbids."""
    agreement = usage.key_agreement
    kept = x509.KeyUsage(
        digital_signature=usage.digital_signature,
        content_commitment=usage.content_commitment,
        key_encipherment=usage.key_encipherment,
        data_encipherment=usage.data_encipherment,
        key_agreement=agreement,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=agreement and usage.encipher_only,
        decipher_only=agreement and usage.decipher_only,
    )
    return kept if kept != _key_usage() else None


def _filter_extended_key_usage(usage: x509.ExtendedKeyUsage) -> x509.ExtendedKeyUsage | None:
    """OCSP signing would let a leaf answer for its CA. None when nothing remains: the
    reference emits an empty SEQUENCE there, which makes an unparsable certificate."""
    kept = [purpose for purpose in usage if purpose != ExtendedKeyUsageOID.OCSP_SIGNING]
    return x509.ExtendedKeyUsage(kept) if kept else None


def _copy_verbatim(value: x509.ExtensionType) -> x509.ExtensionType:
    return value


# Extensions a leaf takes from its template, in certificate order, each through its filter.
_TEMPLATE_EXTENSIONS: tuple[tuple[x509.ObjectIdentifier, Callable[[Any], Any]], ...] = (
    (ExtensionOID.KEY_USAGE, _filter_key_usage),
    (ExtensionOID.EXTENDED_KEY_USAGE, _filter_extended_key_usage),
    (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, _copy_verbatim),
)


def _auto_signed_policy() -> x509.PolicyInformation:
    return x509.PolicyInformation(
        x509.ObjectIdentifier(AUTO_SIGNED_OID), [x509.UserNotice(None, AUTO_SIGNED_TEXT)]
    )


def _modernised(policy: x509.PolicyInformation) -> x509.PolicyInformation:
    """Move a policy from the legacy arc to the caucase arc (plain string prefix, as the
    reference does), keeping its qualifiers."""
    dotted = policy.policy_identifier.dotted_string
    if not dotted.startswith(LEGACY_OID_TOP):
        return policy
    renamed = x509.ObjectIdentifier(CAUCASE_OID_TOP + dotted[len(LEGACY_OID_TOP) :])
    return x509.PolicyInformation(renamed, policy.policy_qualifiers)


def _certificate_policies(
    template: x509.Extension[x509.CertificatePolicies] | None, mode: SigningMode
) -> _Extension | None:
    """ca-profile 1.7: only the CA may put caucase policies in, and it does so only when
    auto-signing; renewals keep what the previous certificate had."""
    if template is None:
        if mode is SigningMode.YES:
            return x509.CertificatePolicies([_auto_signed_policy()]), False
        return None
    policies = [_modernised(policy) for policy in template.value]
    if mode is not SigningMode.PASSTHROUGH:
        policies = [
            policy
            for policy in policies
            if not policy.policy_identifier.dotted_string.startswith(CAUCASE_OID_TOP)
        ]
    if mode is SigningMode.YES:
        policies.append(_auto_signed_policy())
    if not policies:
        # The reference emits an empty list here, which RFC 5280 forbids (SIZE (1..MAX)).
        return None
    return x509.CertificatePolicies(policies), template.critical


def _template_extensions(template: Template) -> x509.Extensions:
    try:
        return template.extensions
    except _EXTENSION_ERRORS as error:
        raise exceptions.CertificateAuthorityException(
            f"Template extensions cannot be parsed: {error}"
        ) from None


def _leaf_extensions(
    ca_crt: x509.Certificate,
    public_key: CertificatePublicKeyTypes,
    template: Template,
    mode: SigningMode,
    crl_base_url: str | None,
) -> list[_Extension]:
    """ca-profile 1.6: what the CA decides, then what the template may ask for."""
    extensions: list[_Extension] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.SubjectKeyIdentifier.from_public_key(public_key), False),
        (authority_key_identifier(ca_crt), False),
    ]
    if crl_base_url is not None:
        url = f"{crl_base_url}/{authority_key_id_int(ca_crt)}"
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
        extensions.append((x509.CRLDistributionPoints([point]), False))
    requested = {extension.oid: extension for extension in _template_extensions(template)}
    for oid, keep in _TEMPLATE_EXTENSIONS:
        value = keep(requested[oid].value) if oid in requested else None
        if value is not None:
            extensions.append((value, requested[oid].critical))
    policies = _certificate_policies(requested.get(ExtensionOID.CERTIFICATE_POLICIES), mode)
    if policies is not None:
        extensions.append(policies)
    return extensions


def issue_certificate(
    ca_key: keys.PrivateKey,
    ca_crt: x509.Certificate,
    public_key: CertificatePublicKeyTypes,
    template: Template,
    mode: SigningMode,
    now: datetime.datetime,
    life: datetime.timedelta,
    crl_base_url: str | None,
) -> x509.Certificate:
    """Leaf certificate for `public_key` with subject/extensions from `template`
    (ca-profile 1.6-1.8). The subject object is reused as is, so RDNs and string types
    survive."""
    extensions = _leaf_extensions(ca_crt, public_key, template, mode, crl_base_url)
    builder = _certificate_builder(template.subject, ca_crt.subject, public_key, now, life)
    return _sign_with(builder, extensions, ca_key)


def make_server_csr(key: keys.PrivateKey, host: str) -> x509.CertificateSigningRequest:
    """caucased's own HTTPS CSR: empty subject, KU digitalSignature, SAN ip or dns
    (ca-profile 1.10); the DNS name is lowercased (errata 11)."""
    address = _host_address(host)
    name: x509.GeneralName = (
        x509.DNSName(host.lower()) if address is None else x509.IPAddress(address)
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectAlternativeName([name]), critical=True)
        .sign(key, keys.signature_hash(key))
    )


def make_renewal_csr(key: keys.PrivateKey, subject: x509.Name) -> x509.CertificateSigningRequest:
    """CSR for a renewal: the old subject, no extensions."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return builder.sign(key, keys.signature_hash(key))


def is_auto_signed(crt: x509.Certificate) -> bool:
    """Whether the certificate carries the auto-signed policy (or its legacy OID)."""
    try:
        policies = crt.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except (x509.ExtensionNotFound, *_EXTENSION_ERRORS):
        return False
    marks = (AUTO_SIGNED_OID, LEGACY_AUTO_SIGNED_OID)
    return any(policy.policy_identifier.dotted_string in marks for policy in policies)
