"""Admission of new orders under caucase's approval model, and the RFC 8555 7.1.6 state
machine."""

from __future__ import annotations

import datetime

import pytest

from caucase.acme import problems
from caucase.acme.challenges import Dns01Validator, Http01Validator, Validators
from caucase.acme.identifiers import Identifier, Scope
from caucase.acme.messages import NewOrder
from caucase.acme.orders import (
    Limits,
    admit,
    authorization_status,
    check_finalizable,
    order_status,
    retry_after,
)
from caucase.acme.resolver import Resolver
from caucase.acme.resources import Status

NOW = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)
LATER = NOW + datetime.timedelta(hours=1)
SCOPE = Scope.parse(["*.svc.test", "10.0.0.7"])
IN_SCOPE = Identifier.dns("a.svc.test")
OUTSIDE = Identifier.dns("www.other.test")


def order(*identifiers: Identifier) -> NewOrder:
    return NewOrder(tuple(identifiers), None, None, None)


def test_identifiers_in_scope_are_pre_authorized() -> None:
    statuses = admit(order(IN_SCOPE, Identifier.ip("10.0.0.7")), SCOPE, None)
    assert set(statuses.values()) == {Status.VALID}


def test_identifiers_outside_the_scope_are_rejected_one_by_one() -> None:
    with pytest.raises(problems.RejectedIdentifier) as caught:
        admit(order(IN_SCOPE, OUTSIDE, Identifier.ip("10.0.0.8")), SCOPE, None)
    refused = [sub["identifier"]["value"] for sub in caught.value.to_json()["subproblems"]]
    assert refused == ["www.other.test", "10.0.0.8"]


def test_with_challenges_outside_identifiers_are_pending() -> None:
    validators = Validators.of([Http01Validator(Resolver())])
    statuses = admit(order(IN_SCOPE, OUTSIDE), SCOPE, validators)
    assert statuses == {IN_SCOPE: Status.VALID, OUTSIDE: Status.PENDING}


def test_a_wildcard_outside_the_scope_needs_dns01() -> None:
    wildcard = Identifier.dns("*.other.test")
    with pytest.raises(problems.RejectedIdentifier):
        admit(order(wildcard), SCOPE, Validators.of([Http01Validator(Resolver())]))
    assert admit(order(wildcard), None, Validators.of([Dns01Validator(Resolver())])) == {
        wildcard: Status.PENDING
    }


def test_requested_validity_is_refused() -> None:
    with pytest.raises(problems.Malformed, match="notAfter"):
        admit(NewOrder((IN_SCOPE,), None, LATER, None), SCOPE, None)


def test_limits() -> None:
    limits = Limits(pending_orders=2, orders_per_hour=5)
    limits.check_new_order(1, 4)
    for pending, recent in ((2, 0), (0, 5)):
        with pytest.raises(problems.RateLimited):
            limits.check_new_order(pending, recent)


@pytest.mark.parametrize(
    ("stored", "challenges", "now", "expected"),
    [
        (Status.PENDING, [Status.PENDING], NOW, Status.PENDING),
        (Status.PENDING, [Status.PENDING, Status.VALID], NOW, Status.VALID),
        (Status.PENDING, [Status.INVALID], NOW, Status.INVALID),
        (Status.PENDING, [Status.PENDING], LATER, Status.EXPIRED),
        (Status.VALID, [], NOW, Status.VALID),
        (Status.VALID, [], LATER, Status.EXPIRED),
        (Status.DEACTIVATED, [Status.VALID], NOW, Status.DEACTIVATED),
        (Status.REVOKED, [], NOW, Status.REVOKED),
    ],
)
def test_authorization_status(
    stored: Status, challenges: list[Status], now: datetime.datetime, expected: Status
) -> None:
    assert authorization_status(stored, challenges, LATER, now) is expected


@pytest.mark.parametrize(
    ("authorizations", "now", "processing", "certificate", "expected"),
    [
        ([Status.VALID, Status.PENDING], NOW, False, False, Status.PENDING),
        ([Status.VALID, Status.VALID], NOW, False, False, Status.READY),
        ([Status.VALID, Status.INVALID], NOW, False, False, Status.INVALID),
        ([Status.VALID, Status.DEACTIVATED], NOW, False, False, Status.INVALID),
        ([Status.VALID], LATER, False, False, Status.INVALID),
        ([Status.VALID], NOW, True, False, Status.PROCESSING),
        ([Status.VALID], LATER, False, True, Status.VALID),
    ],
)
def test_order_status(
    authorizations: list[Status], now: datetime.datetime, processing: bool, certificate: bool,
    expected: Status,
) -> None:  # fmt: skip
    status = order_status(
        authorizations, expires=LATER, now=now, processing=processing, has_certificate=certificate
    )
    assert status is expected


def test_only_a_ready_order_is_finalized() -> None:
    check_finalizable(Status.READY)
    for status in (Status.PENDING, Status.PROCESSING, Status.VALID, Status.INVALID):
        with pytest.raises(problems.OrderNotReady):
            check_finalizable(status)


def test_polling_hints() -> None:
    assert retry_after(Status.PROCESSING) == retry_after(Status.PENDING) == 1
    assert retry_after(Status.VALID) is None
