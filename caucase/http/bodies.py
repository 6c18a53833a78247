"""Body steps: what a route reads and checks in its request body before credentials.

The dispatcher runs a route's body step before it authenticates the request, so a bad
body is reported before missing credentials, in the reference's order (http-api 6.10,
6.13, 6.14). A signed envelope is verified here: its signature is the credential.

PEM in a body is read as the reference reads it (the first object of the expected type,
whatever surrounds it) and passed on re-encoded on its own, so that a private key sent
along is never stored nor served back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Union

from cryptography.exceptions import UnsupportedAlgorithm

from caucase.crypto import x509util
from caucase.crypto.envelope import DIGEST_NAMES, verify_envelope
from caucase.exceptions import NotACertificateSigningRequest, NotJSON
from caucase.http.request import HTTPError, Request

JSON = "application/json"
PKCS10 = "application/pkcs10"
NOT_A_CSR = b"b'Not a valid certificate signing request'"


@dataclass(frozen=True)
class UnsignedEnvelope:
    """An envelope whose digest is null: its sender must authenticate (http-api 6.13)."""

    fields: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return decode_payload(self.fields)


@dataclass(frozen=True)
class SignedEnvelope:
    """An envelope whose signature verified with the key of the certificate it carries."""

    payload: dict[str, Any]
    certificate_pem: bytes


Envelope = Union[UnsignedEnvelope, SignedEnvelope]


def no_body(request: Request) -> None:
    """The step of routes that read no body (an unread body closes the connection)."""
    return None


def csr_body(request: Request) -> bytes:
    """A submitted CSR (http-api 6.5), re-encoded alone; its signature is the CA's check."""
    body = request.read_body()
    try:
        return x509util.dump_certificate_request(x509util.first_certificate_request(body))
    except ValueError:
        raise HTTPError(400, NOT_A_CSR) from None


def template_body(request: Request) -> bytes | None:
    """The optional template CSR of a signature (http-api 6.10), re-encoded alone."""
    body = request.read_body()
    if not body:
        return None
    if request.content_type != PKCS10:
        raise HTTPError(400, b"b'Bad Content-Type'")
    try:
        template = x509util.dump_certificate_request(x509util.first_certificate_request(body))
        x509util.load_certificate_request(template)
    except (ValueError, NotACertificateSigningRequest):
        raise HTTPError(400, b"Invalid template CSR") from None
    return template


def _json_object(request: Request) -> dict[str, Any]:
    if request.content_type != JSON:
        raise HTTPError(400, b"b'Bad Content-Type'")
    try:
        value = json_loads(request.read_body().decode("utf-8"))
    except ValueError:
        raise HTTPError(400, b"b'Invalid json'") from None
    if not isinstance(value, dict):
        raise HTTPError(400, b"Body is not a JSON object")
    return value


def eab_scope_body(request: Request) -> list[str]:
    """The scope of a new ACME credential: ``{"scope": ["pattern", ...]}``."""
    scope = _json_object(request).get("scope")
    if not isinstance(scope, list) or not all(isinstance(item, str) for item in scope):
        raise HTTPError(400, b"scope must be a list of identifier patterns")
    return scope


def eab_kid_body(request: Request) -> str:
    """The credential to revoke: ``{"kid": "..."}``."""
    kid = _json_object(request).get("kid")
    if not isinstance(kid, str) or not kid:
        raise HTTPError(400, b"kid must be a non-empty string")
    return kid


def revoke_envelope(request: Request) -> Envelope:
    """A revocation: signed by the certificate's key, or null-digest (http-api 6.13)."""
    return _read_envelope(request, "revoke_crt_pem")


def renew_envelope(request: Request) -> Envelope:
    """A renewal, which the dispatcher accepts only signed (http-api 6.14)."""
    return _read_envelope(request, "crt_pem")


def _read_envelope(request: Request, certificate_key: str) -> Envelope:
    """The JSON object of a renew/revoke body, checked in the reference's order; when it is
    signed, the signature is verified with the key of the certificate under `certificate_key`."""
    if request.content_type != JSON:
        raise HTTPError(400, b"b'Bad Content-Type'")
    body = request.read_body()
    try:
        fields = json_loads(body.decode("utf-8"))
    except ValueError:
        raise HTTPError(400, b"b'Invalid json'") from None
    if not isinstance(fields, dict):
        raise HTTPError(400, b"Envelope is not a JSON object")
    if "digest" not in fields:
        raise HTTPError(400, b"Envelope has no digest")
    if fields["digest"] is None:
        return UnsignedEnvelope(fields)
    return _verified(fields, certificate_key)


def _verified(fields: dict[str, Any], certificate_key: str) -> SignedEnvelope:
    if fields["digest"] not in DIGEST_NAMES:
        raise HTTPError(400, b"Unsupported digest")
    payload = decode_payload(fields)
    crt_pem = certificate_pem(payload, certificate_key)
    try:
        public_key = x509util.load_certificate(crt_pem).public_key()
    except UnsupportedAlgorithm:
        raise HTTPError(400, b"Envelopes cannot be verified with this key type") from None
    if not isinstance(fields.get("signature"), str):
        raise HTTPError(400, b"Envelope has no signature")
    verify_envelope(fields, public_key)
    return SignedEnvelope(payload, crt_pem)


def json_loads(text: str) -> Any:
    """json.loads, with too deep nesting reported as the ValueError it is for clients."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def decode_payload(fields: dict[str, Any]) -> dict[str, Any]:
    payload = fields.get("payload")
    if not isinstance(payload, str):
        raise HTTPError(400, b"Envelope has no payload string")
    try:
        payload.encode("utf-8")  # the signed bytes: a lone surrogate has none
        value = json_loads(payload)
    except ValueError:
        raise NotJSON("Invalid json payload") from None
    if not isinstance(value, dict):
        raise HTTPError(400, b"Payload is not a JSON object")
    return value


def certificate_pem(payload: dict[str, Any], key: str) -> bytes:
    """The first certificate of the PEM text under `key`, re-encoded alone."""
    text = payload.get(key)
    if not isinstance(text, str):
        raise HTTPError(400, f"Payload has no {key}".encode())
    try:
        return x509util.dump_certificate(x509util.first_certificate(text.encode("utf-8")))
    except ValueError:
        raise HTTPError(400, f"Invalid certificate in {key}".encode()) from None


def csr_pem(payload: dict[str, Any], key: str) -> bytes:
    """The first CSR of the PEM text under `key`, re-encoded alone. Text holding none is
    passed on as it is, for the CA to refuse once it has checked the certificate to renew
    (the reference's order: that error wins)."""
    text = payload.get(key)
    if not isinstance(text, str):
        raise HTTPError(400, f"Payload has no {key}".encode())
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPError(400) from None
    try:
        return x509util.dump_certificate_request(x509util.first_certificate_request(raw))
    except ValueError:
        return raw
