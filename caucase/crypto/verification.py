"""Certificate verification without an OpenSSL store: cheap enough for every request.

Checks run in OpenSSL's order and fail with its messages, which the reference reports.
"""

from __future__ import annotations

import datetime
from collections.abc import Container, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from caucase import exceptions
from caucase.clock import as_utc

# Errors cryptography raises while checking a signature it cannot or will not verify.
_VERIFY_ERRORS = (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError)


def _is_issued_by(crt: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        crt.verify_directly_issued_by(issuer)
    except _VERIFY_ERRORS:
        return False
    return True


def is_valid_ca(crt: x509.Certificate, now: datetime.datetime) -> bool:
    """Self-signed (signature verifies with its own key) and within its validity at `now`."""
    moment = as_utc(now)
    return crt.not_valid_before_utc <= moment <= crt.not_valid_after_utc and _is_issued_by(
        crt, crt
    )


def verify_certificate(
    crt: x509.Certificate,
    ca_list: Sequence[x509.Certificate],
    revoked_serials: Container[int],
    now: datetime.datetime,
) -> None:
    """Raise CertificateVerificationError unless `crt` is issued by one of `ca_list`,
    within validity at `now`, and its serial is not in `revoked_serials` (a container of int).

    Checks run in OpenSSL's order (issuer, then revocation, then time) and fail with its
    messages, so a revoked and expired certificate reports "certificate revoked" as the
    reference does; no X509Store is built, which keeps this cheap per request."""
    issuers = sorted(
        (ca for ca in ca_list if ca.subject == crt.issuer),
        key=lambda ca: ca.not_valid_before_utc,
        reverse=True,
    )
    if not any(_is_issued_by(crt, issuer) for issuer in issuers):
        raise exceptions.CertificateVerificationError("unable to get local issuer certificate")
    if crt.serial_number in revoked_serials:
        raise exceptions.CertificateVerificationError("certificate revoked")
    moment = as_utc(now)
    if moment < crt.not_valid_before_utc:
        raise exceptions.CertificateVerificationError("certificate is not yet valid")
    if moment > crt.not_valid_after_utc:
        raise exceptions.CertificateVerificationError("certificate has expired")
