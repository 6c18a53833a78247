"""The ACME front door of the CAS (RFC 8555): the dispatcher's ACME steps and the handlers
of the ACME routes (caucase.http.routes.ACME_ROUTES).

``AcmeFront`` is what caucase.http.app calls for anything under /cas/acme: it refuses plain
HTTP, verifies the JWS of ``ACME_JWS`` routes, renders every refusal (an AcmeProblem, or
an HTTP error of the dispatcher) as ``application/problem+json`` in one place, and gives
every answer a fresh Replay-Nonce, the Link to the directory and ``no-store`` (6.5, 7.1).
Handlers get the signer from the dispatcher and build documents from caucase.acme.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from caucase.acme import problems
from caucase.acme.accounts import Signed, account_document
from caucase.acme.issuance import PEM_CERTIFICATE_CHAIN
from caucase.acme.jws import MAX_REQUEST_BYTES, KeySource
from caucase.acme.ordering import OrderView, challenge_document
from caucase.acme.orders import retry_after
from caucase.acme.resources import OrdersList, Status, Urls
from caucase.acme.service import AcmeService
from caucase.exceptions import NotFound as RowNotFound
from caucase.http.handlers import Service
from caucase.http.request import HTTPError, Request, Response

JOSE_JSON = "application/jose+json"
JSON = "application/json"


def urls_of(request: Request) -> Urls:
    """caucased's ACME URLs as this request reaches it."""
    return Urls(request.https_base() + "/cas")


class AcmeFront:
    def __init__(self, service: AcmeService) -> None:
        self._service = service

    def answer(self, request: Request, dispatch: Callable[[], Response]) -> Response:
        """Run `dispatch` as an ACME request: HTTPS only, refusals as problem documents."""
        try:
            if request.scheme != "https":
                raise problems.Malformed(
                    f"ACME is served over HTTPS only: {urls_of(request).directory}"
                )
            response = dispatch()
            if response.status >= 400:
                raise _problem_of(response)
        except problems.AcmeProblem as problem:
            response = self._problem(problem)
        except HTTPError as error:
            response = self._problem(_problem_of(error.response))
        except RowNotFound as error:
            response = self._problem(problems.NotFound(str(error)))
        return self._decorate(request, response)

    def _problem(self, problem: problems.AcmeProblem) -> Response:
        rendered = problems.render(problem, self._service.nonces.issue())
        return Response(rendered.status, rendered.headers, rendered.body)

    def _decorate(self, request: Request, response: Response) -> Response:
        headers = response.headers
        names = {name.lower() for name, _ in headers}
        if "replay-nonce" not in names:
            headers.append(("Replay-Nonce", self._service.nonces.issue()))
        if "cache-control" not in names:
            headers.append(("Cache-Control", "no-store"))
        if request.scheme == "https":
            headers.append(("Link", f'<{urls_of(request).directory}>;rel="index"'))
        return response

    def verify(self, request: Request, source: KeySource, spend: bool = True) -> Signed:
        """The signed request of an ACME_JWS route (6.2): its body, bounded, in
        ``application/jose+json``, verified for this URL with the key `source` names;
        its nonce spent unless the handler spends it (`spend` False)."""
        if request.content_type != JOSE_JSON:
            raise problems.UnsupportedMediaType(f"ACME requests are {JOSE_JSON}")
        try:
            length = int(str(request.environ.get("CONTENT_LENGTH") or 0))
        except ValueError:
            length = 0
        if length > MAX_REQUEST_BYTES:
            raise problems.PayloadTooLarge(f"requests have at most {MAX_REQUEST_BYTES} bytes")
        body = request.read_body(limit=MAX_REQUEST_BYTES)
        return self._service.verify(body, request.https_url(), source, urls_of(request), spend)


def _problem_of(response: Response) -> problems.AcmeProblem:
    """The problem document of a refusal the dispatcher made in plain HTTP terms."""
    detail = response.body.decode("utf-8", "replace").strip("b'") or "request refused"
    if response.status == 404:
        return problems.NotFound("no such ACME resource")
    if response.status == 405:
        allow = dict((name.lower(), value) for name, value in response.headers).get("allow")
        methods = [method.strip() for method in (allow or "").split(",") if method.strip()]
        if methods == ["OPTIONS"]:  # a path prefix of the ACME resources, not one of them
            return problems.NotFound("no such ACME resource")
        return problems.MethodNotAllowed("method not allowed", methods)
    if response.status == 413:
        return problems.PayloadTooLarge(detail)
    if response.status == 411:
        return problems.LengthRequired(detail)
    return problems.Malformed(detail)


def _acme(service: Service) -> AcmeService:
    if service.acme is None:
        raise problems.NotFound("ACME is not served here")
    return service.acme


def _json(status: int, document: dict[str, Any], headers: list[tuple[str, str]]) -> Response:
    body = json.dumps(document, separators=(",", ":")).encode()
    return Response(status, [("Content-Type", JSON), *headers], body)


def _polling(status: Status) -> list[tuple[str, str]]:
    """Retry-After for a resource a client should poll (7.4, 8.2)."""
    seconds = retry_after(status)
    return [] if seconds is None else [("Retry-After", str(seconds))]


def get_directory(service: Service, request: Request, _: int, __: None) -> Response:
    return _json(200, _acme(service).directory(urls_of(request)).to_json(), [])


def new_nonce(service: Service, request: Request, _: int, __: None) -> Response:
    """7.2: HEAD answers 200, GET 204; the nonce is the front's Replay-Nonce."""
    return Response(200 if request.method == "HEAD" else 204)


def new_account(service: Service, request: Request, _: int, signed: Signed) -> Response:
    urls = urls_of(request)
    account, created = _acme(service).accounts.new_account(signed.request)
    document = account_document(account, urls).to_json()
    return _json(201 if created else 200, document, [("Location", urls.account(account.id))])


def post_account(service: Service, request: Request, account_id: int, signed: Signed) -> Response:
    urls = urls_of(request)
    account = _acme(service).accounts.update(signed, account_id)
    return _json(200, account_document(account, urls).to_json(), [])


def key_change(service: Service, request: Request, _: int, signed: Signed) -> Response:
    urls = urls_of(request)
    account = _acme(service).accounts.change_key(signed, urls)
    return _json(200, account_document(account, urls).to_json(), [])


def account_orders(
    service: Service, request: Request, account_id: int, signed: Signed
) -> Response:
    orders = _acme(service).orders.order_list(signed.signer, account_id, urls_of(request))
    return _json(200, OrdersList(orders).to_json(), [])


def _order_answer(status: int, view: OrderView, request: Request) -> Response:
    urls = urls_of(request)
    headers = [("Location", urls.order(view.row.id)), *_polling(view.status)]
    return _json(status, view.document(urls).to_json(), headers)


def new_order(service: Service, request: Request, _: int, signed: Signed) -> Response:
    acme = _acme(service)
    view = acme.orders.new_order(signed, acme.accounts.scope_of(signed.signer))
    return _order_answer(201, view, request)


def post_order(service: Service, request: Request, order_id: int, signed: Signed) -> Response:
    orders = _acme(service).orders
    return _order_answer(200, orders.view(orders.owned_order(signed.signer, order_id)), request)


def finalize(service: Service, request: Request, order_id: int, signed: Signed) -> Response:
    return _order_answer(200, _acme(service).issuance.finalize(signed, order_id), request)


def post_authorization(
    service: Service, request: Request, authz_id: int, signed: Signed
) -> Response:
    orders = _acme(service).orders
    authz = orders.authorization(signed.signer, authz_id, signed.request.payload)
    document = orders.authorization_document(authz, urls_of(request))
    return _json(200, document.to_json(), _polling(document.status))


def post_challenge(
    service: Service, request: Request, challenge_id: int, signed: Signed
) -> Response:
    """7.5.1: the challenge, with Link ``up`` to its authorization, which clients poll."""
    urls = urls_of(request)
    challenge = _acme(service).orders.respond(signed.signer, challenge_id, signed.request)
    headers = [("Link", f'<{urls.authorization(challenge.authz_id)}>;rel="up"')]
    headers += _polling(Status(challenge.status))
    return _json(200, challenge_document(challenge, urls).to_json(), headers)


def certificate(service: Service, request: Request, order_id: int, signed: Signed) -> Response:
    chain = _acme(service).issuance.certificate_chain(signed, order_id)
    return Response(200, [("Content-Type", PEM_CERTIFICATE_CHAIN)], chain)


def revoke_cert(service: Service, request: Request, _: int, signed: Signed) -> Response:
    _acme(service).issuance.revoke(signed)
    return Response(200)
