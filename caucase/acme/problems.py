"""ACME errors: one exception class per RFC 8555 error type (6.7), rendered in one place.

Every refusal of the ACME front door is an ``AcmeProblem`` subclass carrying its error URN
and HTTP status; ``render`` turns it into the ``application/problem+json`` answer (RFC 7807)
so that no handler builds an error body by hand. There is deliberately no ``serverInternal``
class: a request we cannot serve is refused with the type that says why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

ERROR_NAMESPACE = "urn:ietf:params:acme:error:"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class AcmeProblem(Exception):
    """A request refused with an RFC 8555 error document."""

    error_type: ClassVar[str] = "malformed"
    status: ClassVar[int] = 400

    def __init__(
        self,
        detail: str,
        *,
        identifier: dict[str, str] | None = None,
        subproblems: Sequence[AcmeProblem] = (),
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.identifier = identifier
        self.subproblems = tuple(subproblems)

    @property
    def type_urn(self) -> str:
        return ERROR_NAMESPACE + self.error_type

    def extra_fields(self) -> dict[str, Any]:
        """Members some error types add to the document (e.g. ``algorithms``)."""
        return {}

    def headers(self) -> list[tuple[str, str]]:
        """Header fields some refusals add (Retry-After, Location, Allow)."""
        return []

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"type": self.type_urn, "detail": self.detail}
        if self.identifier is not None:
            document["identifier"] = self.identifier
        document.update(self.extra_fields())
        document["status"] = self.status
        if self.subproblems:
            # 6.7.1: a subproblem carries its own type and the identifier it is about.
            document["subproblems"] = [problem.to_json() for problem in self.subproblems]
        return document


class Malformed(AcmeProblem):
    error_type = "malformed"


class BadNonce(AcmeProblem):
    """The client retries with the fresh nonce sent along (6.5)."""

    error_type = "badNonce"


class BadSignatureAlgorithm(AcmeProblem):
    error_type = "badSignatureAlgorithm"

    def __init__(self, detail: str, algorithms: Sequence[str]) -> None:
        super().__init__(detail)
        self.algorithms = list(algorithms)

    def extra_fields(self) -> dict[str, Any]:
        # 6.2: the document MUST list the algorithms the server accepts.
        return {"algorithms": self.algorithms}


class BadPublicKey(AcmeProblem):
    error_type = "badPublicKey"


class Unauthorized(AcmeProblem):
    error_type = "unauthorized"
    status = 403


class AccountDoesNotExist(AcmeProblem):
    error_type = "accountDoesNotExist"
    status = 400


class ExternalAccountRequired(AcmeProblem):
    error_type = "externalAccountRequired"
    status = 403


class InvalidContact(AcmeProblem):
    error_type = "invalidContact"


class UnsupportedContact(AcmeProblem):
    error_type = "unsupportedContact"


class RejectedIdentifier(AcmeProblem):
    error_type = "rejectedIdentifier"
    status = 403


class UnsupportedIdentifier(AcmeProblem):
    error_type = "unsupportedIdentifier"


class OrderNotReady(AcmeProblem):
    error_type = "orderNotReady"
    status = 403


class BadCSR(AcmeProblem):
    error_type = "badCSR"


class BadRevocationReason(AcmeProblem):
    error_type = "badRevocationReason"


class AlreadyRevoked(AcmeProblem):
    error_type = "alreadyRevoked"


class AlreadyReplaced(AcmeProblem):
    """RFC 9773 5: the certificate a newOrder ``replaces`` was already replaced."""

    error_type = "alreadyReplaced"
    status = 409


class RateLimited(AcmeProblem):
    """Per-account limits (pending orders, order rate); the client waits ``retry_after``."""

    error_type = "rateLimited"
    status = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after))]


class Conflict(AcmeProblem):
    """7.3.5: the new key of a keyChange is another account's, named by Location."""

    error_type = "malformed"
    status = 409

    def __init__(self, detail: str, location: str) -> None:
        super().__init__(detail)
        self.location = location

    def headers(self) -> list[tuple[str, str]]:
        return [("Location", self.location)]


class MethodNotAllowed(AcmeProblem):
    """6.3: resources other than the directory and newNonce take POST only."""

    error_type = "malformed"
    status = 405

    def __init__(self, detail: str, allowed: Sequence[str]) -> None:
        super().__init__(detail)
        self.allowed = list(allowed)

    def headers(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(self.allowed))]


class NotFound(AcmeProblem):
    """An unknown account, order, authorization, challenge or certificate URL."""

    error_type = "malformed"
    status = 404


class PayloadTooLarge(AcmeProblem):
    error_type = "malformed"
    status = 413


class LengthRequired(AcmeProblem):
    """A body whose end the server cannot know (neither Content-Length nor chunked)."""

    error_type = "malformed"
    status = 411


class UnsupportedMediaType(AcmeProblem):
    """6.2: the body of every POST is ``application/jose+json``."""

    error_type = "malformed"
    status = 415


class ValidationFailed(AcmeProblem):
    """Base of the challenge failures (8.x): stored in the challenge's ``error``."""

    error_type = "incorrectResponse"
    status = 403


class IncorrectResponse(ValidationFailed):
    error_type = "incorrectResponse"


class ConnectionProblem(ValidationFailed):
    error_type = "connection"


class DNSProblem(ValidationFailed):
    error_type = "dns"


class TLSProblem(ValidationFailed):
    error_type = "tls"


@dataclass(frozen=True)
class ProblemResponse:
    """What the HTTP layer sends for a refused request."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def render(problem: AcmeProblem, fresh_nonce: str | None = None) -> ProblemResponse:
    """The ``application/problem+json`` answer for `problem`.

    Every ACME response carries a Replay-Nonce (6.5), errors included: badNonce in
    particular is answered with the nonce the client retries with."""
    headers = [("Content-Type", PROBLEM_CONTENT_TYPE), ("Cache-Control", "no-store")]
    if fresh_nonce is not None:
        headers.append(("Replay-Nonce", fresh_nonce))
    headers += problem.headers()
    body = json.dumps(problem.to_json(), separators=(",", ":")).encode()
    return ProblemResponse(problem.status, headers, body)
