"""The renewal index of one CA instance: the certificates it issued, by serial and authority
key id, and the renewal windows operators moved forward.

The reference's crt table holds PEM only, and its rows are purged a day after signing; this
table (``<prefix>_renewal``, which the reference ignores) keeps, until its notAfter, what a
renewal window needs: serial, authority key id, notBefore, notAfter, and the band an
operator's early-renewal request put the certificate in (start, end, who asked and when).
A row is written in the transaction storing its certificate; a database created without
the table is backfilled from its crt table when the table is created.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from caucase.crypto import x509util
from caucase.storage.engine import Connection, Engine, Statement

SUFFIX = "_renewal"
_COLUMNS = (
    "serial, authority_key_id, not_before, not_after, "
    "early_start, early_end, requested_by, requested_at"
)


def table_name(prefix: str) -> str:
    return prefix + SUFFIX


def schema_statements(prefix: str) -> list[str]:
    """The table and its notAfter index (purging and listing valid certificates)."""
    table = table_name(prefix)
    return [
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        "  serial TEXT NOT NULL,\n"
        "  authority_key_id BLOB NOT NULL,\n"
        "  not_before INTEGER NOT NULL,\n"
        "  not_after INTEGER NOT NULL,\n"
        "  early_start INTEGER,\n"
        "  early_end INTEGER,\n"
        "  requested_by TEXT,\n"
        "  requested_at INTEGER,\n"
        "  PRIMARY KEY (serial, authority_key_id)\n"
        ")",
        f"CREATE INDEX IF NOT EXISTS {table}_not_after ON {table} (not_after)",
    ]


@dataclass(frozen=True)
class EarlyRenewal:
    """An operator's request: renew within [start, end] (Unix seconds)."""

    start: int
    end: int
    requested_by: str
    requested_at: int


@dataclass(frozen=True)
class IndexedCertificate:
    """One row: times are Unix seconds."""

    serial: int
    authority_key_id: bytes
    not_before: int
    not_after: int
    early: EarlyRenewal | None


def _int(value: object) -> int:
    return int(str(value))


def _row(fields: Sequence[object]) -> IndexedCertificate:
    serial, aki, not_before, not_after, start, end, requested_by, requested_at = fields
    early = None
    if start is not None and end is not None:
        early = EarlyRenewal(_int(start), _int(end), str(requested_by), _int(requested_at))
    aki_bytes = aki if isinstance(aki, bytes) else str(aki).encode()
    return IndexedCertificate(_int(serial), aki_bytes, _int(not_before), _int(not_after), early)


def create_table(database: Engine, tx: Connection, prefix: str, crt_table: str) -> None:
    """Create the table when missing, filled from the certificates `crt_table` holds."""
    is_new = not database.has_table(tx, table_name(prefix))
    for statement in schema_statements(prefix):
        tx.execute(statement)
    if is_new:
        rows = tx.execute(f"SELECT crt FROM {crt_table} WHERE crt IS NOT NULL").fetchall()
        for (crt,) in rows:
            entry = IndexEntry.of(crt if isinstance(crt, bytes) else str(crt).encode())
            if entry is not None:
                tx.execute(*entry.insert_statement(prefix))


@dataclass(frozen=True)
class IndexEntry:
    """What the index keeps of a certificate being stored."""

    serial: int
    authority_key_id: bytes
    not_before: int
    not_after: int

    @classmethod
    def of(cls, crt_pem: bytes) -> IndexEntry | None:
        """None for a PEM that does not parse or lacks an authority key id: nothing
        renews such a certificate by certID."""
        try:
            certificate = x509util.load_certificate(crt_pem)
        except (ValueError, TypeError):
            return None
        return cls.of_certificate(certificate)

    @classmethod
    def of_certificate(cls, certificate: x509.Certificate) -> IndexEntry | None:
        """IndexEntry.of, for a certificate parsed already."""
        try:
            authority_key_id = x509util.authority_key_id(certificate)
        except (ValueError, TypeError):
            return None
        return cls(
            certificate.serial_number,
            authority_key_id,
            int(certificate.not_valid_before_utc.timestamp()),
            int(certificate.not_valid_after_utc.timestamp()),
        )

    def insert_statement(self, prefix: str) -> Statement:
        """What adds the entry (in the transaction storing its certificate)."""
        return (
            f"INSERT INTO {table_name(prefix)} "
            "(serial, authority_key_id, not_before, not_after) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (serial, authority_key_id) DO NOTHING",
            (str(self.serial), self.authority_key_id, self.not_before, self.not_after),
        )


def purge_statement(prefix: str, now: int) -> Statement:
    """What forgets the certificates that expired: nobody renews them any more."""
    return f"DELETE FROM {table_name(prefix)} WHERE not_after < ?", (now,)


class RenewalIndex:
    """Reads of the index, and operators' early-renewal requests, for one prefix."""

    def __init__(self, database: Engine, prefix: str) -> None:
        self._database = database
        self._table = table_name(prefix)

    def find(self, authority_key_id: bytes, serial: int) -> IndexedCertificate | None:
        """The certificate a certID names; None when this CA did not issue it (or it expired)."""
        with self._database.reading() as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM {self._table} WHERE serial = ? AND authority_key_id = ?",
                (str(serial), bytes(authority_key_id)),
            ).fetchone()
        return None if row is None else _row(row)

    def move_serials(self, serials: Iterable[int], early: EarlyRenewal, now: int) -> list[int]:
        """Put the certificates with these serials, still valid at `now`, in the early
        band; the serials that matched, in the order given."""
        moved = []
        with self._database.writing() as tx:
            for serial in dict.fromkeys(serials):
                cursor = tx.execute(
                    f"UPDATE {self._table} SET early_start = ?, early_end = ?, "
                    "requested_by = ?, requested_at = ? WHERE serial = ? AND not_after >= ?",
                    (*_early_fields(early), str(serial), now),
                )
                if cursor.rowcount:
                    moved.append(serial)
        return moved

    def move_all(self, early: EarlyRenewal, issued_before: int, now: int) -> int:
        """Put every certificate still valid at `now` and whose notBefore precedes
        `issued_before` in the early band; how many were moved."""
        with self._database.writing() as tx:
            cursor = tx.execute(
                f"UPDATE {self._table} SET early_start = ?, early_end = ?, "
                "requested_by = ?, requested_at = ? WHERE not_after >= ? AND not_before < ?",
                (*_early_fields(early), now, issued_before),
            )
            return int(cursor.rowcount)


def _early_fields(early: EarlyRenewal) -> tuple[int, int, str, int]:
    return early.start, early.end, early.requested_by, early.requested_at
