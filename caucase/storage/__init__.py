"""Storage of the CA state: rows, not policy. No SQL leaves this package.

One interface (``engine``), two engines: SQLite, a file (the default), and PostgreSQL, a
``postgresql://`` URL shared by several caucased. Storage modules run unchanged on both.

- ``engine``: the interface (connections, locks, portable SQL rules), and which engine a
  --db value names.
- ``database``: the SQLite engine, owner of one database file (read pool, group committer,
  lock); ``connection``: its connection settings and read pool; ``group_commit``:
  concurrent writers sharing one durable commit (on either engine).
- ``postgresql``: the PostgreSQL engine (pool, advisory locks, schema catalog, dumps);
  ``postgresql_sql``: portable SQL rewritten for it; ``postgresql_batch``: its writers of
  one lock sharing a transaction.
- ``authority``: the tables of one CA instance (the reference's schema); ``rows``: what its
  table sets share; ``revocations``: its revocations, CRL numbers and issued CRLs.
- ``renewal``: the renewal index of each CA (certificates by certID, windows operators
  moved forward), a table of ours beside the reference's.
- ``inventory``: every certificate each CA issued, for good, listed page by page (a
  table of ours too).
- ``cluster``: what the caucased nodes of one database share besides the CAs (CORS
  secrets, backup turns).
- ``schema``: the SQL text of the CA tables and our extra indexes and tables.
- ``copy``: a whole database copied between engines (and into SQLite for dumps).
- ``restore``: rebuilding a database from a backup, limited to the statements a dump holds.
- ``acme``: the ACME state of the CAS (credentials, accounts, orders, nonces), in tables
  of its own (``acme_schema``) that the reference ignores.

Database failures leave this package as ``StorageError``.
"""

from caucase.storage.authority import CAVersion, StaleCAList, Storage
from caucase.storage.database import Database, DatabaseInUse
from caucase.storage.engine import (
    Engine,
    IntegrityError,
    create_database,
    describe,
    exists,
    is_url,
    open_database,
)
from caucase.storage.restore import restore_database, restored_database
from caucase.storage.schema import schema_statements

__all__ = [
    "CAVersion",
    "Database",
    "DatabaseInUse",
    "Engine",
    "IntegrityError",
    "StaleCAList",
    "Storage",
    "create_database",
    "describe",
    "exists",
    "is_url",
    "open_database",
    "restore_database",
    "restored_database",
    "schema_statements",
]
