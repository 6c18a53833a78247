"""The order and authorization state machine (RFC 8555 7.1.6), as pure functions of what
storage holds, and caucase's admission rule for new orders.

Admission is caucase's approval model: an identifier the account's EAB scope covers is
pre-authorized (7.1.4 allows it; the CAU user who minted the credential decided), any
other is refused with rejectedIdentifier unless caucased validates challenges
(``--acme-challenge``), and then only if some enabled challenge type applies to it.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from caucase.acme.challenges import Validators
from caucase.acme.identifiers import Identifier, Scope
from caucase.acme.messages import NewOrder
from caucase.acme.problems import Malformed, OrderNotReady, RateLimited, RejectedIdentifier
from caucase.acme.resources import Status

# Polling hint of pending and processing resources (7.4, 8.2).
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class Limits:
    """Per-account bounds, so that no account grows the database without limit."""

    pending_orders: int = 20
    orders_per_hour: int = 300
    order_lifetime: datetime.timedelta = datetime.timedelta(days=1)
    authorization_lifetime: datetime.timedelta = datetime.timedelta(days=1)

    def check_new_order(self, pending_orders: int, orders_last_hour: int) -> None:
        """rateLimited when the account already has too many pending orders or placed too
        many in the last hour (counts from storage)."""
        if pending_orders >= self.pending_orders:
            raise RateLimited(
                f"at most {self.pending_orders} pending orders per account", retry_after=60
            )
        if orders_last_hour >= self.orders_per_hour:
            raise RateLimited(
                f"at most {self.orders_per_hour} orders per hour per account", retry_after=3600
            )


def admit(
    order: NewOrder, scope: Scope | None, validators: Validators | None
) -> dict[Identifier, Status]:
    """The initial status of each identifier's authorization: valid when the scope covers
    it, pending when a challenge can prove it; rejectedIdentifier (with one subproblem per
    refused identifier, 6.7.1) otherwise. `scope` None: an account without EAB
    (``--acme-open``); `validators` None: ``--acme-challenge`` is off."""
    if order.not_before is not None or order.not_after is not None:
        # The validity is the profile's (--service-crt-validity), as for /cas/csr.
        raise Malformed("notBefore and notAfter are not supported: the CA sets the validity")
    statuses: dict[Identifier, Status] = {}
    refused = []
    for identifier in order.identifiers:
        if scope is not None and scope.covers(identifier):
            statuses[identifier] = Status.VALID
        elif validators is not None and validators.types_for(identifier):
            statuses[identifier] = Status.PENDING
        else:
            refused.append(
                RejectedIdentifier(
                    f"{identifier.value} is outside the account's scope",
                    identifier=identifier.to_json(),
                )
            )
    if refused:
        names = ", ".join(
            str(problem.identifier["value"]) for problem in refused if problem.identifier
        )
        raise RejectedIdentifier(f"identifiers refused: {names}", subproblems=refused)
    return statuses


def authorization_status(
    stored: Status,
    challenge_statuses: Sequence[Status],
    expires: datetime.datetime,
    now: datetime.datetime,
) -> Status:
    """7.1.6: valid once a challenge is, invalid once one failed, expired past
    ``expires`` unless valid; deactivated and revoked are stored decisions."""
    if stored in (Status.DEACTIVATED, Status.REVOKED, Status.INVALID):
        return stored
    if stored is Status.VALID or Status.VALID in challenge_statuses:
        return Status.EXPIRED if now >= expires else Status.VALID
    if Status.INVALID in challenge_statuses:
        return Status.INVALID
    return Status.EXPIRED if now >= expires else Status.PENDING


def order_status(
    authorization_statuses: Sequence[Status],
    *,
    expires: datetime.datetime,
    now: datetime.datetime,
    processing: bool,
    has_certificate: bool,
) -> Status:
    """7.1.6: valid with its certificate; processing while it is signed; invalid once an
    authorization is not valid for good, or expired before finalization; ready once all
    authorizations are valid; pending before."""
    if has_certificate:
        return Status.VALID
    if processing:
        return Status.PROCESSING
    failed = {Status.INVALID, Status.DEACTIVATED, Status.EXPIRED, Status.REVOKED}
    if now >= expires or failed.intersection(authorization_statuses):
        return Status.INVALID
    if all(status is Status.VALID for status in authorization_statuses):
        return Status.READY
    return Status.PENDING


def check_finalizable(status: Status) -> None:
    """7.4: finalize only a ready order."""
    if status is not Status.READY:
        raise OrderNotReady(f"the order is {status.value}, not ready")


def retry_after(status: Status) -> int | None:
    """Seconds a client should wait before polling a resource in `status` again."""
    if status in (Status.PENDING, Status.PROCESSING):
        return RETRY_AFTER_SECONDS
    return None
