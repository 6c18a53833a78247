"""The ACME tables of the CAS (caucase.storage.acme): their columns, and the rows
read from them.

Named ``cas_acme_*`` so that the reference ignores them; created with the database's
other tables, carried by dumps, restored through storage.restore's allow-list.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ACME_TABLES: dict[str, tuple[str, ...]] = {
    "cas_acme_secret": ("name TEXT PRIMARY KEY", "value BLOB NOT NULL"),
    "cas_acme_nonce": ("nonce TEXT PRIMARY KEY", "expires INTEGER NOT NULL"),
    "cas_acme_eab": (
        "kid TEXT PRIMARY KEY",
        "hmac_key BLOB NOT NULL",
        "scope TEXT NOT NULL",
        "minted_by TEXT NOT NULL",
        "minted_at INTEGER NOT NULL",
        "status TEXT NOT NULL",
        "revoked_at INTEGER",
    ),
    "cas_acme_account": (
        "id INTEGER PRIMARY KEY",
        "thumbprint TEXT NOT NULL UNIQUE",
        "jwk TEXT NOT NULL",
        "status TEXT NOT NULL",
        "contact TEXT NOT NULL",
        "eab_kid TEXT UNIQUE",
        "created_at INTEGER NOT NULL",
    ),
    "cas_acme_order": (
        "id INTEGER PRIMARY KEY",
        "account_id INTEGER NOT NULL",
        "status TEXT NOT NULL",
        "identifiers TEXT NOT NULL",
        "created_at INTEGER NOT NULL",
        "expires INTEGER NOT NULL",
        "replaces TEXT",
        "crt_id INTEGER",
        "serial TEXT",
        "not_after INTEGER",
        "crt BLOB",
    ),
    "cas_acme_authz": (
        "id INTEGER PRIMARY KEY",
        "order_id INTEGER NOT NULL",
        "identifier_type TEXT NOT NULL",
        "identifier_value TEXT NOT NULL",
        "status TEXT NOT NULL",
        "expires INTEGER NOT NULL",
    ),
    "cas_acme_challenge": (
        "id INTEGER PRIMARY KEY",
        "authz_id INTEGER NOT NULL",
        "type TEXT NOT NULL",
        "token TEXT NOT NULL",
        "status TEXT NOT NULL",
        "updated INTEGER NOT NULL",
        "error TEXT",
    ),
}
_INDEXES = (
    ("cas_acme_nonce", "expires"),
    ("cas_acme_order", "account_id, created_at"),
    ("cas_acme_order", "serial"),
    ("cas_acme_order", "replaces"),
    ("cas_acme_order", "expires"),
    ("cas_acme_authz", "order_id"),
    ("cas_acme_challenge", "authz_id"),
)
# Stored statuses; what a client sees is derived from them (caucase.acme.orders).
VALID, PENDING, INVALID, PROCESSING = "valid", "pending", "invalid", "processing"
DEACTIVATED, REVOKED = "deactivated", "revoked"
ORDER_COLUMNS = (
    "id, account_id, status, identifiers, created_at, expires, replaces, crt_id, serial"
)
AUTHZ_COLUMNS = "id, order_id, identifier_type, identifier_value, status, expires"
CHALLENGE_COLUMNS = "id, authz_id, type, token, status, updated, error"
ACCOUNT_COLUMNS = "id, thumbprint, jwk, status, contact, eab_kid, created_at"


def schema_statements() -> list[str]:
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"
        for table, columns in ACME_TABLES.items()
    ]
    for table, columns in _INDEXES:
        name = f"{table}_{columns.split(',')[0]}"
        statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
    return statements


@dataclass(frozen=True)
class EabRow:
    kid: str
    hmac_key: bytes
    scope: list[str]
    minted_by: str
    minted_at: int
    status: str
    revoked_at: int | None
    account_id: int | None


@dataclass(frozen=True)
class AccountRow:
    id: int
    thumbprint: str
    jwk: dict[str, Any]
    status: str
    contact: list[str]
    eab_kid: str | None
    created_at: int


@dataclass(frozen=True)
class OrderRow:
    id: int
    account_id: int
    status: str
    identifiers: list[tuple[str, str]]
    created_at: int
    expires: int
    replaces: str | None
    crt_id: int | None
    serial: int | None


@dataclass(frozen=True)
class AuthzRow:
    id: int
    order_id: int
    identifier_type: str
    identifier_value: str
    status: str
    expires: int


@dataclass(frozen=True)
class ChallengeRow:
    id: int
    authz_id: int
    type: str
    token: str
    status: str
    updated: int
    error: dict[str, Any] | None


@dataclass(frozen=True)
class NewAuthz:
    """An authorization to create with its order, and the challenge types it offers."""

    identifier_type: str
    identifier_value: str
    status: str
    challenges: Sequence[tuple[str, str]]  # (type, token)


def account_row(row: tuple[Any, ...]) -> AccountRow:
    id_, thumbprint, jwk, status, contact, eab_kid, created_at = row
    return AccountRow(id_, thumbprint, json.loads(jwk), status, json.loads(contact), eab_kid,
                      created_at)  # fmt: skip


def order_row(row: tuple[Any, ...]) -> OrderRow:
    id_, account_id, status, identifiers, created_at, expires, replaces, crt_id, serial = row
    pairs = [(item["type"], item["value"]) for item in json.loads(identifiers)]
    return OrderRow(id_, account_id, status, pairs, created_at, expires, replaces, crt_id,
                    None if serial is None else int(serial))  # fmt: skip


def challenge_row(row: tuple[Any, ...]) -> ChallengeRow:
    id_, authz_id, kind, token, status, updated, error = row
    return ChallengeRow(id_, authz_id, kind, token, status, updated,
                        None if error is None else json.loads(error))  # fmt: skip


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
