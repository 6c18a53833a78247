"""The CRL profile (ca-profile 2.1): v2 CRLs with CRLNumber and the CA's AKI, their
entries, and the RFC 5280 reason codes entries may carry.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID

from caucase.clock import as_utc
from caucase.crypto import keys, x509util

# RFC 5280 5.3.1 CRLReason codes (7 is unused).
REASON_CODES: dict[int, x509.ReasonFlags] = {
    0: x509.ReasonFlags.unspecified,
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}
REASON_OF_FLAG = {flag: code for code, flag in REASON_CODES.items()}


def revoked_entry(
    serial: int, revocation_date: datetime.datetime, reason: x509.ReasonFlags | None = None
) -> x509.RevokedCertificate:
    """One CRL entry, through the RevokedCertificateBuilder constructor: unlike its
    serial_number setter it accepts 0 and serials of 160 bits or more, as the reference
    does. A negative serial raises ValueError (when the entry or the CRL is built).

    A reason becomes the reasonCode extension, except ``unspecified``, for which RFC 5280
    5.3.1 says the extension SHOULD be absent."""
    if serial < 0:
        raise ValueError("Negative serial numbers are not supported in CRLs")
    extensions: list[x509.Extension[x509.ExtensionType]] = []
    if reason is not None and reason is not x509.ReasonFlags.unspecified:
        extensions.append(
            x509.Extension(CRLEntryExtensionOID.CRL_REASON, False, x509.CRLReason(reason))
        )
    return x509.RevokedCertificateBuilder(
        serial_number=serial, revocation_date=as_utc(revocation_date), extensions=extensions
    ).build()


def make_crl(
    ca_key: keys.PrivateKey,
    ca_crt: x509.Certificate,
    revoked: Iterable[tuple[int, datetime.datetime] | x509.RevokedCertificate],
    number: int,
    this_update: datetime.datetime,
    next_update: datetime.datetime,
) -> x509.CertificateRevocationList:
    """v2 CRL with CRLNumber and the CA's AKI (ca-profile 2.1).

    `revoked` holds (serial, revocation date) pairs or entries already made by
    revoked_entry (callers regenerating big CRLs keep those). The entry list is handed to
    the builder constructor in one go: adding entries one by one copies the list each time."""
    entries = [
        item if isinstance(item, x509.RevokedCertificate) else revoked_entry(*item)
        for item in revoked
    ]
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=ca_crt.subject,
        last_update=as_utc(this_update),
        next_update=as_utc(next_update),
        revoked_certificates=entries,
    )
    builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    builder = builder.add_extension(x509util.authority_key_identifier(ca_crt), critical=False)
    return builder.sign(ca_key, keys.signature_hash(ca_key))
