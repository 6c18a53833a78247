"""The ACME tables (caucase.storage.acme): restorable from a dump, shared by every
caucased on the database (the nonce secret, used nonces), purged of what is spent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from caucase import exceptions
from caucase.acme.nonces import SignedNonces
from caucase.storage import Database, restore_database
from caucase.storage.acme import AcmeStorage
from caucase.storage.acme_schema import ACME_TABLES, NewAuthz
from caucase.storage.postgresql import PostgresDatabase
from caucase.storage.restore import RESTORABLE_TABLES
from tests.conftest import FakeClock
from tests.test_postgresql import race

NOW = 1_800_000_000


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with Database(str(tmp_path / "caucase.sqlite")) as owner:
        yield owner


def fill(storage: AcmeStorage) -> None:
    storage.add_eab("kid", b"k" * 32, ["*.svc.test"], "CN=admin", NOW, limit=10)
    account, _ = storage.add_account("thumb", {"kty": "EC"}, ["mailto:a@b"], "kid", NOW, 10)
    authz = NewAuthz("dns", "a.svc.test", "pending", [("dns-01", "token")])
    storage.add_order(account.id, [("dns", "a.svc.test")], [authz], now=NOW, expires=NOW + 60,
                      authz_expires=NOW + 60, replaces=None)  # fmt: skip
    storage.use_nonce("nonce", NOW + 60, NOW, purge=False)
    storage.secret("nonce-hmac", b"s" * 32)


def test_a_dump_with_acme_state_restores(database: Database, tmp_path: Path) -> None:
    assert set(ACME_TABLES) <= RESTORABLE_TABLES
    fill(AcmeStorage(database))
    target = tmp_path / "restored.sqlite"

    restore_database(str(target), database.dump())

    with Database(str(target)) as restored:
        storage = AcmeStorage(restored)
        (credential,) = storage.list_eab()
        assert (credential.kid, credential.scope, credential.account_id is not None) == (
            "kid", ["*.svc.test"], True,
        )  # fmt: skip
        assert storage.secret("nonce-hmac", b"other") == b"s" * 32
        assert not storage.use_nonce("nonce", NOW + 60, NOW, purge=False)


def test_caucased_nodes_on_one_database_share_their_nonces(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Each node issues nonces the other accepts, once."""
    path = str(tmp_path / "caucase.sqlite")
    with Database(path) as first_owner, Database(path) as second_owner:
        first, second = AcmeStorage(first_owner), AcmeStorage(second_owner)
        secret = first.secret("nonce-hmac", b"a" * 32)
        assert second.secret("nonce-hmac", b"b" * 32) == secret
        nodes = [SignedNonces(secret, storage, clock) for storage in (first, second)]

        nonce = nodes[0].issue()

        assert nodes[1].consume(nonce)
        assert not nodes[0].consume(nonce)


def test_used_nonces_are_purged_once_expired(database: Database) -> None:
    storage = AcmeStorage(database)
    assert storage.use_nonce("old", NOW + 10, NOW, purge=False)
    assert storage.use_nonce("new", NOW + 100, NOW + 20, purge=True)
    assert storage.use_nonce("old", NOW + 10, NOW + 21, purge=False)
    assert not storage.use_nonce("new", NOW + 100, NOW + 21, purge=False)


def test_credentials_are_capped_and_revoking_one_revokes_its_account(database: Database) -> None:
    storage = AcmeStorage(database)
    fill(storage)
    storage.add_eab("unused", b"u" * 32, ["*"], "CN=admin", NOW, limit=2)
    with pytest.raises(exceptions.NoStorage):
        storage.add_eab("third", b"t" * 32, ["*"], "CN=admin", NOW, limit=2)

    storage.revoke_eab("kid", NOW + 1)
    storage.revoke_eab("unused", NOW + 1)

    account = storage.account_by_thumbprint("thumb")
    assert account is not None and account.status == "revoked"
    assert [(row.kid, row.status) for row in storage.list_eab()] == [("kid", "revoked")]
    with pytest.raises(exceptions.NotFound):
        storage.revoke_eab("unused", NOW + 2)
    with pytest.raises(exceptions.Found):
        storage.add_account("other", {}, [], "kid", NOW, 10)


def test_spent_orders_are_purged_with_their_authorizations(database: Database) -> None:
    storage = AcmeStorage(database)
    fill(storage)
    account = storage.account_by_thumbprint("thumb")
    assert account is not None
    (order_id,) = storage.orders_of_account(account.id, 10)

    storage.purge(NOW + 30)
    assert storage.order(order_id) is not None
    storage.purge(NOW + 61)

    assert storage.order(order_id) is None and storage.authorizations(order_id) == []


def test_nodes_racing_for_one_credential_bind_one_account(postgres_url: str) -> None:
    """Several caucased on one PostgreSQL database: of the accounts created at once with
    one credential, one binds it and the others are told it is taken (no constraint error);
    of the nodes registering one key at once, one creates the account, all return it."""
    engines = [PostgresDatabase(postgres_url) for _ in range(3)]
    try:
        storages = [AcmeStorage(engine) for engine in engines]
        storages[0].add_eab("kid", b"k" * 32, ["*"], "CN=admin", NOW, limit=10)

        def bind(index: int) -> bool:
            storage = storages[index % len(storages)]
            _, created = storage.add_account(f"key{index}", {}, [], "kid", NOW, 10)
            return created

        def register(index: int) -> tuple[int, bool]:
            account, created = storages[index % len(storages)].add_account(
                "same", {}, [], None, NOW, 10
            )
            return account.id, created

        bound = race(12, bind)
        registered = race(12, register)
    finally:
        for engine in engines:
            engine.close()

    assert bound.count(True) == 1
    assert all(isinstance(result, exceptions.Found) for result in bound if result is not True)
    assert {result for result in registered if isinstance(result, BaseException)} == set()
    assert len({account_id for account_id, _ in registered}) == 1  # type: ignore[misc]
    assert [created for _, created in registered].count(True) == 1  # type: ignore[misc]
