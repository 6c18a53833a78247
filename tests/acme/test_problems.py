"""Problem documents: the RFC 8555 error URN, a status, and the headers every ACME
answer needs."""

from __future__ import annotations

import json

import pytest

from caucase.acme import problems


@pytest.mark.parametrize(
    ("problem", "urn", "status"),
    [
        (problems.Malformed("x"), "malformed", 400),
        (problems.BadNonce("x"), "badNonce", 400),
        (problems.Unauthorized("x"), "unauthorized", 403),
        (problems.AccountDoesNotExist("x"), "accountDoesNotExist", 400),
        (problems.ExternalAccountRequired("x"), "externalAccountRequired", 403),
        (problems.RejectedIdentifier("x"), "rejectedIdentifier", 403),
        (problems.OrderNotReady("x"), "orderNotReady", 403),
        (problems.BadCSR("x"), "badCSR", 400),
        (problems.BadRevocationReason("x"), "badRevocationReason", 400),
        (problems.AlreadyRevoked("x"), "alreadyRevoked", 400),
        (problems.AlreadyReplaced("x"), "alreadyReplaced", 409),
        (problems.InvalidContact("x"), "invalidContact", 400),
        (problems.UnsupportedContact("x"), "unsupportedContact", 400),
        (problems.UnsupportedIdentifier("x"), "unsupportedIdentifier", 400),
        (problems.BadPublicKey("x"), "badPublicKey", 400),
        (problems.PayloadTooLarge("x"), "malformed", 413),
        (problems.NotFound("x"), "malformed", 404),
    ],
)
def test_each_problem_renders_its_type_and_status(
    problem: problems.AcmeProblem, urn: str, status: int
) -> None:
    response = problems.render(problem, "nonce-1")

    document = json.loads(response.body)
    assert response.status == status == document["status"]
    assert document["type"] == "urn:ietf:params:acme:error:" + urn
    assert document["detail"] == "x"
    assert ("Content-Type", "application/problem+json") in response.headers
    assert ("Replay-Nonce", "nonce-1") in response.headers


def test_every_problem_is_a_4xx() -> None:
    def subclasses(cls: type[problems.AcmeProblem]) -> list[type[problems.AcmeProblem]]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))]

    assert all(400 <= cls.status < 500 for cls in subclasses(problems.AcmeProblem))


def test_rate_limited_says_when_to_retry() -> None:
    response = problems.render(problems.RateLimited("slow down", retry_after=30))
    assert response.status == 429
    assert ("Retry-After", "30") in response.headers


def test_bad_signature_algorithm_lists_the_accepted_ones() -> None:
    document = problems.BadSignatureAlgorithm("no", ["RS256", "ES256"]).to_json()
    assert document["algorithms"] == ["RS256", "ES256"]


def test_subproblems_name_their_identifier() -> None:
    problem = problems.RejectedIdentifier(
        "some identifiers are refused",
        subproblems=[
            problems.RejectedIdentifier("not in scope", identifier={"type": "dns", "value": "a"})
        ],
    )

    (sub,) = problem.to_json()["subproblems"]

    assert sub["identifier"] == {"type": "dns", "value": "a"}
    assert sub["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
