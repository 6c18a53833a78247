"""Orders, authorizations and challenges (RFC 8555 7.4, 7.5; RFC 9773 5) over storage.

New orders are admitted under the account's scope (caucase.acme.orders.admit): covered
identifiers get a valid authorization at once, the others (with ``--acme-challenge``) a
pending one with a challenge per applicable type. Every resource belongs to the account
that placed its order: another account's request is unauthorized. Statuses clients see
are derived from the stored ones by caucase.acme.orders.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from caucase.acme import messages
from caucase.acme.accounts import Signed
from caucase.acme.challenges import Validators, key_authorization, new_token
from caucase.acme.identifiers import Identifier, Scope
from caucase.acme.jws import VerifiedRequest
from caucase.acme.orders import (
    Limits,
    admit,
    authorization_status,
    order_status,
)
from caucase.acme.problems import (
    AcmeProblem,
    AlreadyReplaced,
    Malformed,
    NotFound,
    RateLimited,
    Unauthorized,
)
from caucase.acme.renewal_info import CertID
from caucase.acme.resources import Authorization, Challenge, Order, Status, Urls
from caucase.acme.validation import DEFAULT_WORKERS, ValidationJob, ValidationPool
from caucase.ca import CertificateAuthority
from caucase.clock import Clock, from_timestamp, to_timestamp
from caucase.storage.acme import AcmeStorage
from caucase.storage.acme_schema import (
    AccountRow,
    AuthzRow,
    ChallengeRow,
    NewAuthz,
    OrderRow,
)

HOUR = 3600
# A challenge left processing longer than this (a caucased stopped while validating it)
# is started again by the client's next POST.
STALE_VALIDATION = 120
MAX_LISTED_ORDERS = 100
PURGE_INTERVAL = 600


@dataclass(frozen=True)
class OrderView:
    """An order as a client sees it: the stored row, its authorizations, its status."""

    row: OrderRow
    authorizations: Sequence[AuthzRow]
    status: Status

    def document(self, urls: Urls) -> Order:
        return Order(
            self.status,
            from_timestamp(self.row.expires),
            [Identifier(kind, value) for kind, value in self.row.identifiers],
            [urls.authorization(authz.id) for authz in self.authorizations],
            urls.finalize(self.row.id),
            certificate=urls.certificate(self.row.id) if self.row.crt_id is not None else None,
            replaces=self.row.replaces,
        )


class Orders:
    def __init__(
        self,
        storage: AcmeStorage,
        cas: CertificateAuthority,
        clock: Clock,
        limits: Limits,
        validators: Validators | None,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        """With `validators` (``--acme-challenge``), `workers` threads validate challenges."""
        self._storage = storage
        self._cas = cas
        self._clock = clock
        self._limits = limits
        self._validators = validators
        self._pool = None
        if validators is not None:
            self._pool = ValidationPool(validators, self.record_validation, workers)
        self._next_purge = 0

    def close(self) -> None:
        """Stop the validation workers."""
        if self._pool is not None:
            self._pool.close()

    def _timestamp(self) -> int:
        return to_timestamp(self._clock())

    # New orders
    def new_order(self, signed: Signed, scope: Scope | None) -> OrderView:
        """7.4: a new order, its authorizations pre-validated where the scope covers them;
        rejectedIdentifier, rateLimited or alreadyReplaced otherwise."""
        account = signed.signer
        order = messages.parse_new_order(signed.request.payload)
        statuses = admit(order, scope, self._validators)
        now = self._timestamp()
        replaces = self._replaces(account, order.replaces, now)
        pending, recent = self._storage.order_counts(account.id, now, now - HOUR)
        self._limits.check_new_order(pending, recent)
        self._purge(now)
        authorizations = [
            NewAuthz(
                identifier.type,
                identifier.value,
                status.value,
                [] if status is Status.VALID else self._challenges(identifier),
            )
            for identifier, status in statuses.items()
        ]
        with self._storage.transaction():
            signed.spend()
            row, authz_rows = self._storage.add_order(
                account.id, [(item.type, item.value) for item in order.identifiers],
                authorizations, now=now, replaces=replaces,
                expires=now + int(self._limits.order_lifetime.total_seconds()),
                authz_expires=now + int(self._limits.authorization_lifetime.total_seconds()),
            )  # fmt: skip
        return self.view(row, authz_rows)

    def _challenges(self, identifier: Identifier) -> list[tuple[str, str]]:
        if self._validators is None:
            return []
        return [(kind, new_token()) for kind in self._validators.types_for(identifier)]

    def _replaces(self, account: AccountRow, cert_id: CertID | None, now: int) -> str | None:
        """RFC 9773 5: `cert_id` must name a certificate this CA issued to the account,
        which no other order replaces already."""
        if cert_id is None:
            return None
        issuers = {
            ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            for ca in self._cas.get_ca_certificate_list()
        }
        order = self._storage.order_of_serial(cert_id.serial)
        if (
            cert_id.authority_key_identifier not in issuers
            or order is None
            or order.account_id != account.id
        ):
            raise Malformed("'replaces' names no certificate issued to this account")
        if self._storage.is_replaced(str(cert_id), now):
            raise AlreadyReplaced(f"certificate {cert_id} is replaced by another order already")
        return str(cert_id)

    def _purge(self, now: int) -> None:
        if now >= self._next_purge:
            self._next_purge = now + PURGE_INTERVAL
            self._storage.purge(now)

    # Lookups of the account's resources
    def owned_order(self, account: AccountRow, order_id: int) -> OrderRow:
        order = self._storage.order(order_id)
        if order is None:
            raise NotFound(f"no order {order_id}")
        check_owner(account, order.account_id)
        return order

    def _owned_authz(self, account: AccountRow, authz_id: int) -> AuthzRow:
        found = self._storage.authorization_owner(authz_id)
        if found is None:
            raise NotFound(f"no authorization {authz_id}")
        authz, owner = found
        if owner is None:
            raise NotFound(f"no order {authz.order_id}")
        check_owner(account, owner)
        return authz

    def view(self, order: OrderRow, authorizations: Sequence[AuthzRow] | None = None) -> OrderView:
        """The order as its client sees it; `authorizations` when the caller has them."""
        now = self._clock()
        if authorizations is None:
            authorizations = self._storage.authorizations(order.id)
        status = order_status(
            [self._authz_status(authz, now) for authz in authorizations],
            expires=from_timestamp(order.expires),
            now=now,
            processing=False,
            has_certificate=order.crt_id is not None,
        )
        return OrderView(order, authorizations, status)

    @staticmethod
    def _authz_status(authz: AuthzRow, now: datetime.datetime) -> Status:
        # Validation stores the authorization's status with its challenge's (8.2).
        return authorization_status(Status(authz.status), (), from_timestamp(authz.expires), now)

    def order_list(self, account: AccountRow, account_id: int, urls: Urls) -> list[str]:
        """7.1.2.1: the account's newest orders."""
        if account.id != account_id:
            raise Unauthorized("an account can only list its own orders")
        order_ids = self._storage.orders_of_account(account.id, MAX_LISTED_ORDERS)
        return [urls.order(order_id) for order_id in order_ids]

    # Authorizations and challenges
    def authorization(
        self, account: AccountRow, authz_id: int, payload: dict[str, Any] | None
    ) -> AuthzRow:
        """7.5 (POST-as-GET) and 7.5.2 (deactivation)."""
        authz = self._owned_authz(account, authz_id)
        if payload is None:
            return authz
        if payload != {"status": "deactivated"}:
            raise Malformed("an authorization can only be updated to 'deactivated'")
        self._storage.deactivate_authorization(authz.id)
        updated = self._storage.authorization(authz.id)
        assert updated is not None
        return updated

    def authorization_document(self, authz: AuthzRow, urls: Urls) -> Authorization:
        challenges = self._storage.challenges([authz.id])
        return Authorization(
            Identifier(authz.identifier_type, authz.identifier_value),
            self._authz_status(authz, self._clock()),
            from_timestamp(authz.expires),
            [challenge_document(challenge, urls) for challenge in challenges],
        )

    def respond(
        self, account: AccountRow, challenge_id: int, request: VerifiedRequest
    ) -> ChallengeRow:
        """7.5.1: a POST of ``{}`` starts the validation (in the background); POST-as-GET
        reads the challenge."""
        challenge = self._storage.challenge(challenge_id)
        if challenge is None:
            raise NotFound(f"no challenge {challenge_id}")
        authz = self._owned_authz(account, challenge.authz_id)
        if request.payload is None or self._pool is None:
            return challenge
        now = self._timestamp()
        if self._storage.start_challenge(challenge.id, now, now - STALE_VALIDATION):
            job = ValidationJob(
                challenge.id, authz.id, challenge.type,
                Identifier(authz.identifier_type, authz.identifier_value), challenge.token,
                key_authorization(challenge.token, request.jwk),
            )  # fmt: skip
            if not self._pool.submit(job):
                self._storage.release_challenge(challenge.id)
                raise RateLimited("too many validations under way", retry_after=5)
        started = self._storage.challenge(challenge.id)
        assert started is not None
        return started

    def record_validation(self, job: ValidationJob, problem: AcmeProblem | None) -> None:
        """The outcome of a background validation (caucase.acme.validation)."""
        error = None if problem is None else problem.to_json()
        self._storage.finish_challenge(job.challenge_id, job.authz_id, self._timestamp(), error)


def check_owner(account: AccountRow, owner_id: int) -> None:
    """Unauthorized unless `account` is the owner (`owner_id`) of the order asked for."""
    if owner_id != account.id:
        raise Unauthorized("this order belongs to another account")


def challenge_document(challenge: ChallengeRow, urls: Urls) -> Challenge:
    return Challenge(
        challenge.type,
        urls.challenge(challenge.id),
        challenge.token,
        Status(challenge.status),
        validated=from_timestamp(challenge.updated) if challenge.status == "valid" else None,
        error=challenge.error,
    )
