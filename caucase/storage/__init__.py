"""Storage of the CA state: rows, not policy.

- ``sqlite``: the tables of one CA instance in an SQLite file (the reference's schema).
- ``schema``: the SQL text of those tables and our extra indexes.
- ``connection``: connections, the pool and the group committers of a database file.
- ``group_commit``: concurrent writers sharing one synchronous commit.
"""

from caucase.storage.sqlite import Storage, restore_database

__all__ = ["Storage", "restore_database"]
