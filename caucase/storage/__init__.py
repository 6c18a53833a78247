"""Storage of the CA state: rows, not policy. No SQL leaves this package.

- ``database``: the owner of one database file (read pool, group committer, lock),
  closed as a whole; database failures leave it as ``StorageError``.
- ``sqlite``: the tables of one CA instance in an SQLite file (the reference's schema).
- ``schema``: the SQL text of those tables and our extra indexes.
- ``renewal``: the renewal index of each CA (certificates by certID, windows operators
  moved forward), a table of ours beside the reference's.
- ``connection``: connection settings and the read pool.
- ``group_commit``: concurrent writers sharing one synchronous commit.
- ``restore``: rebuilding a database from a backup, limited to the statements a dump holds.
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
