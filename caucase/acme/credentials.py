"""EAB credentials as CAU users manage them: minting with a scope, listing, revocation.

Minting is the approval: the scope's patterns are the identifiers the account bound to the
credential gets certificates for without any challenge. Revoking a credential revokes
that account too (its orders are refused from then on; its certificates stay valid until
revoked one by one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from caucase import events
from caucase.acme.eab import Credential
from caucase.acme.identifiers import Scope
from caucase.acme.resources import timestamp
from caucase.clock import Clock, from_timestamp, to_timestamp
from caucase.events import NULL_OBSERVER, Observer
from caucase.storage.acme import AcmeStorage
from caucase.storage.acme_schema import EabRow

# Far above what an operator mints by hand; a bound on what the table may hold.
DEFAULT_MAX_CREDENTIALS = 10_000
MAX_PATTERNS = 100


@dataclass(frozen=True)
class Credentials:
    storage: AcmeStorage
    clock: Clock
    max_credentials: int = DEFAULT_MAX_CREDENTIALS
    observer: Observer = NULL_OBSERVER

    def mint(self, patterns: list[str], minted_by: str) -> Credential:
        """A new credential for `patterns`; InvalidIdentifier for a bad pattern, NoStorage
        past the number of valid credentials allowed."""
        if len(patterns) > MAX_PATTERNS:
            raise ValueError(f"a scope has at most {MAX_PATTERNS} patterns")
        scope = Scope.parse(patterns)
        credential = Credential.generate()
        self.observer.ready()
        self.storage.add_eab(
            credential.kid, credential.hmac_key, scope.to_json(), minted_by,
            to_timestamp(self.clock()), self.max_credentials,
        )  # fmt: skip
        self.observer.notify(events.eab_minted(credential.kid, patterns))
        return credential

    def listing(self) -> list[dict[str, Any]]:
        """Every credential, oldest first, without its key."""
        return [_listed(row) for row in self.storage.list_eab()]

    def revoke(self, kid: str) -> None:
        """NotFound for an unknown kid."""
        self.observer.ready()
        self.storage.revoke_eab(kid, to_timestamp(self.clock()))
        self.observer.notify(events.eab_revoked(kid))


def _listed(row: EabRow) -> dict[str, Any]:
    return {
        "kid": row.kid,
        "scope": row.scope,
        "minted_by": row.minted_by,
        "minted_at": timestamp(from_timestamp(row.minted_at)),
        "account": None if row.account_id is None else str(row.account_id),
        "status": row.status,
    }
