"""Revocations and CRL bookkeeping of one CA instance: the revoked table, the CRL number
and last update (counter and config rows, as the reference keeps them), and the CRL each
CA serves now (our own table, shared by the caucased nodes of a database).

Every write here holds the prefix's `crl` lock, and so does a CRL generation for its whole
transaction: what a CRL is signed from cannot change while it is signed, on any node."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Container, Iterator

from caucase import exceptions
from caucase.storage import inventory
from caucase.storage.engine import Connection, Engine
from caucase.storage.rows import TableRows, as_bytes, as_text
from caucase.storage.schema import ISSUED_CRL_SUFFIX, REASON_SUFFIX

logger = logging.getLogger(__name__)

CRL_NUMBER = "crl_number"
CRL_LAST_UPDATE = "crl_last_update"
CRL_LOCK = "crl"

# One stored CRL: (crl number, thisUpdate in Unix seconds, PEM).
IssuedCRL = tuple[int, int, bytes]


class RevocationRows(TableRows):
    """The revoked table and the CRL state of one prefix."""

    def __init__(self, database: Engine, table_prefix: str) -> None:
        super().__init__(database, table_prefix)
        self._reported_bad_serials: set[str] = set()

    def revoke(
        self, serial: int, revocation_date: int, expiration_date: int, reason: int | None = None
    ) -> int:
        """Insert a revocation (with its RFC 5280 reason code, if any) and bump crl_number
        in one transaction; Found if already there. Returns the crl_number it set."""
        with self._transaction(CRL_LOCK) as tx:
            if not self._insert_revocation(tx, serial, revocation_date, expiration_date):
                raise exceptions.Found(f"Serial {serial} is already revoked")
            if reason is not None:
                tx.execute(
                    f"INSERT INTO {self._table(REASON_SUFFIX)} (serial, reason) VALUES (?, ?) "
                    "ON CONFLICT (serial) DO UPDATE SET reason = excluded.reason",
                    (str(serial), reason),
                )
            return self._increment_counter(tx, CRL_NUMBER)

    def revoke_many(
        self, serial_list: list[int], revocation_date: int, expiration_date: int
    ) -> tuple[int, int]:
        """Import revocations in one transaction; return (newly revoked, already revoked).

        crl_number is bumped once per new row, as if each had been revoked on its own."""
        newly_revoked = 0
        with self._transaction(CRL_LOCK) as tx:
            for serial in serial_list:
                if self._insert_revocation(tx, serial, revocation_date, expiration_date):
                    newly_revoked += 1
                    self._increment_counter(tx, CRL_NUMBER)
        return newly_revoked, len(serial_list) - newly_revoked

    def _insert_revocation(
        self, tx: Connection, serial: int, revocation_date: int, expiration_date: int
    ) -> bool:
        cursor = tx.execute(
            f"INSERT INTO {self._table('revoked')} "
            "(serial, revocation_date, expiration_date) VALUES (?, ?, ?) "
            "ON CONFLICT (serial) DO NOTHING",
            (str(serial), revocation_date, expiration_date),
        )
        if cursor.rowcount != 1:
            return False
        inventory.mark_revoked(tx, self._prefix, serial, revocation_date)
        return True

    def get_revoked(self, now: int) -> list[tuple[int, int]]:
        """(serial, revocation date) in insertion order, after deleting expired rows.

        Rows whose serial is not a non-negative decimal integer (written by the reference
        from bad input) are skipped, never fatal."""
        table = self._table("revoked")
        expired = f"FROM {table} WHERE expiration_date < ?"
        if self._select_one(f"SELECT 1 {expired} LIMIT 1", (now,)) is not None:
            with self._transaction(CRL_LOCK) as tx:
                tx.execute(
                    f"DELETE FROM {self._table(REASON_SUFFIX)} "
                    f"WHERE serial IN (SELECT serial {expired})",
                    (now,),
                )
                tx.execute(f"DELETE {expired}", (now,))
        # Read outside the write transaction (unless called inside one): other writers need
        # not wait for a big read. PostgreSQL keeps no insertion order: revocation order
        # is as deterministic, for the CRLs every node signs alike.
        order = "revocation_date, serial" if self._database.strict_types else "rowid"
        rows = self._select_all(f"SELECT serial, revocation_date FROM {table} ORDER BY {order}")
        revoked = []
        for serial, revocation_date in rows:
            text = serial if isinstance(serial, str) else as_text(serial)
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
            int(text): int(reason)
            for text, reason in ((as_text(serial), reason) for serial, reason in rows)
            if text.isdigit() and text.isascii() and isinstance(reason, int)
        }

    def earliest_revocation_expiry(self) -> int | None:
        """The first expiration_date of the revoked table (None when no row has one): until
        then get_revoked lists the same rows, unless a revocation is added (the CRL cache
        reuses its entries on that ground)."""
        row = self._select_one(f"SELECT MIN(expiration_date) FROM {self._table('revoked')}")
        return None if row is None or row[0] is None else int(as_text(row[0]))

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
            0 if number is None else int(as_text(number)),
            None if last_update is None else int(as_text(last_update)),
        )

    def start_crl_generation(self, last_update: int) -> int:
        """Increment crl_number and store crl_last_update in one transaction; return the number."""
        with self._transaction(CRL_LOCK) as tx:
            number = self._increment_counter(tx, CRL_NUMBER)
            self._set_config(tx, CRL_LAST_UPDATE, str(last_update))
        return number

    def set_crl_state(self, number: int, last_update: int) -> None:
        with self._transaction(CRL_LOCK) as tx:
            tx.execute(
                f"INSERT INTO {self._table('counter')} (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (CRL_NUMBER, number),
            )
            self._set_config(tx, CRL_LAST_UPDATE, str(last_update))

    @contextlib.contextmanager
    def crl_generation(self) -> Iterator[None]:
        """One transaction holding the `crl` lock: every read and write of this storage in
        the block (state, revocations, issued CRLs) happens in it, on one node at a time."""
        with self._transaction(CRL_LOCK):
            yield

    def get_issued_crls(self) -> dict[int, IssuedCRL]:
        """The stored CRL of each CA, by authority key id."""
        rows = self._select_all(
            "SELECT authority_key_id, crl_number, this_update, crl "
            f"FROM {self._table(ISSUED_CRL_SUFFIX)}"
        )
        return {
            int(as_text(key_id)): (int(as_text(number)), int(as_text(this_update)), as_bytes(crl))
            for key_id, number, this_update, crl in rows
        }

    def store_issued_crl(self, authority_key_id: int, issued: IssuedCRL) -> None:
        """Replace the stored CRL of a CA (inside crl_generation)."""
        number, this_update, pem = issued
        with self._transaction(CRL_LOCK) as tx:
            tx.execute(
                f"INSERT INTO {self._table(ISSUED_CRL_SUFFIX)} "
                "(authority_key_id, crl_number, this_update, crl) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (authority_key_id) DO UPDATE SET crl_number = excluded.crl_number, "
                "this_update = excluded.this_update, crl = excluded.crl",
                (str(authority_key_id), number, this_update, pem),
            )

    def forget_issued_crls(self, older_than: int) -> None:
        """Delete the stored CRLs whose thisUpdate is before `older_than` (inside
        crl_generation)."""
        with self._transaction(CRL_LOCK) as tx:
            tx.execute(
                f"DELETE FROM {self._table(ISSUED_CRL_SUFFIX)} WHERE this_update < ?",
                (older_than,),
            )


class _RevokedSerials:
    """RevocationRows.revoked_serials: a container over the revoked table."""

    def __init__(self, storage: RevocationRows, now: int) -> None:
        self._storage = storage
        self._now = now

    def __contains__(self, serial: object) -> bool:
        return isinstance(serial, int) and self._storage._is_revoked(serial, self._now)
