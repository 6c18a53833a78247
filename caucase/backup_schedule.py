"""caucased's periodic encrypted backups (cli 8.4, ca-profile 6.1, errata 2).

Backups are written inside the backup directory under a temporary 0600 name, then renamed
to `<UTC YYYYmmddHHMMSS>.sql.caucased`, so a reader never sees a partial file. Each backup
written is logged. A backup that cannot be made (no user yet, database or disk failure)
is logged and tried again on the period's scale: it never stops the server. With a keep
count, older backups are pruned after each new one; only files named as caucased names
its backups are ever deleted, never the one just written. Users whose key cannot decrypt
(Ed25519 can only sign) are no recipients; caucased says so once, not at every backup.

When several caucased share the database, each period's backup is made by the first node
to claim it in the database; a claim that comes to nothing is given back.
"""

from __future__ import annotations

import datetime
import glob
import os
import re
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Iterator

from cryptography import x509

from caucase import backup, events
from caucase.audit import event
from caucase.ca import CertificateAuthority
from caucase.clock import from_timestamp, to_timestamp
from caucase.exceptions import BackupError, CaucaseError
from caucase.http.server import write_line
from caucase.storage import Storage
from caucase.storage.cluster import ClusterState

SUFFIX = ".sql.caucased"
BACKUP_NAME = re.compile(r"\d{14}" + re.escape(SUFFIX))
# A failed or skipped backup is retried after one period, but never later than this.
MAX_RETRY_DELAY = datetime.timedelta(hours=1)
# What a background task of caucased survives (logged, then retried): database failures
# (sqlite3.Error until storage reports them all as StorageError, a CaucaseError), and
# file system or network ones.
TASK_ERRORS = (CaucaseError, OSError, sqlite3.Error)
# The turn of the cluster's nodes at periodic backups (caucase.storage.cluster).
BACKUP_TURN = "backup"


def check_backup_directory(path: str) -> str | None:
    """Why `path` cannot hold backups, or None when it can."""
    if not os.path.isdir(path):
        return f"backup directory {path!r} does not exist or is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"backup directory {path!r} is not writable"
    return None


def describe_delay(delay: datetime.timedelta) -> str:
    """A delay as a log line says it: whole seconds."""
    return f"{delay.total_seconds():.0f} s"


def newest_backup(directory: str) -> datetime.datetime | None:
    """The ctime of the newest backup in `directory`, None when there is none."""
    ctimes = []
    for path in glob.glob(os.path.join(glob.escape(directory), "*" + SUFFIX)):
        try:
            ctimes.append(os.stat(path).st_ctime)
        except OSError:
            continue
    return from_timestamp(max(ctimes)) if ctimes else None


class BackupSchedule:
    """When the next backup is due, how to make one, and which old ones to prune."""

    def __init__(
        self,
        directory: str,
        period_days: float,
        cau: CertificateAuthority,
        storage: Storage,
        keep: int = 0,
        cluster: ClusterState | None = None,
        observer: events.Observer = events.NULL_OBSERVER,
    ) -> None:
        """`keep` is how many backups to keep, the new one included; 0 keeps them all.
        With `cluster`, nodes sharing the database take turns: one backup per period.
        `observer` hears of each backup written."""
        self._directory = directory
        self._period = datetime.timedelta(days=period_days)
        self._retry_delay = min(self._period, MAX_RETRY_DELAY)
        self._cau = cau
        self._storage = storage
        self._keep = keep
        self._cluster = cluster
        self._skip_reported = False
        self._observer = observer

    def first_due(self, now: datetime.datetime) -> datetime.datetime:
        """Newest existing backup's ctime plus one period, or now when there is none."""
        newest = newest_backup(self._directory)
        return now if newest is None else newest + self._period

    def run(self, now: datetime.datetime) -> datetime.datetime:
        """Make one backup, then prune; return when the next backup is due."""
        name = now.strftime("%Y%m%d%H%M%S") + SUFFIX
        path = os.path.join(self._directory, name)
        retry = describe_delay(self._retry_delay)
        claimed = False
        try:
            turn = self._claim(now)
            if turn is not None:
                return turn
            claimed = self._cluster is not None
            self._write(path)
        except BackupError as error:
            write_line(sys.stderr, f"Backup skipped: {error}; retrying in {retry}\n")
        except TASK_ERRORS as error:
            write_line(sys.stderr, f"Backup failed: {error}; retrying in {retry}\n")
        else:
            write_line(sys.stderr, f"Backup written: {path}\n")
            if self._keep:
                self._prune(name)
            return now + self._period
        if claimed:
            self._give_back(now)
        return now + self._retry_delay

    def _claim(self, now: datetime.datetime) -> datetime.datetime | None:
        """None when this node is to write this period's backup, else when to try again
        (another node claimed the period)."""
        if self._cluster is None:
            return None
        period = int(self._period.total_seconds())
        mine, due = self._cluster.claim_turn(BACKUP_TURN, to_timestamp(now), period)
        if mine:
            return None
        next_turn = from_timestamp(due)
        write_line(sys.stderr, f"Backup left to another caucased, next due {next_turn:%c} UTC\n")
        return next_turn

    def _give_back(self, now: datetime.datetime) -> None:
        """Release a claim that produced no backup, so that another node takes it."""
        assert self._cluster is not None
        try:
            self._cluster.release_turn(BACKUP_TURN, to_timestamp(now))
        except TASK_ERRORS as error:
            write_line(sys.stderr, f"Backup claim not released: {error}\n")

    def _report_skipped(self, certificate: x509.Certificate, reason: str) -> None:
        if self._skip_reported:
            return
        self._skip_reported = True
        write_line(
            sys.stderr,
            f"Backups are not encrypted for {certificate.subject.rfc4514_string()!r} "
            f"(nor for other users with such keys): {reason}\n",
        )

    def _write(self, target: str) -> None:
        fd, temporary = tempfile.mkstemp(prefix=".caucase_backup_", dir=self._directory)
        recipients: list[str] = []
        try:
            with os.fdopen(fd, "wb") as output:
                backup.write_backup(
                    output,
                    self._storage.dump(),
                    self._recipients(recipients),
                    on_skip=self._report_skipped,
                )
                output.flush()
                os.fsync(output.fileno())
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
        self._observer.notify(event("backup-written", path=target, recipients=recipients))

    def _recipients(self, subjects: list[str]) -> Iterator[x509.Certificate]:
        """The CAU's valid certificates, noting their subjects for the audit log."""
        for certificate in self._cau.iter_valid_certificates():
            subjects.append(certificate.subject.rfc4514_string())
            yield certificate

    def _prune(self, written: str) -> None:
        """Delete our oldest backups beyond the keep count; a failure is one log line."""
        try:
            older = sorted(name for name in self._own_backups() if name != written)
            for name in older[: max(len(older) - (self._keep - 1), 0)]:
                os.unlink(os.path.join(self._directory, name))
                write_line(sys.stderr, f"Backup pruned: {os.path.join(self._directory, name)}\n")
        except OSError as error:
            write_line(sys.stderr, f"Backup pruning failed: {error}\n")

    def _own_backups(self) -> list[str]:
        """Regular files named `<14 digits>.sql.caucased`: what caucased itself writes.
        The timestamp in the name orders them."""
        found = []
        with os.scandir(self._directory) as entries:
            for entry in entries:
                if BACKUP_NAME.fullmatch(entry.name) and stat.S_ISREG(
                    entry.stat(follow_symlinks=False).st_mode
                ):
                    found.append(entry.name)
        return found
