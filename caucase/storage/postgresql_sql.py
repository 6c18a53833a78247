"""Portable SQL (caucase.storage.engine) as PostgreSQL runs it: placeholders, column types,
and the schema statements that the PostgreSQL engine records for its SQLite-dialect dumps.

Storage modules write SQL once, as SQLite takes it; this module rewrites it for psycopg:
``?`` becomes ``%s`` (and a literal ``%`` doubles), and a CREATE TABLE gets PostgreSQL column
types: INTEGER is BIGINT (SQLite integers are 64-bit), BLOB is BYTEA, REAL is DOUBLE
PRECISION. The reference's tables declare TEXT where caucase stores bytes (SQLite keeps any
type in any column): their PostgreSQL types come from ``schema.POSTGRESQL_COLUMN_TYPES``, so
that a dump holds the same BLOB values as an SQLite file.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from caucase.storage.schema import reference_column_types

_TYPES = {"INTEGER": "BIGINT", "INT": "BIGINT", "BLOB": "BYTEA", "REAL": "DOUBLE PRECISION"}
_NAME = r'"?([A-Za-z_][A-Za-z0-9_]*)"?'
_CREATE_TABLE = re.compile(
    rf"\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\s*\((.*)\)\s*;?\s*\Z", re.S | re.I
)
_CREATE_INDEX = re.compile(
    rf"\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\s+ON\s+{_NAME}", re.I
)
_DROP = re.compile(rf"\s*DROP\s+(TABLE|INDEX)\s+(IF\s+EXISTS\s+)?{_NAME}\s*;?\s*\Z", re.I)
_TABLE_CONSTRAINTS = ("PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "CONSTRAINT")


@dataclasses.dataclass(frozen=True)
class SchemaChange:
    """A statement changing the schema: what it creates or drops, and its PostgreSQL text."""

    action: str  # "create" or "drop"
    kind: str  # "table" or "index"
    name: str
    table: str | None
    sql: str
    # The statement as written (for SQLite): what the catalog records for dumps.
    original: str


def _split_columns(body: str) -> list[str]:
    """The comma-separated parts of a column list, commas inside parentheses kept."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in body:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _column(definition: str, overrides: dict[str, str]) -> str:
    words = definition.split(None, 2)
    if words[0].upper() in _TABLE_CONSTRAINTS or len(words) < 2:
        return definition
    name = words[0].strip('"')
    declared = words[1]
    column_type = overrides.get(name.lower()) or _TYPES.get(declared.upper(), declared)
    return " ".join([words[0], column_type, *words[2:]])


def _create_table(match: re.Match[str]) -> SchemaChange:
    if_not_exists, name, body = match.groups()
    overrides = reference_column_types(name.lower())
    columns = ",\n  ".join(_column(part, overrides) for part in _split_columns(body))
    sql = f"CREATE TABLE {if_not_exists or ''}{name} (\n  {columns}\n)"
    return SchemaChange("create", "table", name.lower(), name.lower(), sql, match.string)


@functools.lru_cache(maxsize=64)
def schema_change(sql: str) -> SchemaChange | None:
    """What `sql` does to the schema, with its PostgreSQL text; None for other statements."""
    match = _CREATE_TABLE.match(sql)
    if match is not None:
        return _create_table(match)
    match = _CREATE_INDEX.match(sql)
    if match is not None:
        _, _, name, table = match.groups()
        return SchemaChange("create", "index", name.lower(), table.lower(), sql.strip(), sql)
    match = _DROP.match(sql)
    if match is not None:
        kind, _, name = match.groups()
        return SchemaChange("drop", kind.lower(), name.lower(), None, sql.strip(), sql)
    return None


@functools.lru_cache(maxsize=1024)
def placeholders(sql: str) -> str:
    """`?` outside quotes becomes `%s`; every literal `%` doubles (psycopg's format)."""
    out = []
    quote: str | None = None
    for char in sql:
        if char == "%":
            out.append("%%")
        elif quote is not None:
            out.append(char)
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        else:
            out.append(char)
    return "".join(out)
