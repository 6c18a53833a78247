"""ACME state of the CAS: EAB credentials, accounts, orders, authorizations, challenges,
used nonces and the nonce secret, in tables of their own in the database file.

The reference ignores these tables (``cas_acme_*``); its dumps carry them. Rows only: the
rules (scopes, limits, the state machine) are caucase.acme's. Times are Unix seconds; ids
of accounts, orders, authorizations and challenges are random 63-bit integers, as CSR ids.
Certificates themselves live in the CAS crt table; an order points at its row.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from caucase import exceptions
from caucase.storage.acme_schema import (
    ACCOUNT_COLUMNS,
    AUTHZ_COLUMNS,
    CHALLENGE_COLUMNS,
    DEACTIVATED,
    INVALID,
    ORDER_COLUMNS,
    PENDING,
    PROCESSING,
    REVOKED,
    VALID,
    AccountRow,
    AuthzRow,
    ChallengeRow,
    EabRow,
    NewAuthz,
    OrderRow,
    account_row,
    challenge_row,
    dumps,
    order_row,
    schema_statements,
)
from caucase.storage.engine import Connection, Engine

# Held by the writes that check before they write (a credential still free, a key not
# held by another account, the count of valid credentials), so that several caucased on
# one PostgreSQL database cannot both pass the check. SQLite has one writer anyway.
ACCOUNTS_LOCK = "caucase:acme:accounts"


class AcmeStorage:
    """The ACME tables of one database, through its owner's connections."""

    def __init__(self, database: Engine) -> None:
        self._database = database
        with database.writing() as tx:
            for statement in schema_statements():
                tx.execute(statement)

    def _one(self, query: str, parameters: Sequence[object] = ()) -> tuple[Any, ...] | None:
        with self._database.reading() as connection:
            row: tuple[Any, ...] | None = connection.execute(query, tuple(parameters)).fetchone()
        return row

    def _all(self, query: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._database.reading() as connection:
            rows: list[tuple[Any, ...]] = connection.execute(query, tuple(parameters)).fetchall()
        return rows

    def transaction(self) -> AbstractContextManager[Connection]:
        """One write transaction, which every write of the block joins (the CA storage's
        too: they share the database owner)."""
        return self._database.writing()

    @staticmethod
    def _insert(tx: Connection, table: str, columns: str, values: Sequence[object]) -> int:
        """Insert under a fresh random id, drawn again on an id collision only: a clash
        on another unique column raises (the caller checked them under ACCOUNTS_LOCK)."""
        marks = ", ".join("?" * (len(values) + 1))
        while True:
            row_id = secrets.randbits(63)
            cursor = tx.execute(
                f"INSERT INTO {table} (id, {columns}) VALUES ({marks}) "
                "ON CONFLICT (id) DO NOTHING",
                (row_id, *values),
            )
            if cursor.rowcount == 1:
                return row_id

    # Secrets and nonces
    def secret(self, name: str, candidate: bytes) -> bytes:
        """The secret stored under `name`; `candidate` becomes it when there is none yet
        (the first of several nodes wins, and all then share it)."""
        with self._database.writing() as tx:
            tx.execute(
                "INSERT INTO cas_acme_secret (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, candidate),
            )
            (value,) = tx.execute(
                "SELECT value FROM cas_acme_secret WHERE name = ?", (name,)
            ).fetchone()
        return bytes(value)

    def use_nonce(self, nonce: str, expires: int, now: int, purge: bool) -> bool:
        """Record a nonce as used; False when it was already (a replay). With `purge`,
        forget the used nonces that expired (their MAC no longer verifies anyway)."""
        with self._database.writing() as tx:
            if purge:
                tx.execute("DELETE FROM cas_acme_nonce WHERE expires < ?", (now,))
            cursor = tx.execute(
                "INSERT INTO cas_acme_nonce (nonce, expires) VALUES (?, ?) "
                "ON CONFLICT (nonce) DO NOTHING",
                (nonce, expires),
            )
            return cursor.rowcount == 1

    # EAB credentials
    def add_eab(
        self, kid: str, hmac_key: bytes, scope: list[str], minted_by: str, now: int, limit: int
    ) -> None:
        """NoStorage once `limit` credentials are valid."""
        with self._database.writing(lock=ACCOUNTS_LOCK) as tx:
            (count,) = tx.execute(
                "SELECT COUNT(*) FROM cas_acme_eab WHERE status = ?", (VALID,)
            ).fetchone()
            if count >= limit:
                raise exceptions.NoStorage(f"{limit} ACME credentials are valid already")
            tx.execute(
                "INSERT INTO cas_acme_eab (kid, hmac_key, scope, minted_by, minted_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (kid, hmac_key, dumps(scope), minted_by, now, VALID),
            )

    def _eab_rows(self, where: str, parameters: Sequence[object]) -> list[EabRow]:
        rows = self._all(
            "SELECT e.kid, e.hmac_key, e.scope, e.minted_by, e.minted_at, e.status, "
            "e.revoked_at, a.id FROM cas_acme_eab e "
            f"LEFT JOIN cas_acme_account a ON a.eab_kid = e.kid {where} "
            "ORDER BY e.minted_at, e.kid",
            parameters,
        )
        return [
            EabRow(kid, bytes(key), json.loads(scope), by, at, status, revoked, account)
            for kid, key, scope, by, at, status, revoked, account in rows
        ]

    def eab(self, kid: str) -> EabRow | None:
        rows = self._eab_rows("WHERE e.kid = ?", (kid,))
        return rows[0] if rows else None

    def list_eab(self) -> list[EabRow]:
        return self._eab_rows("", ())

    def revoke_eab(self, kid: str, now: int) -> None:
        """Revoke a credential and the account bound to it; NotFound for an unknown kid.
        A credential no account used is forgotten: nothing refers to it."""
        with self._database.writing(lock=ACCOUNTS_LOCK) as tx:
            if tx.execute("SELECT 1 FROM cas_acme_eab WHERE kid = ?", (kid,)).fetchone() is None:
                raise exceptions.NotFound(f"No ACME credential {kid!r}")
            bound = tx.execute(
                "UPDATE cas_acme_account SET status = ? WHERE eab_kid = ? AND status <> ?",
                (REVOKED, kid, DEACTIVATED),
            ).rowcount
            used = tx.execute("SELECT 1 FROM cas_acme_account WHERE eab_kid = ?", (kid,))
            if bound == 0 and used.fetchone() is None:
                tx.execute("DELETE FROM cas_acme_eab WHERE kid = ?", (kid,))
                return
            tx.execute(
                "UPDATE cas_acme_eab SET status = ?, revoked_at = ? WHERE kid = ? AND status = ?",
                (REVOKED, now, kid, VALID),
            )

    # Accounts
    def account(self, account_id: int) -> AccountRow | None:
        row = self._one(
            f"SELECT {ACCOUNT_COLUMNS} FROM cas_acme_account WHERE id = ?", (account_id,)
        )
        return None if row is None else account_row(row)

    def account_by_thumbprint(self, thumbprint: str) -> AccountRow | None:
        row = self._one(
            f"SELECT {ACCOUNT_COLUMNS} FROM cas_acme_account WHERE thumbprint = ?", (thumbprint,)
        )
        return None if row is None else account_row(row)

    def add_account(
        self,
        thumbprint: str,
        jwk: dict[str, Any],
        contact: Sequence[str],
        eab_kid: str | None,
        now: int,
        open_limit: int,
    ) -> tuple[AccountRow, bool]:
        """The account of this key: new (True), or the one holding the key already (False).

        Found when the credential `eab_kid` is revoked or bound to another account;
        NoStorage when an account without credential would pass `open_limit` of them."""
        with self._database.writing(lock=ACCOUNTS_LOCK) as tx:
            existing = tx.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM cas_acme_account WHERE thumbprint = ?",
                (thumbprint,),
            ).fetchone()
            if existing is not None:
                return account_row(existing), False
            if eab_kid is None:
                (count,) = tx.execute(
                    "SELECT COUNT(*) FROM cas_acme_account WHERE eab_kid IS NULL"
                ).fetchone()
                if count >= open_limit:
                    raise exceptions.NoStorage(f"{open_limit} open ACME accounts exist already")
            else:
                self._check_credential_free(tx, eab_kid)
            values = (thumbprint, dumps(jwk), VALID, dumps(list(contact)), eab_kid, now)
            account_id = self._insert(
                tx, "cas_acme_account",
                "thumbprint, jwk, status, contact, eab_kid, created_at", values,
            )  # fmt: skip
        return AccountRow(account_id, thumbprint, jwk, VALID, list(contact), eab_kid, now), True

    @staticmethod
    def _check_credential_free(tx: Connection, kid: str) -> None:
        row = tx.execute("SELECT status FROM cas_acme_eab WHERE kid = ?", (kid,)).fetchone()
        if row is None or row[0] != VALID:
            raise exceptions.Found(f"ACME credential {kid!r} is revoked")
        used = tx.execute("SELECT 1 FROM cas_acme_account WHERE eab_kid = ?", (kid,)).fetchone()
        if used is not None:
            raise exceptions.Found(f"ACME credential {kid!r} is bound to an account already")

    def update_account(
        self, account_id: int, *, contact: Sequence[str] | None = None, status: str | None = None
    ) -> None:
        """New contacts and/or status of a valid account (nothing changes otherwise)."""
        with self._database.writing() as tx:
            if contact is not None:
                tx.execute(
                    "UPDATE cas_acme_account SET contact = ? WHERE id = ? AND status = ?",
                    (dumps(list(contact)), account_id, VALID),
                )
            if status is not None:
                tx.execute(
                    "UPDATE cas_acme_account SET status = ? WHERE id = ? AND status = ?",
                    (status, account_id, VALID),
                )

    def change_key(self, account_id: int, thumbprint: str, jwk: dict[str, Any]) -> int | None:
        """Give a valid account a new key; the id of the account holding that key already,
        if any (then nothing changes)."""
        with self._database.writing(lock=ACCOUNTS_LOCK) as tx:
            holder = tx.execute(
                "SELECT id FROM cas_acme_account WHERE thumbprint = ?", (thumbprint,)
            ).fetchone()
            if holder is not None:
                return int(holder[0])
            tx.execute(
                "UPDATE cas_acme_account SET thumbprint = ?, jwk = ? WHERE id = ? AND status = ?",
                (thumbprint, dumps(jwk), account_id, VALID),
            )
        return None

    # Orders, authorizations, challenges
    def add_order(
        self,
        account_id: int,
        identifiers: Sequence[tuple[str, str]],
        authorizations: Sequence[NewAuthz],
        *,
        now: int,
        expires: int,
        authz_expires: int,
        replaces: str | None,
    ) -> tuple[OrderRow, list[AuthzRow]]:
        """An order with its authorizations and challenges, in one transaction; the rows
        written (their statuses as given)."""
        documents = [{"type": kind, "value": value} for kind, value in identifiers]
        rows = []
        with self._database.writing() as tx:
            order_id = self._insert(
                tx, "cas_acme_order",
                "account_id, status, identifiers, created_at, expires, replaces",
                (account_id, PENDING, dumps(documents), now, expires, replaces),
            )  # fmt: skip
            for authz in authorizations:
                values = (order_id, authz.identifier_type, authz.identifier_value, authz.status,
                          authz_expires)  # fmt: skip
                authz_id = self._insert(
                    tx, "cas_acme_authz",
                    "order_id, identifier_type, identifier_value, status, expires", values,
                )  # fmt: skip
                rows.append(AuthzRow(authz_id, *values))
                for kind, token in authz.challenges:
                    self._insert(
                        tx, "cas_acme_challenge", "authz_id, type, token, status, updated",
                        (authz_id, kind, token, PENDING, now),
                    )  # fmt: skip
        order = OrderRow(order_id, account_id, PENDING, list(identifiers), now, expires,
                         replaces, None, None)  # fmt: skip
        return order, sorted(rows, key=lambda row: row.identifier_value)

    def order_counts(self, account_id: int, now: int, since: int) -> tuple[int, int]:
        """(orders of the account not finalized nor expired, orders it placed since `since`)."""
        row = self._one(
            "SELECT (SELECT COUNT(*) FROM cas_acme_order WHERE account_id = ? AND status = ? "
            "AND expires > ?), (SELECT COUNT(*) FROM cas_acme_order WHERE account_id = ? "
            "AND created_at > ?)",
            (account_id, PENDING, now, account_id, since),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def order(self, order_id: int) -> OrderRow | None:
        row = self._one(f"SELECT {ORDER_COLUMNS} FROM cas_acme_order WHERE id = ?", (order_id,))
        return None if row is None else order_row(row)

    def order_of_serial(self, serial: int) -> OrderRow | None:
        row = self._one(
            f"SELECT {ORDER_COLUMNS} FROM cas_acme_order WHERE serial = ?", (str(serial),)
        )
        return None if row is None else order_row(row)

    def is_replaced(self, cert_id: str, now: int) -> bool:
        """Whether an order replacing `cert_id` is issued, or pending and not expired."""
        row = self._one(
            "SELECT 1 FROM cas_acme_order WHERE replaces = ? "
            "AND (status = ? OR (status = ? AND expires > ?))",
            (cert_id, VALID, PENDING, now),
        )
        return row is not None

    def orders_of_account(self, account_id: int, limit: int) -> list[int]:
        """Ids of the account's newest orders, newest first."""
        rows = self._all(
            "SELECT id FROM cas_acme_order WHERE account_id = ? "
            "ORDER BY created_at DESC, id LIMIT ?",
            (account_id, limit),
        )
        return [int(order_id) for (order_id,) in rows]

    def authorizations(self, order_id: int) -> list[AuthzRow]:
        rows = self._all(
            f"SELECT {AUTHZ_COLUMNS} FROM cas_acme_authz WHERE order_id = ? "
            "ORDER BY identifier_value",
            (order_id,),
        )
        return [AuthzRow(*row) for row in rows]

    def authorization(self, authz_id: int) -> AuthzRow | None:
        row = self._one(f"SELECT {AUTHZ_COLUMNS} FROM cas_acme_authz WHERE id = ?", (authz_id,))
        return None if row is None else AuthzRow(*row)

    def authorization_owner(self, authz_id: int) -> tuple[AuthzRow, int | None] | None:
        """An authorization and the account of its order (None if the order is gone), in
        one query: every request for an authorization checks whose it is."""
        columns = ", ".join(f"z.{column}" for column in AUTHZ_COLUMNS.split(", "))
        row = self._one(
            f"SELECT {columns}, o.account_id FROM cas_acme_authz z "
            "LEFT JOIN cas_acme_order o ON o.id = z.order_id WHERE z.id = ?",
            (authz_id,),
        )
        return None if row is None else (AuthzRow(*row[:-1]), row[-1])

    def challenges(self, authz_ids: Sequence[int]) -> list[ChallengeRow]:
        if not authz_ids:
            return []
        marks = ", ".join("?" * len(authz_ids))
        rows = self._all(
            f"SELECT {CHALLENGE_COLUMNS} FROM cas_acme_challenge WHERE authz_id IN ({marks}) "
            "ORDER BY type",
            tuple(authz_ids),
        )
        return [challenge_row(row) for row in rows]

    def challenge(self, challenge_id: int) -> ChallengeRow | None:
        row = self._one(
            f"SELECT {CHALLENGE_COLUMNS} FROM cas_acme_challenge WHERE id = ?", (challenge_id,)
        )
        return None if row is None else challenge_row(row)

    def start_challenge(self, challenge_id: int, now: int, stale_before: int) -> bool:
        """Mark a pending challenge (or one left processing since before `stale_before`)
        as processing, if its authorization is still pending; whether it was."""
        with self._database.writing() as tx:
            cursor = tx.execute(
                "UPDATE cas_acme_challenge SET status = ?, updated = ? WHERE id = ? "
                "AND (status = ? OR (status = ? AND updated < ?)) AND authz_id IN "
                "(SELECT id FROM cas_acme_authz WHERE status = ? AND expires > ?)",
                (PROCESSING, now, challenge_id, PENDING, PROCESSING, stale_before, PENDING, now),
            )
            return cursor.rowcount == 1

    def release_challenge(self, challenge_id: int) -> None:
        """Back to pending: its validation could not be queued."""
        with self._database.writing() as tx:
            tx.execute(
                "UPDATE cas_acme_challenge SET status = ? WHERE id = ? AND status = ?",
                (PENDING, challenge_id, PROCESSING),
            )

    def finish_challenge(
        self, challenge_id: int, authz_id: int, now: int, error: dict[str, Any] | None
    ) -> None:
        """The outcome of a validation: the challenge and its authorization become valid,
        or invalid with `error` (8.2: one failed challenge fails the authorization)."""
        status = VALID if error is None else INVALID
        with self._database.writing() as tx:
            tx.execute(
                "UPDATE cas_acme_challenge SET status = ?, updated = ?, error = ? "
                "WHERE id = ? AND status = ?",
                (status, now, None if error is None else dumps(error), challenge_id,
                 PROCESSING),
            )  # fmt: skip
            tx.execute(
                "UPDATE cas_acme_authz SET status = ? WHERE id = ? AND status = ?",
                (status, authz_id, PENDING),
            )

    def deactivate_authorization(self, authz_id: int) -> None:
        with self._database.writing() as tx:
            tx.execute(
                "UPDATE cas_acme_authz SET status = ? WHERE id = ? AND status IN (?, ?)",
                (DEACTIVATED, authz_id, PENDING, VALID),
            )

    def order_issued(
        self, order_id: int, crt_id: int, serial: int, not_after: int, crt_pem: bytes
    ) -> bool:
        """Attach the certificate to a pending order (in the caller's transaction, which
        stored it in the CAS crt table too); False when another finalize got there first.
        The order keeps its own copy for download: the crt row is purged on its own terms."""
        with self._database.writing() as tx:
            cursor = tx.execute(
                "UPDATE cas_acme_order SET status = ?, crt_id = ?, serial = ?, not_after = ?, "
                "crt = ? WHERE id = ? AND status = ?",
                (VALID, crt_id, str(serial), not_after, crt_pem, order_id, PENDING),
            )
            return cursor.rowcount == 1

    def certificate(self, order_id: int) -> tuple[int, bytes | None] | None:
        """The account of an order and its certificate PEM (None until it is valid), in
        one query: a download checks whose order it is."""
        row = self._one("SELECT account_id, crt FROM cas_acme_order WHERE id = ?", (order_id,))
        if row is None:
            return None
        return int(row[0]), None if row[1] is None else bytes(row[1])

    def purge(self, now: int) -> None:
        """Forget orders that can no longer be used: never finalized and expired, or whose
        certificate expired; with their authorizations and challenges."""
        done = (
            "SELECT id FROM cas_acme_order WHERE (status <> ? AND expires < ?) "
            "OR (status = ? AND not_after < ?)"
        )
        parameters = (VALID, now, VALID, now)
        authz = f"SELECT id FROM cas_acme_authz WHERE order_id IN ({done})"
        with self._database.writing() as tx:
            tx.execute(f"DELETE FROM cas_acme_challenge WHERE authz_id IN ({authz})", parameters)
            tx.execute(f"DELETE FROM cas_acme_authz WHERE order_id IN ({done})", parameters)
            tx.execute(f"DELETE FROM cas_acme_order WHERE id IN ({done})", parameters)
