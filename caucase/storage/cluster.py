"""What the caucased nodes of one database share besides the CAs: the secrets signing CORS
consent tokens (a token one node signed verifies on every other), and turns at periodic
tasks, so that one node of the cluster makes each periodic backup.

Our own tables (the reference ignores them): ``caucased_cors_secret`` and
``caucased_claim``. Times are integer Unix seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from caucase.storage.engine import Engine

CORS_TABLE = "caucased_cors_secret"
CLAIM_TABLE = "caucased_claim"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {CORS_TABLE} (secret BLOB PRIMARY KEY, expiration_date INTEGER)",
    f"CREATE TABLE IF NOT EXISTS {CLAIM_TABLE} (name TEXT PRIMARY KEY, value INTEGER)",
)

# (expiration date, secret) pairs, oldest expiration first.
Secrets = list[tuple[int, bytes]]


class ClusterState:
    """The shared tables of the caucased nodes of one database."""

    def __init__(self, database: Engine) -> None:
        self._database = database
        with database.writing() as connection:
            for statement in _SCHEMA:
                connection.execute(statement)

    def cors_secrets(self) -> Secrets:
        with self._database.reading() as connection:
            rows = connection.execute(
                f"SELECT expiration_date, secret FROM {CORS_TABLE} ORDER BY expiration_date"
            ).fetchall()
        return [(int(expiration), bytes(secret)) for expiration, secret in rows]

    def update_cors_secrets(self, update: Callable[[Secrets], Secrets]) -> Secrets:
        """Replace the secrets by `update(current secrets)`, one node at a time; return
        the new ones."""
        with self._database.writing(lock="caucased:cors") as connection:
            rows = connection.execute(
                f"SELECT expiration_date, secret FROM {CORS_TABLE} ORDER BY expiration_date"
            ).fetchall()
            current = [(int(expiration), bytes(secret)) for expiration, secret in rows]
            wanted = update(current)
            for _, secret in set(current) - set(wanted):
                connection.execute(f"DELETE FROM {CORS_TABLE} WHERE secret = ?", (secret,))
            for expiration, secret in set(wanted) - set(current):
                connection.execute(
                    f"INSERT INTO {CORS_TABLE} (secret, expiration_date) VALUES (?, ?)",
                    (secret, expiration),
                )
        return sorted(wanted)

    def claim_turn(self, name: str, now: int, period: int) -> tuple[bool, int]:
        """Take the turn `name` unless another node took it less than `period` seconds
        ago: (whether this node has it, when the next turn is due)."""
        with self._database.writing(lock="caucased:claim") as connection:
            row = connection.execute(
                f"SELECT value FROM {CLAIM_TABLE} WHERE name = ?", (name,)
            ).fetchone()
            last = None if row is None or row[0] is None else int(row[0])
            if last is not None and now < last + period:
                return False, last + period
            connection.execute(
                f"INSERT INTO {CLAIM_TABLE} (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, now),
            )
        return True, now + period

    def release_turn(self, name: str, claimed: int) -> None:
        """Give back a turn taken at `claimed` that came to nothing: the next node to try
        takes it at once."""
        with self._database.writing(lock="caucased:claim") as connection:
            connection.execute(
                f"DELETE FROM {CLAIM_TABLE} WHERE name = ? AND value = ?", (name, claimed)
            )
