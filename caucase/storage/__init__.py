"""Storage of the CA state: rows, not policy. No SQL leaves this package.

- ``database``: the owner of one database file (read pool, group committer, lock),
  closed as a whole; database failures leave it as ``StorageError``.
- ``sqlite``: the tables of one CA instance in an SQLite file (the reference's schema).
- ``schema``: the SQL text of those tables and our extra indexes.
- ``connection``: connection settings and the read pool.
- ``group_commit``: concurrent writers sharing one synchronous commit.
- ``restore``: rebuilding a database from a backup, limited to the statements a dump holds.
- ``acme``: the ACME state of the CAS (credentials, accounts, orders, nonces), in tables
  of its own (``acme_schema``) that the reference ignores.
"""

from caucase.storage.database import Database, DatabaseInUse
from caucase.storage.restore import restore_database, restored_database
from caucase.storage.schema import schema_statements
from caucase.storage.sqlite import Storage

__all__ = [
    "Database",
    "DatabaseInUse",
    "Storage",
    "restore_database",
    "restored_database",
    "schema_statements",
]
