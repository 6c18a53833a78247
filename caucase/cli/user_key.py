"""Why caucased refused a `--user-key`: what can be checked locally, said in words.

caucased answers a bad user certificate with a TLS alert or a 401 that says little; the CA
and CRL stores on disk usually tell the reason. Every message states a fact about the files
(a stale store may lack a newer CA), and the server's own reason is kept when none applies.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509

from caucase.crypto import pemfile, verification
from caucase.exceptions import (
    CaucaseError,
    CaucaseHTTPError,
    CaucaseTLSError,
    CertificateVerificationError,
)
from caucase.trust_stores import load_valid_ca_list

MISSING = "needs --user-key: a file holding a CAU user certificate and its private key"


def _revoked_serials(crl_store: str, ca_list: Sequence[x509.Certificate]) -> set[int]:
    """Serials listed by the CRLs of the store that one of `ca_list` signed."""
    serials: set[int] = set()
    for pem in pemfile.read_crl_store(crl_store):
        try:
            crl = x509.load_pem_x509_crl(pem)
        except ValueError:
            continue
        if any(_signed_by(crl, ca) for ca in ca_list):
            serials.update(entry.serial_number for entry in crl)
    return serials


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _verify(
    certificate: x509.Certificate,
    ca_list: Sequence[x509.Certificate],
    revoked: set[int],
    now: datetime.datetime,
) -> str | None:
    """None when the certificate verifies, else the reason (OpenSSL's words)."""
    try:
        verification.verify_certificate(certificate, ca_list, revoked, now)
    except CertificateVerificationError as error:
        return error.reason
    return None


def _local_problem(
    certificate: x509.Certificate,
    now: datetime.datetime,
    user_stores: tuple[str, str],
    service_store: str,
) -> str | None:
    """The first thing the files show to be wrong with the certificate, if any."""
    if now > certificate.not_valid_after_utc:
        return f"its certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if now < certificate.not_valid_before_utc:
        return (
            "its certificate is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    service_cas = load_valid_ca_list(pemfile.read_ca_store(service_store), now)
    if _verify(certificate, service_cas, set(), now) is None:
        return "its certificate is a service (CAS) certificate, not a CAU user certificate"
    ca_store, crl_store = user_stores
    user_cas = load_valid_ca_list(pemfile.read_ca_store(ca_store), now)
    if not user_cas:
        return None
    reason = _verify(certificate, user_cas, _revoked_serials(crl_store, user_cas), now)
    if reason == "certificate revoked":
        return f"its certificate is revoked (listed in {crl_store})"
    if reason is not None:
        return f"its certificate is not a CAU user certificate (no CA of {ca_store} issued it)"
    return None


def _server_reason(error: CaucaseError) -> str:
    if isinstance(error, CaucaseHTTPError):
        reason = error.body.decode("utf-8", "replace").strip().splitlines()[:1]
        return f"caucased refused it (HTTP {error.status}" + (
            f": {reason[0][:200]})" if reason else ")"
        )
    return f"caucased refused it during the TLS handshake ({error})"


def explain_refusal(
    error: CaucaseHTTPError | CaucaseTLSError,
    user_key: str,
    now: datetime.datetime,
    user_stores: tuple[str, str],
    service_store: str,
) -> CaucaseError:
    """The error to report for an authenticated request refused with `error`.

    `user_stores` are the CAU CA and CRL stores, `service_store` the CAS CA store."""
    try:
        certificate = pemfile.read_one_certificate(user_key)
        problem = _local_problem(certificate, now, user_stores, service_store)
    except CaucaseError:
        problem = None
    return CaucaseError(f"--user-key {user_key}: {problem or _server_reason(error)}")
