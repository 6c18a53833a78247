"""SQLite storage, schema-compatible with the reference database (ca-profile 5).

Knows rows, not policy. Every time is passed in as integer Unix seconds.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import threading
from collections.abc import Container, Iterable, Iterator
from typing import Union

from caucase import exceptions
from caucase.crypto import x509util
from caucase.storage.database import Database
from caucase.storage.schema import (
    LEGACY_CRL_SUFFIX,
    REASON_SUFFIX,
    index_statements,
    reason_table_statement,
    schema_statements,
)

logger = logging.getLogger(__name__)

DAY = 86400
RECEIVED_CSR = "received_csr"
CRL_NUMBER = "crl_number"
CRL_LAST_UPDATE = "crl_last_update"
AUTO_SIGN_CSR_AMOUNT = "auto_sign_csr_amount"

Cell = Union[str, bytes, int, None]


def _as_bytes(value: Cell) -> bytes:
    """PEM columns are BLOBs in reference databases, but tolerate TEXT."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected a PEM column, got {value!r}")


def _as_text(value: Cell) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Storage:
    """The six tables of one CA instance (prefix `cau`, `cas`, `http_cas`) in one SQLite file."""

    def __init__(
        self,
        database: Database | str,
        table_prefix: str,
        max_csr_amount: int = 50,
        crt_keep_time: float = 1,
        crt_read_keep_time: float = 0.05,
        enforce_unique_key_id: bool = False,
    ) -> None:
        """Keep times are in days. Creates the tables if missing.

        Given a path instead of its owner, the storage opens a database of its own (the
        file created 0600 if missing), closed with the storage."""
        self._owned: Database | None = None
        if isinstance(database, str):
            database = self._owned = Database(database)
        self._database = database
        self._prefix = table_prefix
        self._max_csr_amount = max_csr_amount
        self._crt_keep_time = crt_keep_time * DAY
        self._crt_read_keep_time = crt_read_keep_time * DAY
        self._local = threading.local()
        self._reported_bad_serials: set[str] = set()
        try:
            with self._transaction() as tx:
                for statement in schema_statements(table_prefix, enforce_unique_key_id):
                    tx.execute(statement)
                for statement in index_statements(table_prefix, enforce_unique_key_id):
                    tx.execute(statement)
                tx.execute(reason_table_statement(table_prefix))
                self._migrate_legacy_crl_table(tx)
        except BaseException:
            self.close()
            raise

    def _table(self, suffix: str) -> str:
        return self._prefix + suffix

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection for this thread; a nested use gets the same one."""
        active: sqlite3.Connection | None = getattr(self._local, "active", None)
        if active is not None:
            yield active
            return
        with self._database.reading() as connection:
            self._local.active = connection
            try:
                yield connection
            finally:
                self._local.active = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (synchronous=FULL) before this returns; an inner
        use joins the outer one.

        Runs in the database's group committer; its BEGIN IMMEDIATE takes SQLite's write
        lock up front, so writers of other processes wait on the busy timeout instead of
        failing to upgrade a read lock."""
        with self._database.writing() as connection:
            outer = getattr(self._local, "active", None)
            self._local.active = connection
            try:
                yield connection
            finally:
                self._local.active = outer

    def _select_one(
        self, query: str, parameters: Iterable[object] = ()
    ) -> tuple[Cell, ...] | None:
        with self._borrow() as connection:
            cursor = connection.execute(query, tuple(parameters))
            row: tuple[Cell, ...] | None = cursor.fetchone()
            cursor.close()
        return row

    def _select_all(self, query: str, parameters: Iterable[object] = ()) -> list[tuple[Cell, ...]]:
        with self._borrow() as connection:
            rows: list[tuple[Cell, ...]] = connection.execute(query, tuple(parameters)).fetchall()
        return rows

    def close(self) -> None:
        """Close the database if this storage opened it; a shared one is closed by its
        owner."""
        if self._owned is not None:
            self._owned.close()

    def _migrate_legacy_crl_table(self, tx: sqlite3.Connection) -> None:
        """Older versions stored CRLs; keep only the newest thisUpdate (ca-profile 5.4)."""
        legacy = self._table(LEGACY_CRL_SUFFIX)
        if (
            tx.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (legacy,)
            ).fetchone()
            is None
        ):
            return
        row = tx.execute(
            f"SELECT crl FROM {legacy} ORDER BY expiration_date DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return  # an empty legacy table is left in place (errata 12)
        try:
            crl = x509util.load_crl(_as_bytes(row[0]))
        except (TypeError, ValueError):
            logger.warning("Legacy table %s holds no readable CRL, left in place", legacy)
            return
        last_update = int(crl.last_update_utc.timestamp())
        self._set_config(tx, CRL_LAST_UPDATE, str(last_update))
        tx.execute(f"DROP TABLE {legacy}")

    # CA key pairs
    def get_ca_key_pairs(self, now: int) -> list[tuple[bytes, bytes]]:
        """(key PEM, certificate PEM) ordered by expiration, after deleting expired rows."""
        table = self._table("ca")
        with self._transaction() as tx:
            tx.execute(f"DELETE FROM {table} WHERE expiration_date < ?", (now,))
            rows = tx.execute(
                f"SELECT key, crt FROM {table} ORDER BY expiration_date ASC"
            ).fetchall()
        return [(_as_bytes(key), _as_bytes(crt)) for key, crt in rows]

    def append_ca_key_pair(self, expiration_date: int, key_pem: bytes, crt_pem: bytes) -> None:
        with self._transaction() as tx:
            tx.execute(
                f"INSERT INTO {self._table('ca')} (expiration_date, key, crt) VALUES (?, ?, ?)",
                (expiration_date, bytes(key_pem), bytes(crt_pem)),
            )

    # CSRs and certificates
    def append_csr(
        self, csr_pem: bytes, key_id: str, now: int, override_limits: bool = False
    ) -> tuple[int, int | None]:
        """Store a CSR; return (id, received_csr value if this insert was counted, else None).

        A byte-identical stored CSR returns its id and None. Raises NoStorage past the pending
        quota (unless override_limits), KeyAlreadyUsed on a unique key id clash. Purges expired
        signed rows in the same transaction."""
        csr_id, counter_value, _ = self.append_csr_signed(
            csr_pem, key_id, now, override_limits=override_limits
        )
        return csr_id, counter_value

    def append_csr_signed(
        self,
        csr_pem: bytes,
        key_id: str,
        now: int,
        crt_pem: bytes | None = None,
        auto_sign_limit: int = 0,
        override_limits: bool = False,
    ) -> tuple[int, int | None, bool]:
        """append_csr, storing `crt_pem` (signed in advance) with the row in the same
        transaction when the received_csr counter this insert takes is <= auto_sign_limit.

        One transaction instead of two per auto-signed request. Returns (id, counter value or
        None, whether `crt_pem` was stored)."""
        table = self._table("crt")
        csr_blob = bytes(csr_pem)
        with self._transaction() as tx:
            existing = self._find_csr(tx, csr_blob, key_id)
            if existing is not None:
                return existing, None, False
            counter_value: int | None = None
            if not override_limits:
                (pending,) = tx.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE crt IS NULL"
                ).fetchone()
                if pending >= self._max_csr_amount:
                    raise exceptions.NoStorage("Too many pending CSRs")
                counter_value = self._increment_counter(tx, RECEIVED_CSR)
            tx.execute(f"DELETE FROM {table} WHERE expiration_date < ?", (now,))
            csr_id = self._insert_csr_row(tx, csr_blob, key_id)
            signed = (
                crt_pem is not None
                and counter_value is not None
                and counter_value <= auto_sign_limit
            )
            if signed:
                self._attach_certificate(tx, csr_id, bytes(crt_pem or b""), now)
        return csr_id, counter_value, signed

    def append_signed(self, csr_pem: bytes, key_id: str, now: int, crt_pem: bytes) -> int:
        """A CSR and its certificate, signed beforehand, as a new row in one transaction:
        no pending quota, no auto-sign counter, and never merged with an identical CSR (an
        ACME client reusing its key sends the same CSR again, and gets a new certificate)."""
        with self._transaction() as tx:
            tx.execute(f"DELETE FROM {self._table('crt')} WHERE expiration_date < ?", (now,))
            csr_id = self._insert_csr_row(tx, bytes(csr_pem), key_id)
            self._attach_certificate(tx, csr_id, bytes(crt_pem), now)
        return csr_id

    def _find_csr(self, tx: sqlite3.Connection, csr_blob: bytes, key_id: str) -> int | None:
        """Id of a byte-identical stored CSR. Identical CSRs have the same key id, so the
        key_id index narrows the search (rows without a key id are checked too)."""
        # CAST: a TEXT value never equals a BLOB one, and older rows may be TEXT.
        row = tx.execute(
            f"SELECT id FROM {self._table('crt')} "
            "WHERE (key_id IN (?, ?) OR key_id IS NULL) AND CAST(csr AS BLOB) = ?",
            (key_id.encode("ascii"), key_id, csr_blob),
        ).fetchone()
        return None if row is None else int(row[0])

    def _insert_csr_row(self, tx: sqlite3.Connection, csr_blob: bytes, key_id: str) -> int:
        """Insert under a fresh random 63-bit id; a constraint error can only be the key id."""
        table = self._table("crt")
        while True:
            csr_id = secrets.randbits(63)
            if tx.execute(f"SELECT 1 FROM {table} WHERE id = ?", (csr_id,)).fetchone() is None:
                break
        try:
            tx.execute(
                f"INSERT INTO {table} (id, key_id, csr) VALUES (?, ?, ?)",
                (csr_id, key_id.encode("ascii"), csr_blob),
            )
        except sqlite3.IntegrityError as error:
            raise exceptions.KeyAlreadyUsed(
                "A certificate or request already exists for this public key"
            ) from error
        return csr_id

    def get_csr(self, csr_id: int) -> bytes:
        """NotFound if unknown."""
        row = self._select_one(f"SELECT csr FROM {self._table('crt')} WHERE id = ?", (csr_id,))
        if row is None:
            raise exceptions.NotFound(f"No CSR with id {csr_id}")
        return _as_bytes(row[0])

    def get_pending_csr_list(self) -> list[tuple[int, bytes]]:
        """(id, CSR PEM) of every unsigned row, ascending id."""
        rows = self._select_all(
            f"SELECT id, csr FROM {self._table('crt')} WHERE crt IS NULL ORDER BY id"
        )
        return [(int(_as_text(csr_id)), _as_bytes(csr)) for csr_id, csr in rows]

    def delete_pending_csr(self, csr_id: int) -> None:
        """NotFound unless the row exists and is pending."""
        with self._transaction() as tx:
            cursor = tx.execute(
                f"DELETE FROM {self._table('crt')} WHERE id = ? AND crt IS NULL", (csr_id,)
            )
            if cursor.rowcount != 1:
                raise exceptions.NotFound(f"No pending CSR with id {csr_id}")

    def store_certificate(self, csr_id: int, crt_pem: bytes, now: int) -> None:
        """Attach a certificate to a pending row; NotFound unless pending."""
        with self._transaction() as tx:
            self._attach_certificate(tx, csr_id, bytes(crt_pem), now)

    def _attach_certificate(
        self, tx: sqlite3.Connection, csr_id: int, crt_blob: bytes, now: int
    ) -> None:
        cursor = tx.execute(
            f"UPDATE {self._table('crt')} SET crt = ?, expiration_date = ? "
            "WHERE id = ? AND crt IS NULL",
            (crt_blob, int(now + self._crt_keep_time), csr_id),
        )
        if cursor.rowcount != 1:
            raise exceptions.NotFound(f"No pending CSR with id {csr_id}")

    def get_certificate(self, csr_id: int, now: int) -> bytes:
        """NotFound unless signed; shortens the row's keep time to the read keep time."""
        table = self._table("crt")
        row = self._select_one(
            f"SELECT crt, expiration_date FROM {table} WHERE id = ? AND crt IS NOT NULL",
            (csr_id,),
        )
        if row is None:
            raise exceptions.NotFound(f"No certificate with id {csr_id}")
        crt, expiration_date = row
        read_expiration = int(now + self._crt_read_keep_time)
        if not isinstance(expiration_date, int) or read_expiration < expiration_date:
            # One conditional statement: no read-then-write race, and no write once lowered.
            with self._transaction() as tx:
                tx.execute(
                    f"UPDATE {table} SET expiration_date = ? WHERE id = ? "
                    "AND (expiration_date IS NULL OR expiration_date > ?)",
                    (read_expiration, csr_id, read_expiration),
                )
        return _as_bytes(crt)

    def get_certificate_by_key_id(self, key_id: str) -> bytes:
        """Certificate of the signed row holding this key id; NotFound otherwise.

        Where key ids are not unique, the row kept the longest wins."""
        row = self._select_one(
            f"SELECT crt FROM {self._table('crt')} "
            "WHERE (key_id = ? OR key_id = ?) AND crt IS NOT NULL "
            "ORDER BY expiration_date DESC LIMIT 1",
            (key_id.encode("ascii"), key_id),
        )
        if row is None:
            raise exceptions.NotFound(f"No certificate for key id {key_id}")
        return _as_bytes(row[0])

    def iter_certificates(self) -> Iterator[bytes]:
        """Every stored certificate PEM, ascending row id."""
        rows = self._select_all(
            f"SELECT crt FROM {self._table('crt')} WHERE crt IS NOT NULL ORDER BY id"
        )
        return iter([_as_bytes(crt) for (crt,) in rows])

    # Revocations and CRL bookkeeping
    def revoke(
        self, serial: int, revocation_date: int, expiration_date: int, reason: int | None = None
    ) -> None:
        """Insert a revocation (with its RFC 5280 reason code, if any) and bump crl_number
        in one transaction; Found if already there."""
        with self._transaction() as tx:
            if not self._insert_revocation(tx, serial, revocation_date, expiration_date):
                raise exceptions.Found(f"Serial {serial} is already revoked")
            if reason is not None:
                tx.execute(
                    f"INSERT INTO {self._table(REASON_SUFFIX)} (serial, reason) VALUES (?, ?) "
                    "ON CONFLICT (serial) DO UPDATE SET reason = excluded.reason",
                    (str(serial), reason),
                )
            self._increment_counter(tx, CRL_NUMBER)

    def revoke_many(
        self, serial_list: list[int], revocation_date: int, expiration_date: int
    ) -> tuple[int, int]:
        """Import revocations in one transaction; return (newly revoked, already revoked).

        crl_number is bumped once per new row, as if each had been revoked on its own."""
        newly_revoked = 0
        with self._transaction() as tx:
            for serial in serial_list:
                if self._insert_revocation(tx, serial, revocation_date, expiration_date):
                    newly_revoked += 1
                    self._increment_counter(tx, CRL_NUMBER)
        return newly_revoked, len(serial_list) - newly_revoked

    def _insert_revocation(
        self, tx: sqlite3.Connection, serial: int, revocation_date: int, expiration_date: int
    ) -> bool:
        cursor = tx.execute(
            f"INSERT OR IGNORE INTO {self._table('revoked')} "
            "(serial, revocation_date, expiration_date) VALUES (?, ?, ?)",
            (str(serial), revocation_date, expiration_date),
        )
        return cursor.rowcount == 1

    def get_revoked(self, now: int) -> list[tuple[int, int]]:
        """(serial, revocation date) in insertion order, after deleting expired rows.

        Rows whose serial is not a non-negative decimal integer (written by the reference
        from bad input) are skipped, never fatal."""
        table = self._table("revoked")
        expired = f"FROM {table} WHERE expiration_date < ?"
        if self._select_one(f"SELECT 1 {expired} LIMIT 1", (now,)) is not None:
            with self._transaction() as tx:
                tx.execute(
                    f"DELETE FROM {self._table(REASON_SUFFIX)} "
                    f"WHERE serial IN (SELECT serial {expired})",
                    (now,),
                )
                tx.execute(f"DELETE {expired}", (now,))
        # Read outside the write transaction: other writers need not wait for a big read.
        rows = self._select_all(f"SELECT serial, revocation_date FROM {table} ORDER BY rowid")
        revoked = []
        for serial, revocation_date in rows:
            text = serial if isinstance(serial, str) else _as_text(serial)
            if not (text.isdigit() and text.isascii()):
                self._report_bad_serial(text)
                continue
            revoked.append((int(text), int(revocation_date or 0)))
        return revoked

    def get_revocation_reasons(self) -> dict[int, int]:
        """serial -> RFC 5280 reason code, for the revocations that gave one (rows that
        are not two integers, from a restored dump, are skipped)."""
        rows = self._select_all(f"SELECT serial, reason FROM {self._table(REASON_SUFFIX)}")
        return {
            int(text): reason
            for text, reason in ((_as_text(serial), reason) for serial, reason in rows)
            if text.isdigit() and text.isascii() and isinstance(reason, int)
        }

    def revoked_serials(self, now: int) -> Container[int]:
        """The serials get_revoked(now) would list, looked up one at a time (a primary key
        read), so that a check costs the same whatever the number of revocations."""
        return _RevokedSerials(self, now)

    def _is_revoked(self, serial: int, now: int) -> bool:
        row = self._select_one(
            f"SELECT 1 FROM {self._table('revoked')} WHERE serial = ? "
            "AND (expiration_date IS NULL OR expiration_date >= ?)",
            (str(serial), now),
        )
        return row is not None

    def _report_bad_serial(self, serial: str) -> None:
        if serial not in self._reported_bad_serials:
            self._reported_bad_serials.add(serial)
            logger.warning(
                "Ignoring revocation of %r in %srevoked: not a non-negative integer",
                serial,
                self._prefix,
            )

    def get_crl_state(self) -> tuple[int, int | None]:
        """(crl_number, crl_last_update or None), read together in one statement."""
        row = self._select_one(
            f"SELECT (SELECT value FROM {self._table('counter')} WHERE name = ?), "
            f"(SELECT value FROM {self._table('config')} WHERE name = ?)",
            (CRL_NUMBER, CRL_LAST_UPDATE),
        )
        number, last_update = row if row is not None else (None, None)
        return (
            0 if number is None else int(_as_text(number)),
            None if last_update is None else int(_as_text(last_update)),
        )

    def start_crl_generation(self, last_update: int) -> int:
        """Increment crl_number and store crl_last_update in one transaction; return the number."""
        with self._transaction() as tx:
            number = self._increment_counter(tx, CRL_NUMBER)
            self._set_config(tx, CRL_LAST_UPDATE, str(last_update))
        return number

    def set_crl_state(self, number: int, last_update: int) -> None:
        with self._transaction() as tx:
            tx.execute(
                f"INSERT INTO {self._table('counter')} (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (CRL_NUMBER, number),
            )
            self._set_config(tx, CRL_LAST_UPDATE, str(last_update))

    def _increment_counter(self, tx: sqlite3.Connection, name: str) -> int:
        table = self._table("counter")
        tx.execute(
            f"INSERT INTO {table} (name, value) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (name,),
        )
        (value,) = tx.execute(f"SELECT value FROM {table} WHERE name = ?", (name,)).fetchone()
        return int(value)

    def _set_config(self, tx: sqlite3.Connection, name: str, value: str) -> None:
        tx.execute(
            f"INSERT INTO {self._table('config')} (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # Auto-approval
    def get_locked_auto_sign_amount(self) -> int | None:
        row = self._select_one(
            f"SELECT value FROM {self._table('config_once')} WHERE name = ?",
            (AUTO_SIGN_CSR_AMOUNT,),
        )
        return None if row is None else int(_as_text(row[0]))

    def lock_auto_sign_amount(self, amount: int) -> None:
        """First write wins forever."""
        with self._transaction() as tx:
            tx.execute(
                f"INSERT OR IGNORE INTO {self._table('config_once')} (name, value) VALUES (?, ?)",
                (AUTO_SIGN_CSR_AMOUNT, str(amount)),
            )

    # Whole-file operations
    def dump(self) -> Iterator[str]:
        """SQL statements rebuilding the whole database file (every prefix), one snapshot."""
        return self._database.dump()


class _RevokedSerials:
    """Storage.revoked_serials: a container over the revoked table."""

    def __init__(self, storage: Storage, now: int) -> None:
        self._storage = storage
        self._now = now

    def __contains__(self, serial: object) -> bool:
        return isinstance(serial, int) and self._storage._is_revoked(serial, self._now)
