"""What each route of the caucased API does (http-api 6, 11.3).

A handler runs once the dispatcher (caucase.http.app) has checked its path, run its body
step (caucase.http.bodies) and checked the credentials its route asks for: handlers never
authenticate. Each takes the service, the request, the subpath id (0 when there is none)
and what the body step returned (None for routes without a body).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from caucase.acme.service import AcmeService
from caucase.ca import CertificateAuthority
from caucase.crypto import x509util
from caucase.exceptions import NotACertificateSigningRequest
from caucase.http.bodies import (
    NOT_A_CSR,
    PKCS10,
    SignedEnvelope,
    UnsignedEnvelope,
    certificate_pem,
    csr_pem,
)
from caucase.http.cors import CorsConsent
from caucase.http.health import HealthReport
from caucase.http.request import HTTPError, Request, Response

PKIX_CRL = "application/pkix-crl"
PKIX_CERT = "application/pkix-cert"
X509_CA_CERT = "application/x-x509-ca-cert"
JSON = "application/json"
PEM_FILE = "application/x-pem-file"
HealthReader = Callable[[], HealthReport]


@dataclass(frozen=True)
class Service:
    """What handlers act on: both authorities, the CORS consent, the ACME service of the
    CAS, the CA of caucased's HTTPS identity and the health checks (None where not served)."""

    authorities: Mapping[str, CertificateAuthority]
    cors: CorsConsent
    acme: AcmeService | None = None
    https_ca: CertificateAuthority | None = None
    health: HealthReader | None = None

    def authority(self, request: Request) -> CertificateAuthority:
        return self.authorities[request.authority or ""]


def get_crl_list(service: Service, request: Request, _: int, __: None) -> Response:
    body = service.authority(request).get_crl_bundle()
    return Response(200, [("Content-Type", PKIX_CRL)], body)


def get_crl(service: Service, request: Request, authority_key_id: int, _: None) -> Response:
    crl = service.authority(request).get_crl_dict().get(authority_key_id)
    if crl is None:
        return Response(404)
    return Response(200, [("Content-Type", PKIX_CRL)], crl)


def served_csr(stored: bytes) -> bytes:
    """The CSR of a row, re-encoded alone. Ours hold nothing else, but a database carried
    over from the reference holds bodies as they were sent: a private key or non-ASCII
    text may be around the CSR (the reference then answered the pending list with 500)."""
    try:
        return x509util.dump_certificate_request(x509util.first_certificate_request(stored))
    except ValueError:
        return stored  # not even a CSR: a corrupt row, served as it is


def get_csr_list(service: Service, request: Request, _: int, __: None) -> Response:
    csr_list = service.authority(request).get_csr_list()
    body = json.dumps(
        [
            {"id": str(csr_id), "csr": served_csr(csr).decode("utf-8", "replace")}
            for csr_id, csr in csr_list
        ]
    )
    return Response(200, [("Content-Type", JSON)], body.encode())


def get_csr(service: Service, request: Request, csr_id: int, _: None) -> Response:
    csr = service.authority(request).get_csr(csr_id)
    return Response(200, [("Content-Type", PKCS10)], served_csr(csr))


def create_csr(service: Service, request: Request, _: int, csr: bytes) -> Response:
    try:
        csr_id = service.authority(request).append_csr(csr)
    except NotACertificateSigningRequest:
        raise HTTPError(400, NOT_A_CSR) from None
    return Response(201, [("Location", str(csr_id))])


def delete_csr(service: Service, request: Request, csr_id: int, _: None) -> Response:
    service.authority(request).delete_pending_csr(csr_id)
    return Response(204)


def get_crt(service: Service, request: Request, csr_id: int, _: None) -> Response:
    crt = service.authority(request).get_certificate(csr_id)
    return Response(200, [("Content-Type", PKIX_CERT)], crt)


def sign_csr(service: Service, request: Request, csr_id: int, template: bytes | None) -> Response:
    """Approve a CSR, with the subject and extensions of `template` when one came."""
    service.authority(request).create_certificate(csr_id, template_csr=template)
    return Response(204)


def get_ca_crt(service: Service, request: Request, _: int, __: None) -> Response:
    crt = service.authority(request).get_ca_certificate()
    return Response(200, [("Content-Type", X509_CA_CERT)], crt)


def get_ca_chain(service: Service, request: Request, _: int, __: None) -> Response:
    chain = service.authority(request).get_ca_certificate_chain()
    return Response(200, [("Content-Type", JSON)], json.dumps(chain).encode())


def get_https_ca(service: Service, request: Request, _: int, __: None) -> Response:
    """Every CA certificate of caucased's HTTPS identity, oldest first: the one file a
    client trusts to verify caucased's HTTPS, across its certificate renewals."""
    if service.https_ca is None:
        return Response(404)
    certificates = service.https_ca.get_ca_certificate_list()
    body = b"".join(x509util.dump_certificate(certificate) for certificate in certificates)
    return Response(200, [("Content-Type", PEM_FILE)], body)


def get_health(service: Service, request: Request, _: int, __: None) -> Response:
    """Every health check, run now: 200 when all pass, 503 otherwise (issue 13)."""
    if service.health is None:
        return Response(404)
    report = service.health()
    headers = [("Content-Type", JSON), ("Cache-Control", "no-store")]
    return Response(report.status, headers, report.body())


def revoke(
    service: Service, request: Request, _: int, envelope: SignedEnvelope | UnsignedEnvelope
) -> Response:
    """Revoke by key possession (signed envelope) or as an authenticated user (null)."""
    authority = service.authority(request)
    if isinstance(envelope, SignedEnvelope):
        authority.revoke_certificate(envelope.certificate_pem, method="key-holder")
        return Response(204)
    payload = envelope.payload()
    if "revoke_crt_pem" in payload:
        authority.revoke_certificate(certificate_pem(payload, "revoke_crt_pem"))
        return Response(204)
    serial = payload.get("revoke_serial")
    # Anything but a JSON integer >= 0 would poison CRL generation (errata 1).
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise HTTPError(400, b"revoke_serial must be an integer >= 0")
    authority.revoke_serial(serial)
    return Response(204)


def renew(service: Service, request: Request, _: int, envelope: SignedEnvelope) -> Response:
    renew_csr = csr_pem(envelope.payload, "renew_csr_pem")
    try:
        crt = service.authority(request).renew(envelope.certificate_pem, renew_csr)
    except NotACertificateSigningRequest:
        raise HTTPError(400) from None
    return Response(200, [("Content-Type", PKIX_CERT)], crt)


def get_cors_form(service: Service, request: Request, _: int, __: None) -> Response:
    return service.cors.form(request)


def post_cors_decision(service: Service, request: Request, _: int, __: None) -> Response:
    return service.cors.decide(request)
