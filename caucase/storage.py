"""SQLite storage, schema-compatible with the reference database (ca-profile 5).

Knows rows, not policy. Every time is passed in as integer Unix seconds.
INTERFACE STUB: bodies to be written.
"""

from __future__ import annotations

from typing import Iterator


class Storage:
    """The six tables of one CA instance (prefix `cau`, `cas`, `http_cas`) in one SQLite file."""

    def __init__(
        self,
        db_path: str,
        table_prefix: str,
        max_csr_amount: int = 50,
        crt_keep_time: float = 1,
        crt_read_keep_time: float = 0.05,
        enforce_unique_key_id: bool = False,
    ) -> None:
        """Keep times are in days. Creates the file 0600 and the tables if missing."""
        raise NotImplementedError

    def close(self) -> None:
        """Close this thread's connection."""
        raise NotImplementedError

    # CA key pairs
    def get_ca_key_pairs(self, now: int) -> list[tuple[bytes, bytes]]:
        """(key PEM, certificate PEM) ordered by expiration, after deleting expired rows."""
        raise NotImplementedError

    def append_ca_key_pair(self, expiration_date: int, key_pem: bytes, crt_pem: bytes) -> None:
        raise NotImplementedError

    # CSRs and certificates
    def append_csr(
        self, csr_pem: bytes, key_id: str, now: int, override_limits: bool = False
    ) -> tuple[int, int | None]:
        """Store a CSR; return (id, received_csr counter value if this insert was counted, else None).

        A byte-identical stored CSR returns its id and None. Raises NoStorage past the pending
        quota (unless override_limits), KeyAlreadyUsed on a unique key id clash. Purges expired
        signed rows in the same transaction."""
        raise NotImplementedError

    def get_csr(self, csr_id: int) -> bytes:
        """NotFound if unknown."""
        raise NotImplementedError

    def get_pending_csr_list(self) -> list[tuple[int, bytes]]:
        """(id, CSR PEM) of every unsigned row, ascending id."""
        raise NotImplementedError

    def delete_pending_csr(self, csr_id: int) -> None:
        """NotFound unless the row exists and is pending."""
        raise NotImplementedError

    def store_certificate(self, csr_id: int, crt_pem: bytes, now: int) -> None:
        """Attach a certificate to a pending row; NotFound unless pending."""
        raise NotImplementedError

    def get_certificate(self, csr_id: int, now: int) -> bytes:
        """NotFound unless signed; shortens the row's keep time to the read keep time."""
        raise NotImplementedError

    def get_certificate_by_key_id(self, key_id: str) -> bytes:
        """Certificate of the signed row holding this key id; NotFound otherwise."""
        raise NotImplementedError

    def iter_certificates(self) -> Iterator[bytes]:
        """Every stored certificate PEM, ascending row id."""
        raise NotImplementedError

    # Revocations and CRL bookkeeping
    def revoke(self, serial: int, revocation_date: int, expiration_date: int) -> None:
        """Insert a revocation and bump crl_number in one transaction; Found if already there."""
        raise NotImplementedError

    def revoke_many(
        self, serial_list: list[int], revocation_date: int, expiration_date: int
    ) -> tuple[int, int]:
        """Import revocations in one transaction; return (newly revoked, already revoked)."""
        raise NotImplementedError

    def get_revoked(self, now: int) -> list[tuple[int, int]]:
        """(serial, revocation date) in insertion order, after deleting expired rows.

        Rows whose serial is not a non-negative decimal integer (written by the reference
        from bad input) are skipped, never fatal."""
        raise NotImplementedError

    def get_crl_state(self) -> tuple[int, int | None]:
        """(crl_number, crl_last_update or None)."""
        raise NotImplementedError

    def start_crl_generation(self, last_update: int) -> int:
        """Increment crl_number and store crl_last_update in one transaction; return the number."""
        raise NotImplementedError

    def set_crl_state(self, number: int, last_update: int) -> None:
        raise NotImplementedError

    # Auto-approval
    def get_locked_auto_sign_amount(self) -> int | None:
        raise NotImplementedError

    def lock_auto_sign_amount(self, amount: int) -> None:
        """First write wins forever."""
        raise NotImplementedError

    # Whole-file operations
    def dump(self) -> Iterator[str]:
        """SQL statements rebuilding the whole database file (every prefix), from one snapshot."""
        raise NotImplementedError


def restore_database(db_path: str, statements: Iterator[str]) -> None:
    """Create `db_path` (0600, must not exist) from dump statements, all or nothing:
    on any error the file is removed and the error re-raised."""
    raise NotImplementedError
