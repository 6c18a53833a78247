"""The caucased WSGI application (http-api 2-12, 14.1): routing, errors, auth, HAL, CORS.

One declarative route table drives both dispatch and the HAL+JSON self-description.
No sockets here: the server hands over an environ where HTTPS requests carry
`wsgi.url_scheme` = "https" and, when the client presented one, `SSL_CLIENT_CERT`.
"""

from __future__ import annotations

import email.utils
import json
import os
import threading
import traceback
from collections.abc import Iterable, Sequence
from typing import Any, Callable

from caucase.ca import CertificateAuthority
from caucase.clock import Clock, utcnow
from caucase.crypto import x509util
from caucase.crypto.envelope import DIGEST_NAMES, verify_envelope
from caucase.exceptions import (
    CaucaseError,
    CertificateAuthorityException,
    Found,
    NoStorage,
    NotACertificateSigningRequest,
    NotFound,
    NotJSON,
)
from caucase.http.cors import CorsConsent, CorsKeyStore, CorsPolicy, response_headers
from caucase.http.request import HTTPError, Request, Response, unauthorized
from caucase.http.routes import (
    Auth,
    authority_hal_body,
    build_tree,
    parse_subpath,
    root_hal_body,
)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
PKIX_CRL = "application/pkix-crl"
PKCS10 = "application/pkcs10"
PKIX_CERT = "application/pkix-cert"
X509_CA_CERT = "application/x-x509-ca-cert"
JSON = "application/json"
HAL_JSON = "application/hal+json"
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    507: "Insufficient Storage",
}


class Application:
    """The caucased WSGI callable: both authorities, the consent mechanism, HAL."""

    def __init__(
        self,
        cau: CertificateAuthority,
        cas: CertificateAuthority,
        cors_key_store: str,
        cors_whitelist: Sequence[str] = (),
        clock: Clock = utcnow,
    ) -> None:
        self._authority_dict = {"cau": cau, "cas": cas}
        self._cau = cau
        self._cors = CorsConsent(CorsKeyStore(cors_key_store, clock), cors_whitelist)
        self._clock = clock
        self._root = build_tree()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except HTTPError as error:
            response = error.response
        except NotFound:
            response = Response(404)
        except Found:
            response = Response(409)
        except NoStorage:
            response = Response(507)
        except NotJSON:
            response = Response(400, body=b"b'Invalid json payload'")
        except CertificateAuthorityException as error:
            response = Response(400, body=str(error).encode("utf-8", "replace"))
        except Exception as error:  # a bug, not bad input: every input error is typed above
            self._log_error(environ, error)
            response = Response(500)
        return self._send(request, response, start_response)

    def _send(
        self, request: Request, response: Response, start_response: StartResponse
    ) -> list[bytes]:
        headers = list(response.headers)
        if request.authenticated and response.status < 400:
            headers.insert(0, ("Cache-Control", "private"))
        if request.cors_origin is not None:
            headers += response_headers(request.cors_origin)
        headers.append(("Date", email.utils.formatdate(self._clock().timestamp(), usegmt=True)))
        headers.append(("Content-Length", str(len(response.body))))
        start_response(f"{response.status} {REASONS[response.status]}", headers)
        return [response.body]

    def _log_error(self, environ: dict[str, Any], error: Exception) -> None:
        """One error-log entry in the reference format (http-api 15.2)."""
        stream = environ.get("wsgi.errors")
        if stream is None:
            return
        stream.write(
            f"[{self._clock().isoformat()}] [pid {os.getpid()}:tid {threading.get_ident()}] "
            f"[client {environ.get('REMOTE_ADDR', '-')}] {error} \n{traceback.format_exc()}"
        )
        stream.flush()

    # Dispatch (http-api 2)
    def _dispatch(self, request: Request) -> Response:
        node = self._root
        segments = request.segments
        while segments and segments[0] in node.children:
            node = node.children[segments[0]]
            segments = segments[1:]
        if request.method not in node.methods:
            if request.method == "OPTIONS":
                allowed = [route.method for route in node.routes if route.cors != CorsPolicy.DENY]
                return self._cors.preflight(request, allowed)
            allowed = [*node.methods, "OPTIONS"]
            return Response(405, [("Allow", ", ".join(allowed))], repr(allowed).encode())
        route = node.find(request.method, bool(segments))
        if route is None or len(segments) > 1:
            return Response(404)
        self._cors.gate(request, route.cors)
        request.authority = node.authority
        argument = parse_subpath(route.subpath, segments)
        if route.auth is Auth.FIRST:
            self._authenticate(request)
        handler: Callable[[Request, int], Response] = getattr(self, route.handler)
        return handler(request, argument)

    def _authority(self, request: Request) -> CertificateAuthority:
        return self._authority_dict[request.authority or ""]

    def _authenticate(self, request: Request) -> None:
        """Check the client certificate against the CAU on every request (http-api 4)."""
        pem = request.environ.get("SSL_CLIENT_CERT")
        if request.scheme != "https" or not isinstance(pem, str) or not pem:
            raise unauthorized()
        try:
            self._cau.verify_certificate(x509util.load_certificate(pem.encode("utf-8")))
        except (CaucaseError, ValueError, TypeError):
            raise unauthorized() from None
        request.authenticated = True

    # Envelopes (http-api 7)
    @staticmethod
    def _read_envelope(request: Request) -> dict[str, Any]:
        """The JSON object of a renew/revoke body, checked in the reference's order."""
        if request.content_type != JSON:
            raise HTTPError(400, b"b'Bad Content-Type'")
        body = request.read_body()
        try:
            envelope = _json_loads(body.decode("utf-8"))
        except ValueError:
            raise HTTPError(400, b"b'Invalid json'") from None
        if not isinstance(envelope, dict):
            raise HTTPError(400, b"Envelope is not a JSON object")
        if "digest" not in envelope:
            raise HTTPError(400, b"Envelope has no digest")
        return envelope

    @staticmethod
    def _signed_payload(envelope: dict[str, Any], certificate_key: str) -> dict[str, Any]:
        """The payload, after checking its signature with the key of the certificate it holds
        (RSA, ECDSA or Ed25519, with a digest fitting that key: else 400 BadEnvelope)."""
        if envelope["digest"] not in DIGEST_NAMES:
            raise HTTPError(400, b"Unsupported digest")
        payload = _decode_payload(envelope)
        crt = x509util.load_certificate(_certificate_pem(payload, certificate_key))
        if not isinstance(envelope.get("signature"), str):
            raise HTTPError(400, b"Envelope has no signature")
        verify_envelope(envelope, crt.public_key())
        return payload

    # Authority routes (http-api 6)
    def _get_crl_list(self, request: Request, _: int) -> Response:
        body = self._authority(request).get_crl_bundle()
        return Response(200, [("Content-Type", PKIX_CRL)], body)

    def _get_crl(self, request: Request, authority_key_id: int) -> Response:
        crl = self._authority(request).get_crl_dict().get(authority_key_id)
        if crl is None:
            return Response(404)
        return Response(200, [("Content-Type", PKIX_CRL)], crl)

    def _get_csr_list(self, request: Request, _: int) -> Response:
        csr_list = self._authority(request).get_csr_list()
        body = json.dumps([{"id": str(csr_id), "csr": csr.decode()} for csr_id, csr in csr_list])
        return Response(200, [("Content-Type", JSON)], body.encode())

    def _get_csr(self, request: Request, csr_id: int) -> Response:
        csr = self._authority(request).get_csr(csr_id)
        return Response(200, [("Content-Type", PKCS10)], csr)

    def _create_csr(self, request: Request, _: int) -> Response:
        body = request.read_body()
        try:
            csr_id = self._authority(request).append_csr(body)
        except NotACertificateSigningRequest:
            raise HTTPError(400, b"b'Not a valid certificate signing request'") from None
        return Response(201, [("Location", str(csr_id))])

    def _delete_csr(self, request: Request, csr_id: int) -> Response:
        self._authority(request).delete_pending_csr(csr_id)
        return Response(204)

    def _get_crt(self, request: Request, csr_id: int) -> Response:
        crt = self._authority(request).get_certificate(csr_id)
        return Response(200, [("Content-Type", PKIX_CERT)], crt)

    def _sign_csr(self, request: Request, csr_id: int) -> Response:
        """Approve a CSR; a template body is checked before the credentials (http-api 6.10)."""
        template = request.read_body() or None
        if template is not None:
            if request.content_type != PKCS10:
                raise HTTPError(400, b"b'Bad Content-Type'")
            try:
                x509util.load_certificate_request(template)
            except NotACertificateSigningRequest:
                raise HTTPError(400, b"Invalid template CSR") from None
        self._authenticate(request)
        self._authority(request).create_certificate(csr_id, template_csr=template)
        return Response(204)

    def _get_ca_crt(self, request: Request, _: int) -> Response:
        crt = self._authority(request).get_ca_certificate()
        return Response(200, [("Content-Type", X509_CA_CERT)], crt)

    def _get_ca_chain(self, request: Request, _: int) -> Response:
        chain = self._authority(request).get_ca_certificate_chain()
        return Response(200, [("Content-Type", JSON)], json.dumps(chain).encode())

    def _revoke(self, request: Request, _: int) -> Response:
        """Revoke by key possession (signed envelope) or as an authenticated user (null)."""
        envelope = self._read_envelope(request)
        authority = self._authority(request)
        if envelope["digest"] is not None:
            payload = self._signed_payload(envelope, "revoke_crt_pem")
            authority.revoke_certificate(_certificate_pem(payload, "revoke_crt_pem"))
            return Response(204)
        self._authenticate(request)
        payload = _decode_payload(envelope)
        if "revoke_crt_pem" in payload:
            authority.revoke_certificate(_certificate_pem(payload, "revoke_crt_pem"))
            return Response(204)
        serial = payload.get("revoke_serial")
        # Anything but a JSON integer >= 0 would poison CRL generation (errata 1).
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            raise HTTPError(400, b"revoke_serial must be an integer >= 0")
        authority.revoke_serial(serial)
        return Response(204)

    def _renew(self, request: Request, _: int) -> Response:
        envelope = self._read_envelope(request)
        if envelope["digest"] is None:
            raise HTTPError(400, b"Renewal needs a signed envelope")
        payload = self._signed_payload(envelope, "crt_pem")
        csr_pem = payload.get("renew_csr_pem")
        if not isinstance(csr_pem, str):
            raise HTTPError(400, b"Payload has no renew_csr_pem")
        crt_pem = _certificate_pem(payload, "crt_pem")
        try:
            crt = self._authority(request).renew(crt_pem, csr_pem.encode("utf-8"))
        except (NotACertificateSigningRequest, UnicodeEncodeError):
            raise HTTPError(400) from None
        return Response(200, [("Content-Type", PKIX_CERT)], crt)

    # HAL (http-api 10)
    def _get_root_hal(self, request: Request, _: int) -> Response:
        body = root_hal_body(request.script_path, request.self_href())
        return Response(200, [("Content-Type", HAL_JSON)], body)

    def _get_authority_hal(self, request: Request, _: int) -> Response:
        https_base = "" if request.scheme == "https" else request.https_base()
        body = authority_hal_body(
            request.authority or "", request.script_path, request.self_href(), https_base
        )
        return Response(200, [("Content-Type", HAL_JSON)], body)

    # /cors (http-api 11.3)
    def _get_cors_form(self, request: Request, _: int) -> Response:
        return self._cors.form(request)

    def _post_cors_decision(self, request: Request, _: int) -> Response:
        return self._cors.decide(request)


def _json_loads(text: str) -> Any:
    """json.loads, with too deep nesting reported as the ValueError it is for clients."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _decode_payload(envelope: dict[str, Any]) -> dict[str, Any]:
    payload = envelope.get("payload")
    if not isinstance(payload, str):
        raise HTTPError(400, b"Envelope has no payload string")
    try:
        payload.encode("utf-8")  # the signed bytes: a lone surrogate has none
        value = _json_loads(payload)
    except ValueError:
        raise NotJSON("Invalid json payload") from None
    if not isinstance(value, dict):
        raise HTTPError(400, b"Payload is not a JSON object")
    return value


def _certificate_pem(payload: dict[str, Any], key: str) -> bytes:
    """The PEM certificate under `key`, checked to load: garbage is a 400, not a 500."""
    pem = payload.get(key)
    if not isinstance(pem, str):
        raise HTTPError(400, f"Payload has no {key}".encode())
    try:
        x509util.load_certificate(pem.encode("utf-8"))
    except (ValueError, TypeError):
        raise HTTPError(400, f"Invalid certificate in {key}".encode()) from None
    return pem.encode("utf-8")
