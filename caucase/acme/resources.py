"""ACME resource documents (RFC 8555 7.1) as typed builders, and the URLs that name them.

Handlers fill these dataclasses from storage rows and send ``to_json()``; optional members
are left out when unset, as the RFC's examples do, rather than sent as null (certbot and
lego both tolerate absence, not every client tolerates null).
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caucase.acme.identifiers import Identifier
from caucase.acme.problems import AcmeProblem


class Status(str, enum.Enum):
    """Statuses of accounts, orders, authorizations and challenges (7.1.6)."""

    PENDING = "pending"
    READY = "ready"
    PROCESSING = "processing"
    VALID = "valid"
    INVALID = "invalid"
    DEACTIVATED = "deactivated"
    EXPIRED = "expired"
    REVOKED = "revoked"


def timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second: what every client parses."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Urls:
    """Every ACME URL of caucased for one CAS URL (``https://<netloc>/cas``): the ACME
    resources under ``/cas/acme``, each resource's id a decimal path segment; renewalInfo
    is the CAS's own renewal-info route (RFC 9773), which caucase's updater reads too."""

    authority: str

    @property
    def base(self) -> str:
        return f"{self.authority}/acme"

    @property
    def directory(self) -> str:
        return f"{self.base}/directory"

    @property
    def new_nonce(self) -> str:
        return f"{self.base}/new-nonce"

    @property
    def new_account(self) -> str:
        return f"{self.base}/new-account"

    @property
    def new_order(self) -> str:
        return f"{self.base}/new-order"

    @property
    def revoke_cert(self) -> str:
        return f"{self.base}/revoke-cert"

    @property
    def key_change(self) -> str:
        return f"{self.base}/key-change"

    @property
    def renewal_info(self) -> str:
        return f"{self.authority}/renewal-info"

    def account(self, account_id: int) -> str:
        return f"{self.base}/account/{account_id}"

    def account_orders(self, account_id: int) -> str:
        return f"{self.base}/orders/{account_id}"

    def order(self, order_id: int) -> str:
        return f"{self.base}/order/{order_id}"

    def finalize(self, order_id: int) -> str:
        return f"{self.base}/finalize/{order_id}"

    def authorization(self, authorization_id: int) -> str:
        return f"{self.base}/authz/{authorization_id}"

    def challenge(self, challenge_id: int) -> str:
        return f"{self.base}/challenge/{challenge_id}"

    def certificate(self, order_id: int) -> str:
        return f"{self.base}/certificate/{order_id}"

    def account_id(self, kid: str) -> int | None:
        """The id an account URL names, or None when `kid` is no account URL of ours."""
        prefix = self.account(0)[:-1]
        digits = kid[len(prefix) :]
        if not kid.startswith(prefix) or not (digits.isdigit() and digits.isascii()):
            return None
        if len(digits) > 19 or (len(digits) > 1 and digits[0] == "0"):
            return None
        return int(digits)


@dataclass(frozen=True)
class Directory:
    """7.1.1, with ``renewalInfo`` (RFC 9773 3) and ``meta.externalAccountRequired``."""

    urls: Urls
    external_account_required: bool
    website: str | None = None

    def to_json(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"externalAccountRequired": self.external_account_required}
        if self.website is not None:
            meta["website"] = self.website
        return {
            "newNonce": self.urls.new_nonce,
            "newAccount": self.urls.new_account,
            "newOrder": self.urls.new_order,
            "revokeCert": self.urls.revoke_cert,
            "keyChange": self.urls.key_change,
            "renewalInfo": self.urls.renewal_info,
            "meta": meta,
        }


@dataclass(frozen=True)
class Account:
    """7.1.2."""

    status: Status
    orders_url: str
    contact: Sequence[str] = ()
    terms_of_service_agreed: bool | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"status": self.status.value, "orders": self.orders_url}
        if self.contact:
            document["contact"] = list(self.contact)
        if self.terms_of_service_agreed is not None:
            document["termsOfServiceAgreed"] = self.terms_of_service_agreed
        return document


@dataclass(frozen=True)
class OrdersList:
    """7.1.2.1: the account's order URLs, one page at a time."""

    orders: Sequence[str]

    def to_json(self) -> dict[str, Any]:
        return {"orders": list(self.orders)}


@dataclass(frozen=True)
class Challenge:
    """7.1.5 and section 8: one way to prove control of an identifier."""

    type: str
    url: str
    token: str
    status: Status
    validated: datetime.datetime | None = None
    error: AcmeProblem | Mapping[str, Any] | None = None
    """A refusal, or the problem document stored when the validation failed."""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": self.type,
            "url": self.url,
            "token": self.token,
            "status": self.status.value,
        }
        if self.validated is not None:
            document["validated"] = timestamp(self.validated)
        if self.error is not None:
            error = self.error
            document["error"] = error.to_json() if isinstance(error, AcmeProblem) else dict(error)
        return document


@dataclass(frozen=True)
class Authorization:
    """7.1.4: for the base name of a wildcard identifier, with ``wildcard: true``."""

    identifier: Identifier
    status: Status
    expires: datetime.datetime
    challenges: Sequence[Challenge] = ()

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "identifier": self.identifier.base.to_json(),
            "status": self.status.value,
            "expires": timestamp(self.expires),
            "challenges": [challenge.to_json() for challenge in self.challenges],
        }
        if self.identifier.is_wildcard:
            document["wildcard"] = True
        return document


@dataclass(frozen=True)
class Order:
    """7.1.3, with ``replaces`` (RFC 9773 5)."""

    status: Status
    expires: datetime.datetime
    identifiers: Sequence[Identifier]
    authorizations: Sequence[str]
    finalize: str
    certificate: str | None = None
    not_before: datetime.datetime | None = None
    not_after: datetime.datetime | None = None
    error: AcmeProblem | None = None
    replaces: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "status": self.status.value,
            "expires": timestamp(self.expires),
            "identifiers": [identifier.to_json() for identifier in self.identifiers],
            "authorizations": list(self.authorizations),
            "finalize": self.finalize,
        }
        if self.not_before is not None:
            document["notBefore"] = timestamp(self.not_before)
        if self.not_after is not None:
            document["notAfter"] = timestamp(self.not_after)
        if self.certificate is not None:
            document["certificate"] = self.certificate
        if self.error is not None:
            document["error"] = self.error.to_json()
        if self.replaces is not None:
            document["replaces"] = self.replaces
        return document
