"""The inventory of one CA instance: every certificate it issued, for operators to list.

The reference keeps no such record: its crt table holds PEM only, purged a day after
signing. This table (``<prefix>_inventory``, which the reference ignores, like the renewal
index) keeps one row per certificate for good: serial, validity, subject, SANs, key type,
how it was approved, and when it was revoked. A row is written in the transaction storing
its certificate, and marked in the transaction revoking its serial.

Certificates a reference server stored (or a reference backup brought) have no row: each
open indexes the certificates still in the crt table that lack one, as approved "unknown".
The revoked table is joined when listing, so a revocation the reference wrote shows too.

Pages are read in (notAfter, serial) order from one index, which also answers "expiring
within": a page costs the same whatever the size of the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from caucase.crypto import keys
from caucase.exceptions import UnsupportedKey
from caucase.storage.engine import Connection, Engine, Statement
from caucase.storage.rows import as_bytes

SUFFIX = "_inventory"
UNKNOWN = "unknown"
# How a certificate came to be issued: auto-approved, signed by a user, renewed by its key
# holder, issued to an ACME order; UNKNOWN before the inventory existed.
APPROVALS = ("auto", "user", "renewed", "acme", UNKNOWN)
MAX_PAGE = 1000
_CURSOR = re.compile(r"([0-9]{1,18}):([0-9]{1,60})\Z")
_COLUMNS = (
    "i.serial, i.not_before, i.not_after, i.subject, i.sans, i.key_type, i.approval, "
    "COALESCE(i.revoked_at, r.revocation_date)"
)


def table_name(prefix: str) -> str:
    return prefix + SUFFIX


def schema_statements(prefix: str) -> list[str]:
    """The table, and the (notAfter, serial) index every page is read from."""
    table = table_name(prefix)
    return [
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        "  serial TEXT PRIMARY KEY,\n"
        "  not_before INTEGER NOT NULL,\n"
        "  not_after INTEGER NOT NULL,\n"
        "  subject TEXT NOT NULL,\n"
        "  sans TEXT NOT NULL,\n"
        "  key_type TEXT NOT NULL,\n"
        "  approval TEXT NOT NULL,\n"
        "  revoked_at INTEGER\n"
        ")",
        f"CREATE INDEX IF NOT EXISTS {table}_not_after ON {table} (not_after, serial)",
    ]


_SAN_LABELS = {
    "DNSName": "DNS",
    "IPAddress": "IP",
    "RFC822Name": "email",
    "UniformResourceIdentifier": "URI",
}


def _key_type(certificate: x509.Certificate) -> str:
    public_key = certificate.public_key()
    try:
        return str(keys.spec_of(public_key))
    except UnsupportedKey:
        return keys.family(public_key)


def _sans(certificate: x509.Certificate) -> list[str]:
    """The subject alternative names as 'DNS:name', 'IP:address', 'email:...', 'URI:...'
    (directory names and other kinds are left out)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    listed = []
    for name in names:
        label = _SAN_LABELS.get(type(name).__name__)
        if label is not None:
            listed.append(f"{label}:{name.value}")
    return listed


@dataclass(frozen=True)
class InventoryEntry:
    """One certificate as listed; times are Unix seconds."""

    serial: int
    not_before: int
    not_after: int
    subject: str
    sans: tuple[str, ...]
    key_type: str
    approval: str
    revoked_at: int | None = None

    @classmethod
    def of(cls, crt_pem: bytes, approval: str) -> InventoryEntry | None:
        """The entry of a crt row's certificate; None for a PEM that does not parse (a
        corrupt row left by someone else)."""
        try:
            certificate = x509.load_pem_x509_certificate(crt_pem)
        except ValueError:
            return None
        return cls.of_certificate(certificate, approval)

    @classmethod
    def of_certificate(cls, certificate: x509.Certificate, approval: str) -> InventoryEntry | None:
        """InventoryEntry.of, for a certificate parsed already."""
        try:
            subject = certificate.subject.rfc4514_string()
            sans = tuple(_sans(certificate))
            key_type = _key_type(certificate)
        except (ValueError, TypeError):
            return None
        return cls(
            certificate.serial_number,
            int(certificate.not_valid_before_utc.timestamp()),
            int(certificate.not_valid_after_utc.timestamp()),
            subject,
            sans,
            key_type,
            approval,
        )

    def insert_statement(self, prefix: str) -> Statement:
        """What adds the entry (in the transaction storing its certificate); an entry
        already there (the same certificate indexed at open) is kept."""
        return (
            f"INSERT INTO {table_name(prefix)} (serial, not_before, not_after, subject, sans, "
            "key_type, approval) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING",
            (
                str(self.serial),
                self.not_before,
                self.not_after,
                self.subject,
                json.dumps(list(self.sans)),
                self.key_type,
                self.approval,
            ),
        )

    @property
    def cursor(self) -> str:
        """Where the page after this entry starts."""
        return f"{self.not_after}:{self.serial}"


def create_table(database: Engine, tx: Connection, prefix: str, crt_table: str) -> None:
    """Create the table when missing, and index the certificates of `crt_table` that have
    no entry (stored by the reference, or before the inventory existed)."""
    for statement in schema_statements(prefix):
        tx.execute(statement)
    rows = tx.execute(f"SELECT crt FROM {crt_table} WHERE crt IS NOT NULL").fetchall()
    for (crt,) in rows:
        entry = InventoryEntry.of(as_bytes(crt), UNKNOWN)
        if entry is not None:
            tx.execute(*entry.insert_statement(prefix))


def mark_revoked(tx: Connection, prefix: str, serial: int, revocation_date: int) -> None:
    """Record a revocation (in its transaction): the revoked table forgets it once the
    certificate expired, the inventory does not."""
    tx.execute(
        f"UPDATE {table_name(prefix)} SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL",
        (revocation_date, str(serial)),
    )


class BadQuery(ValueError):
    """A listing query that cannot be answered: the message says which part."""


@dataclass(frozen=True)
class Query:
    """What to list: filters, the page's start (a previous page's cursor) and size."""

    expiring_within: int | None = None  # seconds from now: not expired, notAfter before
    subject: str | None = None  # substring of the RFC 4514 subject, ASCII case ignored
    status: str | None = None  # "revoked", or "valid" (neither revoked nor expired)
    serial: int | None = None
    cursor: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise BadQuery(f"limit must be from 1 to {MAX_PAGE}")
        if self.status not in (None, "revoked", "valid"):
            raise BadQuery("status must be revoked or valid")
        if self.cursor is not None and _CURSOR.match(self.cursor) is None:
            raise BadQuery("cursor must be one a previous page gave")
        if self.expiring_within is not None and not 0 <= self.expiring_within < 2**40:
            raise BadQuery("expiring_within is out of range")
        if self.serial is not None and not 0 <= self.serial < 2**160:
            raise BadQuery("serial is out of range")


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


def page_sql(prefix: str, query: Query, now: int) -> tuple[str, tuple[object, ...]]:
    """The statement reading one page (one row more than the page, to know whether
    another follows), and its parameters."""
    conditions: list[str] = []
    parameters: list[object] = []
    if query.cursor is not None:
        match = _CURSOR.match(query.cursor)
        assert match is not None  # checked by Query
        conditions.append("(i.not_after, i.serial) > (?, ?)")
        parameters += [int(match[1]), match[2]]
    if query.expiring_within is not None:
        conditions.append("i.not_after >= ? AND i.not_after <= ?")
        parameters += [now, now + query.expiring_within]
    if query.subject is not None:
        conditions.append("LOWER(i.subject) LIKE ? ESCAPE '!'")
        parameters.append(_like_pattern(query.subject))
    if query.status == "revoked":
        conditions.append("(i.revoked_at IS NOT NULL OR r.serial IS NOT NULL)")
    elif query.status == "valid":
        conditions.append(
            "i.revoked_at IS NULL AND r.serial IS NULL AND i.not_before <= ? AND i.not_after >= ?"
        )
        parameters += [now, now]
    if query.serial is not None:
        conditions.append("i.serial = ?")
        parameters.append(str(query.serial))
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    sql = (
        f"SELECT {_COLUMNS} FROM {table_name(prefix)} AS i "
        f"LEFT JOIN {prefix}revoked AS r ON r.serial = i.serial "
        f"{where}ORDER BY i.not_after, i.serial LIMIT ?"
    )
    return sql, (*parameters, query.limit + 1)


def _entry(fields: Sequence[object]) -> InventoryEntry:
    serial, not_before, not_after, subject, sans, key_type, approval, revoked_at = fields
    try:
        names = json.loads(str(sans))
    except ValueError:
        names = []
    return InventoryEntry(
        int(str(serial)),
        int(str(not_before)),
        int(str(not_after)),
        str(subject),
        tuple(str(name) for name in names) if isinstance(names, list) else (),
        str(key_type),
        str(approval),
        None if revoked_at is None else int(str(revoked_at)),
    )


class Inventory:
    """Pages of the inventory of one prefix."""

    def __init__(self, database: Engine, prefix: str) -> None:
        self._database = database
        self._prefix = prefix

    def page(self, query: Query, now: int) -> tuple[list[InventoryEntry], str | None]:
        """The entries of one page, and the cursor of the next (None on the last). Pages
        follow a unique key: entries added meanwhile never shift the ones not yet listed."""
        sql, parameters = page_sql(self._prefix, query, now)
        with self._database.reading() as connection:
            rows = connection.execute(sql, parameters).fetchall()
        entries = [_entry(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        return entries, entries[-1].cursor if more else None
