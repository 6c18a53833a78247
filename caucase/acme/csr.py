"""The CSR of a finalize request (RFC 8555 7.4) against the identifiers of its order.

The CSR must name exactly the order's identifiers, in its subject commonName, its
subjectAltName extension, or both; anything else is badCSR. What the certificate carries
is decided here from the order, not copied from the CSR: every identifier in the
subjectAltName, and a commonName only when it is a DNS name, since an IP address in the CN
is deprecated (CA/B Forum BR 7.1.4.3) and certbot refuses such a certificate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from caucase import exceptions
from caucase.acme.identifiers import DNS, IP, Identifier, InvalidIdentifier
from caucase.acme.jws import decode_base64url
from caucase.acme.problems import BadCSR
from caucase.crypto import keys, x509util

# A 16384-bit RSA key with a hundred names stays well below this.
MAX_CSR_BYTES = 16 * 1024


@dataclass(frozen=True)
class LeafTemplate:
    """The subject and extensions a certificate takes (caucase.crypto.x509util.Template)."""

    subject: x509.Name
    extensions: x509.Extensions


@dataclass(frozen=True)
class CheckedCSR:
    """A finalize CSR that matches its order, and what the certificate will name."""

    csr: x509.CertificateSigningRequest
    pem: bytes
    subject: x509.Name
    subject_alt_name: x509.SubjectAlternativeName

    @property
    def template(self) -> LeafTemplate:
        """The CSR's extensions, which the CA filters as it filters any template's
        (ca-profile 1.6), with the subjectAltName the order decides: critical when the
        subject is empty (RFC 5280 4.2.1.6)."""
        alt_name = x509.Extension(
            x509.SubjectAlternativeName.oid, not self.subject, self.subject_alt_name
        )
        kept = [
            extension
            for extension in self.csr.extensions
            if extension.oid != x509.SubjectAlternativeName.oid
        ]
        return LeafTemplate(self.subject, x509.Extensions([*kept, alt_name]))


def decode_csr(encoded: object) -> x509.CertificateSigningRequest:
    """The ``csr`` member of a finalize payload: base64url DER with a valid self-signature."""
    if isinstance(encoded, str) and len(encoded) > MAX_CSR_BYTES * 4 // 3 + 4:
        raise BadCSR(f"a CSR has at most {MAX_CSR_BYTES} bytes")
    der = decode_base64url(encoded, "'csr'")
    try:
        return x509util.check_certificate_request(x509.load_der_x509_csr(der))
    except (ValueError, exceptions.NotACertificateSigningRequest) as error:
        raise BadCSR(f"not a valid CSR: {error}") from None


def _identifier_of_text(text: str) -> Identifier:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return Identifier.dns(text)
    return Identifier.ip(text)


def _named_identifiers(csr: x509.CertificateSigningRequest) -> tuple[set[Identifier], list[str]]:
    """Every identifier the CSR names, and its commonName values."""
    common_names = [
        str(attribute.value)
        for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    try:
        names = {_identifier_of_text(name) for name in common_names}
        try:
            alt_names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return names, common_names
        for general_name in alt_names:
            if isinstance(general_name, x509.DNSName):
                names.add(Identifier.dns(general_name.value))
            elif isinstance(general_name, x509.IPAddress):
                names.add(Identifier.ip(str(general_name.value)))
            else:
                raise BadCSR(f"the CSR names a {type(general_name).__name__}, not an identifier")
    except InvalidIdentifier as error:
        raise BadCSR(f"the CSR names {error}") from None
    return names, common_names


def _alt_name(identifier: Identifier) -> x509.GeneralName:
    if identifier.type == IP:
        return x509.IPAddress(ipaddress.ip_address(identifier.value))
    return x509.DNSName(identifier.value)


def _subject(common_names: list[str], identifiers: Sequence[Identifier]) -> x509.Name:
    """The CSR's own CN when it is one of the DNS identifiers, else the first of them;
    an empty subject when the order has only IP addresses (RFC 5280 4.2.1.6 then makes
    the subjectAltName critical, which cryptography's caller decides)."""
    dns_names = [identifier.value for identifier in identifiers if identifier.type == DNS]
    for name in common_names:
        if name.lower().rstrip(".") in dns_names:
            dns_names.insert(0, name.lower().rstrip("."))
            break
    if not dns_names:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])


def check_finalize_csr(
    encoded: object, identifiers: Sequence[Identifier], account_key_id: str
) -> CheckedCSR:
    """The checked CSR of a finalize payload for an order of `identifiers`; badCSR unless
    it names exactly them and its key is not the account key (RFC 8555 11.1)."""
    csr = decode_csr(encoded)
    named, common_names = _named_identifiers(csr)
    wanted = set(identifiers)
    if named != wanted:
        missing = sorted(identifier.value for identifier in wanted - named)
        extra = sorted(identifier.value for identifier in named - wanted)
        raise BadCSR(
            f"the CSR does not name the order's identifiers (missing {missing}, extra {extra})"
        )
    if keys.key_id(csr.public_key()) == account_key_id:
        raise BadCSR("the CSR's key is the account key")
    ordered = sorted(wanted)
    return CheckedCSR(
        csr,
        csr.public_bytes(serialization.Encoding.PEM),
        _subject(common_names, ordered),
        x509.SubjectAlternativeName([_alt_name(identifier) for identifier in ordered]),
    )
