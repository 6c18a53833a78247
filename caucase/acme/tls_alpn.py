"""The tls-alpn-01 challenge (RFC 8737; RFC 8738 6 for IP addresses).

caucased connects to the identifier on the TLS-ALPN port, offering only the
``acme-tls/1`` protocol and naming the identifier in SNI (for an address, its reverse
name under in-addr.arpa or ip6.arpa). The responder must negotiate ``acme-tls/1`` and show
a certificate naming exactly the identifier, with a critical acmeIdentifier extension
holding the SHA-256 of the key authorization. The certificate is not otherwise trusted.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509

from caucase.acme.challenges import (
    DEFAULT_TIMEOUT,
    TLS_ALPN_01,
    addresses_of,
    key_authorization_digest,
)
from caucase.acme.identifiers import IP, Identifier
from caucase.acme.problems import ConnectionProblem, IncorrectResponse, TLSProblem
from caucase.acme.resolver import Resolver

ACME_TLS_PROTOCOL = "acme-tls/1"
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
_DER_OCTET_STRING_32 = b"\x04\x20"


def acme_identifier_value(authorization: str) -> bytes:
    """The extnValue of acmeIdentifier (RFC 8737 3): ``Authorization ::= OCTET STRING
    (SIZE (32))``, DER-encoded, holding the key authorization's SHA-256."""
    return _DER_OCTET_STRING_32 + key_authorization_digest(authorization)


def server_name(identifier: Identifier) -> str:
    if identifier.type == IP:
        return ipaddress.ip_address(identifier.value).reverse_pointer
    return identifier.value


def _names_only(certificate: x509.Certificate, identifier: Identifier) -> bool:
    try:
        names = list(
            certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        return False
    if len(names) != 1:
        return False
    (name,) = names
    if identifier.type == IP:
        return isinstance(name, x509.IPAddress) and str(name.value) == identifier.value
    return isinstance(name, x509.DNSName) and name.value.lower() == identifier.value


def check_certificate(der: bytes, identifier: Identifier, authorization: str) -> None:
    """IncorrectResponse unless `der` is a tls-alpn-01 answer for `identifier`."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        extension = certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    except x509.ExtensionNotFound:
        raise IncorrectResponse("the certificate has no acmeIdentifier extension") from None
    except ValueError as error:
        raise IncorrectResponse(f"unreadable certificate: {error}") from None
    if not extension.critical:
        raise IncorrectResponse("the acmeIdentifier extension is not critical")
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise IncorrectResponse("unexpected acmeIdentifier extension")
    if value.value != acme_identifier_value(authorization):
        raise IncorrectResponse("acmeIdentifier does not hold the key authorization digest")
    if not _names_only(certificate, identifier):
        raise IncorrectResponse(f"the certificate must name exactly {identifier.value}")


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_PROTOCOL])
    return context


@dataclass(frozen=True)
class TlsAlpn01Validator:
    resolver: Resolver
    port: int = 443
    timeout: float = DEFAULT_TIMEOUT
    type: str = TLS_ALPN_01

    def applies_to(self, identifier: Identifier) -> bool:
        return not identifier.is_wildcard

    def validate(self, identifier: Identifier, token: str, authorization: str) -> None:
        errors = []
        for address in addresses_of(identifier, self.resolver):
            try:
                protocol, der = self._handshake(address, server_name(identifier))
            except ssl.SSLError as error:
                raise TLSProblem(f"TLS handshake with {address} failed: {error}") from None
            except OSError as error:
                errors.append(f"{address}: {error}")
                continue
            if protocol != ACME_TLS_PROTOCOL:
                raise TLSProblem(f"{address} did not negotiate {ACME_TLS_PROTOCOL}")
            if der is None:
                raise TLSProblem(f"{address} sent no certificate")
            check_certificate(der, identifier, authorization)
            return
        raise ConnectionProblem(f"cannot reach the tls-alpn-01 responder: {'; '.join(errors)}")

    def _handshake(self, address: str, name: str) -> tuple[str | None, bytes | None]:
        with socket.create_connection((address, self.port), timeout=self.timeout) as raw, \
                _context().wrap_socket(raw, server_hostname=name) as tls:  # fmt: skip
            return tls.selected_alpn_protocol(), tls.getpeercert(binary_form=True)
