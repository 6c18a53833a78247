"""The ACME service of one caucased: its storage, nonces, accounts, orders and issuance,
and the settings of ``--acme-challenge``/``--acme-open`` (caucase.cli.server_options).

Nothing here knows HTTP: caucase.http.acme reads requests, calls ``verify`` and the parts,
and renders what they return or raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from josepy.jwk import JWK

from caucase.acme.accounts import DEFAULT_OPEN_ACCOUNTS, Accounts, Signed
from caucase.acme.challenges import Validators
from caucase.acme.credentials import DEFAULT_MAX_CREDENTIALS, Credentials
from caucase.acme.issuance import Issuance
from caucase.acme.jws import KeySource, verify_request
from caucase.acme.nonces import SignedNonces, new_secret
from caucase.acme.ordering import Orders
from caucase.acme.orders import Limits
from caucase.acme.resources import Directory, Urls
from caucase.acme.validation import DEFAULT_WORKERS
from caucase.ca import CertificateAuthority
from caucase.clock import Clock, utcnow
from caucase.events import NULL_OBSERVER, Observer
from caucase.storage.acme import AcmeStorage
from caucase.storage.acme_schema import AccountRow
from caucase.storage.engine import Engine

NONCE_SECRET = "nonce-hmac"


@dataclass(frozen=True)
class AcmeSettings:
    """What caucased's ACME options decide."""

    validators: Validators | None = None
    """The challenges of ``--acme-challenge``; None: only scopes admit identifiers."""
    open_accounts: bool = False
    """``--acme-open``: accounts without External Account Binding."""
    limits: Limits = field(default_factory=Limits)
    max_credentials: int = DEFAULT_MAX_CREDENTIALS
    max_open_accounts: int = DEFAULT_OPEN_ACCOUNTS
    validation_workers: int = DEFAULT_WORKERS


class AcmeService:
    """Thread-safe: one object serves every request thread of a caucased."""

    def __init__(
        self,
        database: Engine,
        cas: CertificateAuthority,
        settings: AcmeSettings | None = None,
        clock: Clock = utcnow,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        """`observer` hears of EAB credentials minted and revoked, certificates issued."""
        settings = settings or AcmeSettings()
        self.storage = AcmeStorage(database)
        self.nonces = SignedNonces(self.storage.secret(NONCE_SECRET, new_secret()), self.storage,
                                   clock)  # fmt: skip
        self.accounts = Accounts(
            self.storage, clock, open_accounts=settings.open_accounts,
            max_open_accounts=settings.max_open_accounts,
        )  # fmt: skip
        self.credentials = Credentials(
            self.storage, clock, settings.max_credentials, observer=observer
        )
        self.orders = Orders(
            self.storage, cas, clock, settings.limits, settings.validators,
            settings.validation_workers,
        )  # fmt: skip
        self.issuance = Issuance(self.storage, cas, self.orders, observer)

    def directory(self, urls: Urls) -> Directory:
        return Directory(urls, self.accounts.external_account_required)

    def verify(
        self, body: bytes, url: str, source: KeySource, urls: Urls, spend: bool = True
    ) -> Signed:
        """The request, checked (RFC 8555 6.2-6.5), and the account that signed it;
        without `spend`, the handler spends its nonce (Signed.spend)."""
        signers: list[AccountRow] = []

        def lookup(kid: str) -> JWK:
            account = self.accounts.valid_account(kid, urls)
            signers.append(account)
            return self.accounts.key_of(account)

        request = verify_request(
            body, url=url, nonces=self.nonces, source=source, lookup=lookup, spend=spend
        )
        return Signed(request, signers[0] if signers else None, self.nonces, spent=spend)

    def close(self) -> None:
        """Stop the validation workers."""
        self.orders.close()
