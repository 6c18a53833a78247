"""ACME accounts (RFC 8555 7.3): creation under External Account Binding, lookup by kid,
update, deactivation and key rollover, over caucase.storage.acme.

An account is bound to at most one EAB credential and a credential to at most one account
(the database's unique key decides between two racing registrations); the credential's
scope is what the account's orders get pre-authorized. Without ``--acme-open`` every new
account needs a credential; with it, accounts without one are capped in number.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from josepy.jwk import JWK

from caucase import exceptions
from caucase.acme import eab, keys, messages
from caucase.acme.identifiers import InvalidIdentifier, Scope
from caucase.acme.jws import VerifiedRequest
from caucase.acme.nonces import NonceSource
from caucase.acme.problems import (
    AccountDoesNotExist,
    BadNonce,
    Conflict,
    ExternalAccountRequired,
    Malformed,
    RateLimited,
    Unauthorized,
)
from caucase.acme.resources import Account, Status, Urls
from caucase.clock import Clock, to_timestamp
from caucase.storage.acme import AcmeStorage
from caucase.storage.acme_schema import DEACTIVATED, VALID, AccountRow

DEFAULT_OPEN_ACCOUNTS = 1000
KEY_CACHE_SIZE = 1024


@dataclass
class Signed:
    """A verified request and, when it was signed by ``kid``, the valid account it names.

    Its nonce is spent already, or (for the handlers that change something) spent by
    ``spend`` in the transaction of the change: one commit instead of two."""

    request: VerifiedRequest
    account: AccountRow | None
    nonces: NonceSource
    spent: bool = True

    @property
    def signer(self) -> AccountRow:
        if self.account is None:
            raise Malformed("this request must be signed by an account ('kid')")
        return self.account

    def spend(self) -> None:
        """badNonce if another request spent the nonce first (then nothing may change)."""
        if not self.spent:
            if not self.nonces.consume(self.request.nonce):
                raise BadNonce("unknown, expired or already used nonce")
            self.spent = True


def account_document(account: AccountRow, urls: Urls) -> Account:
    return Account(Status(account.status), urls.account_orders(account.id), account.contact)


class Accounts:
    def __init__(
        self,
        storage: AcmeStorage,
        clock: Clock,
        *,
        open_accounts: bool,
        max_open_accounts: int = DEFAULT_OPEN_ACCOUNTS,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self.external_account_required = not open_accounts
        self._max_open_accounts = max_open_accounts
        # Parsing and checking a JWK costs more than the rest of a request's lookup.
        self._keys: dict[tuple[int, str], JWK] = {}
        self._keys_lock = threading.Lock()

    def key_of(self, account: AccountRow) -> JWK:
        """The account's public JWK, as stored when it registered or last changed keys."""
        cache_key = (account.id, account.thumbprint)
        with self._keys_lock:
            jwk = self._keys.get(cache_key)
        if jwk is None:
            jwk = keys.load_account_key(account.jwk)
            with self._keys_lock:
                if len(self._keys) >= KEY_CACHE_SIZE:
                    self._keys.clear()
                self._keys[cache_key] = jwk
        return jwk

    def valid_account(self, kid: str, urls: Urls) -> AccountRow:
        """The account a ``kid`` names, if it may still sign requests (7.3.6)."""
        account_id = urls.account_id(kid)
        account = None if account_id is None else self._storage.account(account_id)
        if account is None:
            raise AccountDoesNotExist(f"no account {kid}")
        if account.status != VALID:
            raise Unauthorized(f"the account is {account.status}")
        return account

    def scope_of(self, account: AccountRow) -> Scope | None:
        """What the account's credential pre-authorizes; None for an open account."""
        if account.eab_kid is None:
            return None
        credential = self._storage.eab(account.eab_kid)
        if credential is None:
            return Scope(())
        try:
            return Scope.parse(credential.scope)
        except InvalidIdentifier:
            return Scope(())

    def new_account(self, request: VerifiedRequest) -> tuple[AccountRow, bool]:
        """7.3 and 7.3.1: (the account of the request's key, whether it was created)."""
        payload = messages.parse_new_account(request.payload)
        thumbprint = keys.thumbprint(request.jwk)
        existing = self._storage.account_by_thumbprint(thumbprint)
        if existing is not None:
            if existing.status != VALID:
                raise Unauthorized(f"the account of this key is {existing.status}")
            return existing, False
        if payload.only_return_existing:
            raise AccountDoesNotExist("no account holds this key")
        kid = self._bound_credential(request, payload)
        try:
            return self._storage.add_account(
                thumbprint, request.jwk.public_key().to_json(), payload.contact, kid,
                to_timestamp(self._clock()), self._max_open_accounts,
            )  # fmt: skip
        except exceptions.Found as error:
            raise Unauthorized(str(error)) from None
        except exceptions.NoStorage as error:
            raise RateLimited(str(error), retry_after=86400) from None

    def _bound_credential(
        self, request: VerifiedRequest, payload: messages.NewAccount
    ) -> str | None:
        """The kid of the credential the request binds (7.3.4), MAC verified; None for an
        open account, when allowed."""
        if payload.external_account_binding is None:
            if self.external_account_required:
                raise ExternalAccountRequired("new accounts need an external account binding")
            return None
        binding = eab.parse_binding(
            payload.external_account_binding, url=request.url, account_key=request.jwk
        )
        credential = self._storage.eab(binding.kid)
        if credential is None or credential.status != VALID:
            raise Unauthorized("unknown or revoked external account binding key id")
        binding.verify(credential.hmac_key)
        if credential.account_id is not None:
            raise Unauthorized("this external account binding is bound to an account already")
        return binding.kid

    def update(self, signed: Signed, account_id: int) -> AccountRow:
        """7.3.2 and 7.3.6: POST-as-GET, new contacts, or deactivation, by the account."""
        account = signed.signer
        if account.id != account_id:
            raise Unauthorized("an account can only read or change itself")
        update = messages.parse_account_update(signed.request.payload)
        if update.contact is None and not update.deactivate:
            return account
        self._storage.update_account(
            account.id, contact=update.contact, status=DEACTIVATED if update.deactivate else None
        )
        updated = self._storage.account(account.id)
        assert updated is not None
        return updated

    def change_key(self, signed: Signed, urls: Urls) -> AccountRow:
        """7.3.5: the account's new key, unless another account holds it (409)."""
        account = signed.signer
        new_key = messages.parse_key_change(signed.request, self.key_of(account))
        holder = self._storage.change_key(
            account.id, keys.thumbprint(new_key), new_key.public_key().to_json()
        )
        if holder is not None:
            raise Conflict("another account holds the new key", urls.account(holder))
        changed = self._storage.account(account.id)
        assert changed is not None
        return changed
