"""The tables of one CA instance (prefix `cau`, `cas`, `http_cas`), schema-compatible with
the reference database (ca-profile 5), on either engine (caucase.storage.engine).

Knows rows, not policy. Every time is passed in as integer Unix seconds.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Optional

from cryptography import x509

from caucase import exceptions
from caucase.crypto import x509util
from caucase.storage import inventory, renewal
from caucase.storage.engine import (
    Connection,
    Engine,
    IntegrityError,
    Statement,
    execute_changes,
    open_database,
)
from caucase.storage.revocations import CRL_LAST_UPDATE, CRL_NUMBER, RevocationRows
from caucase.storage.rows import Cell, as_bytes, as_text
from caucase.storage.schema import (
    LEGACY_CRL_SUFFIX,
    index_statements,
    issued_crl_statement,
    reason_table_statement,
    schema_statements,
)

logger = logging.getLogger(__name__)

DAY = 86400
RECEIVED_CSR = "received_csr"
AUTO_SIGN_CSR_AMOUNT = "auto_sign_csr_amount"
# (number of CA rows, latest expiration date): see Storage.get_ca_version.
CAVersion = tuple[int, Optional[int]]

__all__ = ["CRL_LAST_UPDATE", "CRL_NUMBER", "CAVersion", "StaleCAList", "Storage"]


def _as_ca_version(count: Cell, newest: Cell) -> CAVersion:
    return int(count or 0), None if newest is None else int(as_text(newest))


class StaleCAList(Exception):
    """The CA rows are no longer at the version a certificate was signed from: sign it
    again from the CA list as it now is (nothing was stored)."""


def _index_entries(
    crt_pem: bytes, approval: str
) -> tuple[renewal.IndexEntry | None, inventory.InventoryEntry | None]:
    """What the renewal index and the inventory keep of a certificate being stored, from
    one parse (with the plain loader: the PEM is our signer's)."""
    try:
        certificate = x509.load_pem_x509_certificate(crt_pem)
    except ValueError:
        return None, None
    return (
        renewal.IndexEntry.of_certificate(certificate),
        inventory.InventoryEntry.of_certificate(certificate, approval),
    )


class Storage(RevocationRows):
    """The tables of one CA instance in one database."""

    def __init__(
        self,
        database: Engine | str,
        table_prefix: str,
        max_csr_amount: int = 50,
        crt_keep_time: float = 1,
        crt_read_keep_time: float = 0.05,
        enforce_unique_key_id: bool = False,
    ) -> None:
        """Keep times are in days. Creates the tables if missing.

        Given a location (a path or a URL) instead of its engine, the storage opens a
        database of its own (an SQLite file created 0600 if missing), closed with it."""
        self._owned: Engine | None = None
        if isinstance(database, str):
            database = self._owned = open_database(database)
        super().__init__(database, table_prefix)
        self._max_csr_amount = max_csr_amount
        self._crt_keep_time = crt_keep_time * DAY
        self._crt_read_keep_time = crt_read_keep_time * DAY
        # The latest "now" this storage purged at, committed (see _purges).
        self._purged_at = -1
        try:
            with self._transaction() as tx:
                for statement in schema_statements(table_prefix, enforce_unique_key_id):
                    tx.execute(statement)
                for statement in index_statements(table_prefix, enforce_unique_key_id):
                    tx.execute(statement)
                tx.execute(issued_crl_statement(table_prefix))
                tx.execute(reason_table_statement(table_prefix))
                self._migrate_legacy_crl_table(tx)
                renewal.create_table(database, tx, table_prefix, self._table("crt"))
                inventory.create_table(database, tx, table_prefix, self._table("crt"))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the database if this storage opened it; a shared one is closed by its
        owner."""
        if self._owned is not None:
            self._owned.close()

    def _migrate_legacy_crl_table(self, tx: Connection) -> None:
        """Older versions stored CRLs; keep only the newest thisUpdate (ca-profile 5.4)."""
        legacy = self._table(LEGACY_CRL_SUFFIX)
        if not self._database.has_table(tx, legacy):
            return
        row = tx.execute(
            f"SELECT crl FROM {legacy} ORDER BY expiration_date DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return  # an empty legacy table is left in place (errata 12)
        try:
            crl = x509util.load_crl(as_bytes(row[0]))
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
        return [(as_bytes(key), as_bytes(crt)) for key, crt in rows]

    def append_ca_key_pair(self, expiration_date: int, key_pem: bytes, crt_pem: bytes) -> None:
        with self._transaction() as tx:
            self._insert_ca_key_pair(tx, expiration_date, key_pem, crt_pem)

    def append_next_ca_key_pair(
        self, version: CAVersion, expiration_date: int, key_pem: bytes, crt_pem: bytes
    ) -> bool:
        """Store a new CA if the CA rows are still at `version` (get_ca_version, read
        before the caller loaded the CAs it decided on): of nodes racing through a rollover,
        one stores its CA, and the others then see it. Whether this one did."""
        with self._transaction("ca") as tx:
            if self._ca_version(tx) != version:
                return False
            self._insert_ca_key_pair(tx, expiration_date, key_pem, crt_pem)
        return True

    def _insert_ca_key_pair(
        self, tx: Connection, expiration_date: int, key_pem: bytes, crt_pem: bytes
    ) -> None:
        tx.execute(
            f"INSERT INTO {self._table('ca')} (expiration_date, key, crt) VALUES (?, ?, ?)",
            (expiration_date, bytes(key_pem), bytes(crt_pem)),
        )

    def get_ca_version(self) -> CAVersion:
        """What changes whenever a CA row is added or purged (rows are never updated): a
        node holding the CAs of another version reads them again."""
        with self._borrow() as connection:
            return self._ca_version(connection)

    def _ca_version(self, connection: Connection) -> CAVersion:
        row = connection.execute(
            f"SELECT COUNT(*), MAX(expiration_date) FROM {self._table('ca')}"
        ).fetchone()
        return _as_ca_version(*(row if row is not None else (0, None)))

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
        ca_version: CAVersion | None = None,
    ) -> tuple[int, int | None, bool]:
        """append_csr, storing `crt_pem` (signed in advance) with the row in the same
        transaction when the received_csr counter this insert takes is <= auto_sign_limit.

        One transaction instead of two per auto-signed request. Returns (id, counter value or
        None, whether `crt_pem` was stored)."""
        csr_blob = bytes(csr_pem)
        stored = [] if crt_pem is None else self._certificate_statements(crt_pem, "auto")
        # The lock keeps the quota exact and identical CSRs deduplicated across nodes; under
        # it, the counter read here is the one the increment below moves.
        with self._transaction("csr") as tx:
            existing, pending, received, version = self._csr_state(tx, csr_blob, key_id)
            if ca_version is not None and version != ca_version:
                raise StaleCAList("the CA rows changed since the certificate was signed")
            if existing is not None:
                return existing, None, False
            counter_value: int | None = None
            statements: list[Statement] = []
            if not override_limits:
                if pending >= self._max_csr_amount:
                    raise exceptions.NoStorage("Too many pending CSRs")
                counter_value = received + 1
                statements.append(self._counter_increment(RECEIVED_CSR))
            statements += self._purges(now)
            signed_crt = None
            if (
                crt_pem is not None
                and counter_value is not None
                and counter_value <= auto_sign_limit
            ):
                signed_crt = bytes(crt_pem)
                statements += stored
            csr_id = self._insert_row(tx, csr_blob, key_id, statements, signed_crt, now)
        self._purged(now)
        return csr_id, counter_value, signed_crt is not None

    def append_signed(self, csr_pem: bytes, key_id: str, now: int, crt_pem: bytes) -> int:
        """A CSR and its certificate, signed beforehand, as a new row in one transaction:
        no pending quota, no auto-sign counter, and never merged with an identical CSR (an
        ACME client reusing its key sends the same CSR again, and gets a new certificate)."""
        statements = [*self._purges(now), *self._certificate_statements(crt_pem, "acme")]
        with self._transaction() as tx:
            csr_id = self._insert_row(tx, bytes(csr_pem), key_id, statements, bytes(crt_pem), now)
        self._purged(now)
        return csr_id

    def _csr_state(
        self, tx: Connection, csr_blob: bytes, key_id: str
    ) -> tuple[int | None, int, int, CAVersion]:
        """In one query: the id of a byte-identical stored CSR (or None), the number of
        pending CSRs, the received_csr counter and the CA rows' version. Identical CSRs
        have the same key id, so the key_id index narrows the search (rows without a key
        id are checked too)."""
        table = self._table("crt")
        key_match, values = self._key_id_match(key_id)
        # CAST: in SQLite a TEXT value never equals a BLOB one, and older rows may be TEXT.
        csr = "csr" if self._database.strict_types else "CAST(csr AS BLOB)"
        ca = self._table("ca")
        existing, pending, received, ca_count, ca_newest = tx.execute(
            f"SELECT (SELECT id FROM {table} WHERE ({key_match} OR key_id IS NULL) "
            f"AND {csr} = ? LIMIT 1), (SELECT COUNT(*) FROM {table} WHERE crt IS NULL), "
            f"(SELECT value FROM {self._table('counter')} WHERE name = ?), "
            f"(SELECT COUNT(*) FROM {ca}), (SELECT MAX(expiration_date) FROM {ca})",
            (*values, csr_blob, RECEIVED_CSR),
        ).fetchone()
        return (
            None if existing is None else int(existing),
            int(pending),
            int(received or 0),
            _as_ca_version(ca_count, ca_newest),
        )

    def _key_id_match(self, key_id: str) -> tuple[str, tuple[object, ...]]:
        """The condition matching a key id, and its values: we store it as bytes (as the
        reference does), but SQLite rows may hold it as TEXT."""
        if self._database.strict_types:
            return "key_id = ?", (key_id.encode("ascii"),)
        return "key_id IN (?, ?)", (key_id.encode("ascii"), key_id)

    def _purges(self, now: int) -> list[Statement]:
        """What removes the signed rows whose keep time is over and the renewal index
        entries past their certificate's end, unless this storage purged at this `now`
        already: times are whole seconds, so a second purge in the same second could only
        find what another process wrote meanwhile, which the next second's purge removes."""
        if now <= self._purged_at:
            return []
        return [
            (f"DELETE FROM {self._table('crt')} WHERE expiration_date < ?", (now,)),
            renewal.purge_statement(self._prefix, now),
        ]

    def _purged(self, now: int) -> None:
        """The purges of `now` are committed (a race between threads costs a purge more)."""
        self._purged_at = max(self._purged_at, now)

    def _insert_row(
        self,
        tx: Connection,
        csr_blob: bytes,
        key_id: str,
        statements: list[Statement],
        crt_blob: bytes | None,
        now: int,
    ) -> int:
        """Insert a row, signed with `crt_blob` unless None, under a fresh random 63-bit id
        (another one on the rare clash), run with `statements` (one statement on
        PostgreSQL). Any constraint error can only be the key id."""
        expiration_date = None if crt_blob is None else int(now + self._crt_keep_time)
        while True:
            csr_id = secrets.randbits(63)
            insert = (
                f"INSERT INTO {self._table('crt')} (id, key_id, csr, crt, expiration_date) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (csr_id, key_id.encode("ascii"), csr_blob, crt_blob, expiration_date),
            )
            try:
                cursor = execute_changes(tx, [*statements, insert])
            except IntegrityError as error:
                raise exceptions.KeyAlreadyUsed(
                    "A certificate or request already exists for this public key"
                ) from error
            if cursor.rowcount == 1:
                return csr_id
            statements = []

    def get_csr(self, csr_id: int) -> bytes:
        """NotFound if unknown."""
        row = self._select_one(f"SELECT csr FROM {self._table('crt')} WHERE id = ?", (csr_id,))
        if row is None:
            raise exceptions.NotFound(f"No CSR with id {csr_id}")
        return as_bytes(row[0])

    def get_pending_csr_list(self) -> list[tuple[int, bytes]]:
        """(id, CSR PEM) of every unsigned row, ascending id."""
        rows = self._select_all(
            f"SELECT id, csr FROM {self._table('crt')} WHERE crt IS NULL ORDER BY id"
        )
        return [(int(as_text(csr_id)), as_bytes(csr)) for csr_id, csr in rows]

    def delete_pending_csr(self, csr_id: int) -> None:
        """NotFound unless the row exists and is pending."""
        with self._transaction() as tx:
            cursor = tx.execute(
                f"DELETE FROM {self._table('crt')} WHERE id = ? AND crt IS NULL", (csr_id,)
            )
            if cursor.rowcount != 1:
                raise exceptions.NotFound(f"No pending CSR with id {csr_id}")

    def store_certificate(
        self, csr_id: int, crt_pem: bytes, now: int, approval: str = inventory.UNKNOWN
    ) -> None:
        """Attach a certificate to a pending row, listed as approved `approval` (one of
        inventory.APPROVALS); NotFound unless pending."""
        update = (
            f"UPDATE {self._table('crt')} SET crt = ?, expiration_date = ? "
            "WHERE id = ? AND crt IS NULL",
            (bytes(crt_pem), int(now + self._crt_keep_time), csr_id),
        )
        statements = [
            *self._purges(now),
            *self._certificate_statements(crt_pem, approval),
            update,
        ]
        with self._transaction() as tx:
            if execute_changes(tx, statements).rowcount != 1:
                raise exceptions.NotFound(f"No pending CSR with id {csr_id}")
        self._purged(now)

    def _certificate_statements(self, crt_pem: bytes, approval: str) -> list[Statement]:
        """What stores a certificate's renewal index and inventory entries. The
        certificate is parsed here: call it before opening the transaction, where nothing
        but SQL should run."""
        entry, listed = _index_entries(crt_pem, approval)
        statements: list[Statement] = []
        if entry is not None:
            statements.append(entry.insert_statement(self._prefix))
        if listed is not None:
            statements.append(listed.insert_statement(self._prefix))
        return statements

    @property
    def renewal_index(self) -> renewal.RenewalIndex:
        """The certificates issued here, by certID, and their moved renewal windows."""
        return renewal.RenewalIndex(self._database, self._prefix)

    @property
    def certificate_inventory(self) -> inventory.Inventory:
        """Every certificate issued here, page by page."""
        return inventory.Inventory(self._database, self._prefix)

    def get_certificate(self, csr_id: int, now: int) -> bytes:
        """NotFound unless signed; shortens the row's keep time to the read keep time."""
        table = self._table("crt")
        read_expiration = int(now + self._crt_read_keep_time)
        # The update is one conditional statement: no read-then-write race, and no write
        # once lowered. Bookkeeping: the reply does not depend on it, and if it is lost the
        # row is only kept its full keep time.
        row = self._database.read_with_bookkeeping(
            (
                f"SELECT crt, expiration_date FROM {table} WHERE id = ? AND crt IS NOT NULL",
                (csr_id,),
            ),
            (
                f"UPDATE {table} SET expiration_date = ? WHERE id = ? AND crt IS NOT NULL "
                "AND (expiration_date IS NULL OR expiration_date > ?)",
                (read_expiration, csr_id, read_expiration),
            ),
            lambda row: not isinstance(row[1], int) or read_expiration < row[1],
        )
        if row is None:
            raise exceptions.NotFound(f"No certificate with id {csr_id}")
        return as_bytes(row[0])

    def get_certificate_by_key_id(self, key_id: str) -> bytes:
        """Certificate of the signed row holding this key id; NotFound otherwise.

        Where key ids are not unique, the row kept the longest wins."""
        key_match, values = self._key_id_match(key_id)
        row = self._select_one(
            f"SELECT crt FROM {self._table('crt')} WHERE {key_match} AND crt IS NOT NULL "
            "ORDER BY expiration_date DESC LIMIT 1",
            values,
        )
        if row is None:
            raise exceptions.NotFound(f"No certificate for key id {key_id}")
        return as_bytes(row[0])

    def iter_certificates(self) -> Iterator[bytes]:
        """Every stored certificate PEM, ascending row id."""
        rows = self._select_all(
            f"SELECT crt FROM {self._table('crt')} WHERE crt IS NOT NULL ORDER BY id"
        )
        return iter([as_bytes(crt) for (crt,) in rows])

    # Auto-approval
    def get_locked_auto_sign_amount(self) -> int | None:
        row = self._select_one(
            f"SELECT value FROM {self._table('config_once')} WHERE name = ?",
            (AUTO_SIGN_CSR_AMOUNT,),
        )
        return None if row is None else int(as_text(row[0]))

    def lock_auto_sign_amount(self, amount: int) -> None:
        """First write wins forever."""
        with self._transaction() as tx:
            tx.execute(
                f"INSERT INTO {self._table('config_once')} (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (AUTO_SIGN_CSR_AMOUNT, str(amount)),
            )

    # Whole-file operations
    def dump(self) -> Iterator[str]:
        """SQLite statements rebuilding the whole database (every prefix), one snapshot."""
        return self._database.dump()
