"""The SQL schema of one CA instance, laid out like the reference's (ca-profile 5.2), and
our own tables beside it."""

from __future__ import annotations

# Column lists in the reference order; the DDL text layout is part of the dump (errata 9).
_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ca", ("expiration_date INTEGER", "key TEXT", "crt TEXT")),
    (
        "crt",
        (
            "id INTEGER PRIMARY KEY",
            "key_id TEXT {unique}",
            "expiration_date INTEGER",
            "csr TEXT",
            "crt TEXT",
        ),
    ),
    ("revoked", ("serial TEXT PRIMARY KEY", "revocation_date INTEGER", "expiration_date INTEGER")),
    ("counter", ("name TEXT PRIMARY KEY", "value INTEGER")),
    ("config_once", ("name TEXT PRIMARY KEY", "value TEXT")),
    ("config", ("name TEXT PRIMARY KEY", "value TEXT")),
)


# Why a certificate was revoked (RFC 5280 5.3.1 reasonCode, as its integer), for the
# revocations that give one (ACME revokeCert): the reference's revoked table has no column
# for it. The reference ignores this table; its dumps carry it.
REASON_SUFFIX = "_revocation_reason"
_REASON_COLUMNS = ("serial TEXT PRIMARY KEY", "reason INTEGER NOT NULL")

# The CA instances of caucased, each one set of tables in the shared file.
TABLE_PREFIXES = ("cau", "cas", "http_cas")
TABLE_SUFFIXES = tuple(suffix for suffix, _ in _TABLES)
# Older versions kept their CRLs in this table (ca-profile 5.4).
LEGACY_CRL_SUFFIX = "crl"
# The CRL each CA serves now, with its number, shared by every caucased of a database
# (one CRL per CRL number); the reference ignores the table.
ISSUED_CRL_SUFFIX = "_issued_crl"
# The reference declares TEXT where it stores bytes, which SQLite keeps as BLOBs: these
# are their types on PostgreSQL, so that a dump from there holds the same values.
_BYTES_COLUMNS = {
    "ca": ("key", "crt"),
    "crt": ("key_id", "csr", "crt"),
    LEGACY_CRL_SUFFIX: ("crl",),
}


def schema_statements(table_prefix: str, enforce_unique_key_id: bool) -> list[str]:
    """The CREATE TABLE statements of one prefix, laid out like the reference's."""
    unique = "UNIQUE" if enforce_unique_key_id else ""
    statements = []
    for suffix, columns in _TABLES:
        body = ",\n".join(" " * 10 + column.format(unique=unique) for column in columns)
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table_prefix}{suffix} (\n{body}\n{' ' * 8})"
        )
    return statements


def reason_table_statement(table_prefix: str) -> str:
    """The revocation reason table of one prefix: an addition, like the indexes below."""
    columns = ", ".join(_REASON_COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS {table_prefix}{REASON_SUFFIX} ({columns})"


def index_statements(table_prefix: str, enforce_unique_key_id: bool) -> list[str]:
    """Indexes the reference lacks, so that no per-request query scans the crt table,
    and purging expired revocations does not scan the revoked table.

    SQLite maintains them whoever writes, and dumps carry them, so the reference still
    opens, backs up and restores these databases. A UNIQUE key_id is indexed already."""
    table = table_prefix + "crt"
    revoked = table_prefix + "revoked"
    statements = [
        f"CREATE INDEX IF NOT EXISTS {table}_expiration_date ON {table} (expiration_date)",
        f"CREATE INDEX IF NOT EXISTS {table}_pending ON {table} (id) WHERE crt IS NULL",
        f"CREATE INDEX IF NOT EXISTS {revoked}_expiration_date ON {revoked} (expiration_date)",
    ]
    if not enforce_unique_key_id:
        statements.append(f"CREATE INDEX IF NOT EXISTS {table}_key_id ON {table} (key_id)")
    return statements


def issued_crl_statement(table_prefix: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table_prefix}{ISSUED_CRL_SUFFIX} ("
        "authority_key_id TEXT PRIMARY KEY, crl_number INTEGER, this_update INTEGER, crl BLOB)"
    )


def reference_column_types(table: str) -> dict[str, str]:
    """PostgreSQL types of the byte columns of a reference table, by column; {} for any
    other table (its declared types are its real ones)."""
    for prefix in TABLE_PREFIXES:
        suffix = table[len(prefix) :] if table.startswith(prefix) else None
        if suffix in _BYTES_COLUMNS:
            return dict.fromkeys(_BYTES_COLUMNS[suffix], "BYTEA")
    return {}
