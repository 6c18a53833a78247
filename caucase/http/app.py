"""The caucased WSGI application (http-api 2-12, 14.1): dispatch, credentials, errors.

The route table (caucase.http.routes) says, per route, its handler, its body step and the
credentials it needs; the dispatcher here runs them in that order and enforces every
credential, then maps typed errors to statuses in one place. No sockets here: the server
hands over an environ where HTTPS requests carry `wsgi.url_scheme` = "https" and, when
the client presented one, `SSL_CLIENT_CERT`.
"""

from __future__ import annotations

import email.utils
import functools
import os
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from typing import Any, Callable

from caucase import events
from caucase.acme.service import AcmeService
from caucase.audit import AuditLogError
from caucase.ca import CertificateAuthority
from caucase.clock import Clock, utcnow
from caucase.crypto import x509util
from caucase.exceptions import (
    CertificateAuthorityException,
    CertificateVerificationError,
    Found,
    NoStorage,
    NotFound,
    NotJSON,
    StorageError,
)
from caucase.http.acme import AcmeFront
from caucase.http.bodies import SignedEnvelope
from caucase.http.cors import (
    CorsConsent,
    CorsKeyStore,
    CorsPolicy,
    KeyStore,
    response_headers,
)
from caucase.http.handlers import HealthReader, Service
from caucase.http.metrics import Metrics
from caucase.http.request import HTTPError, Request, Response, unauthorized
from caucase.http.routes import (
    Auth,
    Node,
    Route,
    build_tree,
    parse_subpath,
    route_template,
)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
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
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}
# How long a client should wait before retrying while the database is unavailable.
STORAGE_RETRY_AFTER = "5"
# Why a client certificate was refused, by verification reason, for the 401 body.
_REFUSALS = {
    "unable to get local issuer certificate": b"Client certificate not issued by this CAU",
    "certificate revoked": b"Client certificate revoked",
    "certificate has expired": b"Client certificate expired",
    "certificate is not yet valid": b"Client certificate not yet valid",
}


@functools.lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    """The Date header (RFC 9110 5.6.7), formatted once per second."""
    return email.utils.formatdate(second, usegmt=True)


class Application:
    """The caucased WSGI callable: both authorities, the consent mechanism, HAL."""

    def __init__(
        self,
        cau: CertificateAuthority,
        cas: CertificateAuthority,
        cors_key_store: str | KeyStore,
        cors_whitelist: Sequence[str] = (),
        clock: Clock = utcnow,
        *,
        acme: AcmeService | None = None,
        https_ca: CertificateAuthority | None = None,
        metrics: Metrics | None = None,
        health: HealthReader | None = None,
    ) -> None:
        """`acme`: the ACME service of the CAS (None: /cas/acme answers 404); `https_ca`:
        the CA of caucased's HTTPS certificate, which /https-ca.crt.pem publishes;
        `metrics` counts every request; `health` answers /health (None: 404)."""
        self._cau = cau
        if isinstance(cors_key_store, str):
            cors_key_store = CorsKeyStore(cors_key_store, clock)
        self._cors = CorsConsent(cors_key_store, cors_whitelist)
        self._service = Service({"cau": cau, "cas": cas}, self._cors, acme, https_ca, health)
        self._metrics = metrics
        self._acme = None if acme is None else AcmeFront(acme)
        self._clock = clock
        self._root = build_tree()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        request = Request(environ)
        with events.acting(environ.get("REMOTE_ADDR")):
            response = self._answer(request, environ)
        if self._metrics is not None:
            authority = request.authority or ""
            elapsed = time.monotonic() - started
            self._metrics.request_served(authority, request.route, response.status, elapsed)
        return self._send(request, response, start_response)

    def _answer(self, request: Request, environ: dict[str, Any]) -> Response:
        """The response to the request, every typed error mapped to its status."""
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
        except StorageError as error:
            self._log(environ, f"Storage failure: {error}")
            headers = [("Retry-After", STORAGE_RETRY_AFTER)]
            response = Response(503, headers, b"Database unavailable, try again later")
        except AuditLogError as error:
            self._log(environ, f"Audit log failure: {error}")
            headers = [("Retry-After", STORAGE_RETRY_AFTER)]
            response = Response(503, headers, b"Audit log unavailable, try again later")
        except Exception as error:  # a bug, not bad input: every input error is typed above
            self._log(environ, str(error), traceback.format_exc())
            response = Response(500)
        return response

    def _send(
        self, request: Request, response: Response, start_response: StartResponse
    ) -> list[bytes]:
        headers = list(response.headers)
        if request.authenticated and response.status < 400:
            headers.insert(0, ("Cache-Control", "private"))
        if request.cors_origin is not None:
            headers += response_headers(request.cors_origin)
        headers.append(("Date", _http_date(int(self._clock().timestamp()))))
        headers.append(("Content-Length", str(len(response.body))))
        start_response(f"{response.status} {REASONS[response.status]}", headers)
        return [response.body]

    def _log(self, environ: dict[str, Any], text: str, details: str = "") -> None:
        """One error-log entry in the reference format (http-api 15.2)."""
        stream = environ.get("wsgi.errors")
        if stream is None:
            return
        stream.write(
            f"[{self._clock().isoformat()}] [pid {os.getpid()}:tid {threading.get_ident()}] "
            f"[client {environ.get('REMOTE_ADDR', '-')}] {text} \n{details}"
        )
        stream.flush()

    # Dispatch (http-api 2)
    def _dispatch(self, request: Request) -> Response:
        node = self._root
        segments = request.segments
        while segments and segments[0] in node.children:
            node = node.children[segments[0]]
            segments = segments[1:]
        if node.acme:
            if self._acme is None:
                return Response(404)
            request.authority = node.authority
            return self._acme.answer(request, lambda: self._route(request, node, segments))
        return self._route(request, node, segments)

    def _route(self, request: Request, node: Node, segments: list[str]) -> Response:
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
        request.route = route_template(node.authority, route)
        argument = parse_subpath(route.subpath, segments)
        return self._run(route, request, argument)

    def _run(self, route: Route, request: Request, argument: int | str) -> Response:
        """The route's credentials, checked before or after its body step as it says."""
        if route.auth is Auth.ACME_JWS:
            assert isinstance(argument, int)  # ACME routes take ACME_ID subpaths only
            return self._run_acme(route, request, argument)
        if route.auth is Auth.FIRST:
            self._authenticate(request)
        body = route.body(request)
        signed = isinstance(body, SignedEnvelope)
        if route.auth is Auth.SIGNATURE and not signed:
            raise HTTPError(400, b"Renewal needs a signed envelope")
        if route.auth is Auth.AFTER_BODY or (
            route.auth is Auth.SIGNATURE_OR_AFTER_BODY and not signed
        ):
            self._authenticate(request)
        return route.handler(self._service, request, argument, body)

    def _run_acme(self, route: Route, request: Request, argument: int) -> Response:
        """The JWS verified with the route's key source, its nonce spent before the handler
        runs or, for routes that say so, by the handler in its own transaction."""
        assert self._acme is not None and route.key_source is not None
        signed = self._acme.verify(request, route.key_source, not route.spends_nonce)
        response = route.handler(self._service, request, argument, signed)
        if not signed.spent:  # a bug: the handler changed something without spending it
            raise RuntimeError(f"{route.method} {route.node}: the nonce was not spent")
        return response

    def _authenticate(self, request: Request) -> None:
        """Check the client certificate against the CAU on every request (http-api 4)."""
        pem = request.environ.get("SSL_CLIENT_CERT")
        if request.scheme != "https":
            raise unauthorized(b"Authentication needs a client certificate, over HTTPS")
        if not isinstance(pem, str) or not pem:
            raise unauthorized(b"No client certificate presented")
        try:
            certificate = x509util.load_certificate(pem.encode("utf-8"))
            self._cau.verify_certificate(certificate)
        except CertificateVerificationError as error:
            reason = f"Client certificate refused: {error.reason}".encode()
            raise unauthorized(_REFUSALS.get(error.reason, reason)) from None
        except (CertificateAuthorityException, ValueError, TypeError):
            raise unauthorized(b"Client certificate cannot be verified") from None
        request.authenticated = True
        request.user = certificate
        events.set_user(certificate)
