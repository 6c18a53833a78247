"""caucased's backup schedule: retries on the period's scale, a log line per backup,
pruning of our own old backups, and database failures that do not escape."""

from __future__ import annotations

import datetime
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from caucase.backup_schedule import BackupSchedule
from caucase.ca import CertificateAuthority
from caucase.storage import Storage
from tests.conftest import FakeClock
from tests.support.ca_helpers import generate_keys, make_csr, name, signed


@pytest.fixture
def cau_storage(tmp_path: Path) -> Iterator[Storage]:
    storage = Storage(str(tmp_path / "caucase.sqlite"), "cau", enforce_unique_key_id=True)
    yield storage
    storage.close()


@pytest.fixture
def cau(cau_storage: Storage, clock: FakeClock) -> CertificateAuthority:
    return CertificateAuthority(cau_storage, name("Caucase CAU at test"), 2048, 93, clock=clock)


@pytest.fixture
def with_user(cau: CertificateAuthority) -> CertificateAuthority:
    signed(cau, make_csr(generate_keys(1)[0], "alice"))
    return cau


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir()
    return path


def schedule(
    directory: Path, cau: CertificateAuthority, storage: Storage, period: float = 1, keep: int = 0
) -> BackupSchedule:
    return BackupSchedule(str(directory), period, cau, storage, keep=keep)


def test_without_users_a_short_period_retries_after_one_period(
    directory: Path,
    cau: CertificateAuthority,
    cau_storage: Storage,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = clock()
    due = schedule(directory, cau, cau_storage, period=0.01).run(now)
    assert due == now + datetime.timedelta(seconds=864)
    assert capsys.readouterr().err.startswith("Backup skipped: ")
    assert list(directory.iterdir()) == []


def test_without_users_a_long_period_retries_within_the_hour(
    directory: Path, cau: CertificateAuthority, cau_storage: Storage, clock: FakeClock
) -> None:
    now = clock()
    assert schedule(directory, cau, cau_storage, period=7).run(now) == now + datetime.timedelta(
        hours=1
    )


def test_a_written_backup_is_logged(
    directory: Path,
    with_user: CertificateAuthority,
    cau_storage: Storage,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = clock()
    due = schedule(directory, with_user, cau_storage, period=2).run(now)
    assert due == now + datetime.timedelta(days=2)
    written = directory / "20261127120000.sql.caucased"
    assert [path.name for path in directory.iterdir()] == [written.name]
    assert capsys.readouterr().err == f"Backup written: {written}\n"


def _foreign_files(directory: Path) -> set[str]:
    """Files a backup directory may hold that are not caucased's backups."""
    (directory / "notes.txt").write_text("keep me")
    (directory / "20200101000000.sql.caucased.bak").write_text("keep me")
    (directory / "2020010100000.sql.caucased").write_text("13 digits")
    (directory / "20190101000000.sql.caucased").mkdir()
    (directory / "20180101000000.sql.caucased").symlink_to("notes.txt")
    return {path.name for path in directory.iterdir()}


def test_keep_prunes_only_our_oldest_backups(
    directory: Path,
    with_user: CertificateAuthority,
    cau_storage: Storage,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    foreign = _foreign_files(directory)
    for stamp in ("20260101000000", "20260201000000", "20260301000000"):
        (directory / f"{stamp}.sql.caucased").write_bytes(b"old backup")
    schedule(directory, with_user, cau_storage, keep=2).run(clock())
    remaining = {path.name for path in directory.iterdir()}
    assert remaining == foreign | {"20260301000000.sql.caucased", "20261127120000.sql.caucased"}
    err = capsys.readouterr().err
    assert f"Backup pruned: {directory / '20260101000000.sql.caucased'}\n" in err
    assert f"Backup pruned: {directory / '20260201000000.sql.caucased'}\n" in err


def test_keep_one_keeps_the_new_backup_even_behind_a_newer_name(
    directory: Path, with_user: CertificateAuthority, cau_storage: Storage, clock: FakeClock
) -> None:
    (directory / "20990101000000.sql.caucased").write_bytes(b"from a clock ahead")
    schedule(directory, with_user, cau_storage, keep=1).run(clock())
    assert [path.name for path in directory.iterdir()] == ["20261127120000.sql.caucased"]


def test_keep_zero_keeps_every_backup(
    directory: Path, with_user: CertificateAuthority, cau_storage: Storage, clock: FakeClock
) -> None:
    (directory / "20260101000000.sql.caucased").write_bytes(b"old backup")
    schedule(directory, with_user, cau_storage, keep=0).run(clock())
    assert len(list(directory.iterdir())) == 2


def test_a_database_failure_is_logged_and_retried(
    directory: Path,
    with_user: CertificateAuthority,
    cau_storage: Storage,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Another program breaks the database under the server: its certificate table is gone.
    outside = sqlite3.connect(tmp_path / "caucase.sqlite", isolation_level=None)
    outside.execute("ALTER TABLE caucrt RENAME TO caucrt_away")
    backups = schedule(directory, with_user, cau_storage, period=0.01)
    now = clock()
    assert backups.run(now) == now + datetime.timedelta(seconds=864)
    err = capsys.readouterr().err
    assert err.startswith("Backup failed: ") and err.endswith("; retrying in 864 s\n")
    assert err.count("\n") == 1
    assert os.listdir(directory) == []
    outside.execute("ALTER TABLE caucrt_away RENAME TO caucrt")
    outside.close()
    later = clock.advance(seconds=864)
    assert backups.run(later) == later + datetime.timedelta(days=0.01)
    assert capsys.readouterr().err.startswith("Backup written: ")
