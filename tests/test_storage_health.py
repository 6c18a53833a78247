"""Engine.check_writable, the probe behind /health's database:writable (issue 13)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from caucase.exceptions import StorageError
from caucase.storage import Storage, open_database
from caucase.storage.postgresql import PostgresDatabase


def test_sqlite_fails_while_the_file_is_immutable_and_leaves_nothing(tmp_path: Path) -> None:
    """chattr +i: the test runs as root, whom a read-only mode would not stop."""
    path = str(tmp_path / "caucase.sqlite")
    database = open_database(path, exclusive=True)
    try:
        Storage(database, "cas")
        database.check_writable()
        subprocess.run(["chattr", "+i", path], check=True)
        try:
            with pytest.raises(StorageError, match="not writable"):
                database.check_writable()
        finally:
            subprocess.run(["chattr", "-i", path], check=True)
        database.check_writable()
        with database.reading() as connection:
            assert not database.has_table(connection, "caucase_health_probe")
    finally:
        database.close()


def test_postgresql_fails_on_a_read_only_database(postgres_url: str) -> None:
    database = PostgresDatabase(postgres_url)
    try:
        Storage(database, "cas")  # caucased's tables, as at its start
        database.check_writable()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            name = admin.info.dbname
            admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        try:
            fresh = PostgresDatabase(postgres_url)  # the setting applies to new sessions
            try:
                with pytest.raises(StorageError):
                    fresh.check_writable()
            finally:
                fresh.close()
        finally:
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute("SET default_transaction_read_only = off")
                admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        database.check_writable()
    finally:
        database.close()
