"""The whole content of a caucase SQLite database, read without touching it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

Rows = dict[str, list[tuple[object, ...]]]


def read_rows(db: Path) -> Rows:
    """Every row of every table, sorted, from a read-only connection."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        query = "SELECT name FROM sqlite_master WHERE type='table'"
        names = sorted(row[0] for row in connection.execute(query))
        return {
            name: sorted(connection.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
            for name in names
        }
    finally:
        connection.close()
