"""caucased's backups in a real process: the first one follows the first user on the
period's scale, each one is logged, a database failure is survived, old ones are pruned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.e2e.helpers import CAUCASED
from tests.support.servers import make_user, request, start_caucased
from tests.support.wait import poll


@pytest.mark.slow
def test_backups_survive_a_broken_database_and_keep_the_newest(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    # A 4.32 s period: also the delay before a skipped or failed backup is tried again.
    args = ["--backup-directory", str(backups), "--backup-period", "0.00005", "--backup-keep", "2"]
    running = start_caucased(CAUCASED, tmp_path, args)
    try:
        poll(lambda: "Backup skipped: " in running.stderr(), "the backup without users")
        make_user(running, tmp_path / "user.pem")
        poll(lambda: "Backup written: " in running.stderr(), "the first backup", 20)
        # Another program breaks the database: the table of user certificates is gone.
        outside = sqlite3.connect(tmp_path / "caucase.sqlite", isolation_level=None)
        outside.execute("ALTER TABLE caucrt RENAME TO caucrt_away")
        poll(lambda: "Backup failed: " in running.stderr(), "the failed backup", 20)
        assert running.process.poll() is None
        assert request(running, "GET", "/cas/crt/ca.crt.pem")[0] == 200
        outside.execute("ALTER TABLE caucrt_away RENAME TO caucrt")
        outside.close()
        poll(lambda: "Backup pruned: " in running.stderr(), "a pruned backup", 30)
    finally:
        assert running.stop() == 0
    written = running.stderr().count("Backup written: ")
    assert written >= 3
    assert len(list(backups.glob("*.sql.caucased"))) == 2
    assert not [path for path in backups.iterdir() if not path.name.endswith(".sql.caucased")]
