"""The CAU routes managing ACME External Account Binding credentials (caucase
--new-acme-eab, --show-acme-eab, --revoke-acme-eab): authenticated users only, which the
dispatcher enforces from the route table.
"""

from __future__ import annotations

import json

from caucase.acme.credentials import Credentials
from caucase.acme.identifiers import InvalidIdentifier
from caucase.exceptions import NoStorage
from caucase.http.handlers import JSON, Service
from caucase.http.request import HTTPError, Request, Response


def _credentials(service: Service) -> Credentials:
    if service.acme is None:
        raise HTTPError(404)
    return service.acme.credentials


def _user_name(request: Request) -> str:
    """Who minted a credential: the subject and serial of their CAU certificate."""
    user = request.user
    if user is None:
        return "unknown"
    return f"{user.subject.rfc4514_string()} (serial {user.serial_number:#x})"


def mint_credential(service: Service, request: Request, _: int, scope: list[str]) -> Response:
    """201 with ``{"kid": ..., "hmac_key": <base64url>}``; 400 for a bad pattern."""
    try:
        credential = _credentials(service).mint(scope, _user_name(request))
    except (InvalidIdentifier, ValueError) as error:
        raise HTTPError(400, f"Invalid scope: {error}".encode()) from None
    except NoStorage as error:
        raise HTTPError(507, str(error).encode()) from None
    body = json.dumps({"kid": credential.kid, "hmac_key": credential.encoded_key})
    return Response(201, [("Content-Type", JSON)], body.encode())


def list_credentials(service: Service, request: Request, _: int, __: None) -> Response:
    body = json.dumps(_credentials(service).listing())
    return Response(200, [("Content-Type", JSON)], body.encode())


def revoke_credential(service: Service, request: Request, _: int, kid: str) -> Response:
    """204; 404 for an unknown kid."""
    _credentials(service).revoke(kid)
    return Response(204)
