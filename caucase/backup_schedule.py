"""caucased's periodic encrypted backups (cli 8.4, ca-profile 6.1, errata 2).

Backups are written inside the backup directory under a temporary 0600 name, then renamed
to `<UTC YYYYmmddHHMMSS>.sql.caucased`, so a reader never sees a partial file. A backup
that cannot be made (no user yet, disk full, ...) is logged and tried again later: it
never stops the server. Users whose key cannot decrypt (Ed25519 can only sign) are no
recipients; caucased says so once, not at every backup.
"""

from __future__ import annotations

import datetime
import glob
import os
import sys
import tempfile

from cryptography import x509

from caucase import backup
from caucase.ca import CertificateAuthority
from caucase.clock import from_timestamp
from caucase.exceptions import BackupError, CaucaseError
from caucase.http.server import write_line
from caucase.storage import Storage

SUFFIX = ".sql.caucased"
RETRY_DELAY = datetime.timedelta(seconds=3600)


def check_backup_directory(path: str) -> str | None:
    """Why `path` cannot hold backups, or None when it can."""
    if not os.path.isdir(path):
        return f"backup directory {path!r} does not exist or is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"backup directory {path!r} is not writable"
    return None


class BackupSchedule:
    """When the next backup is due, and how to make one."""

    def __init__(
        self,
        directory: str,
        period_days: float,
        cau: CertificateAuthority,
        storage: Storage,
    ) -> None:
        self._directory = directory
        self._period = datetime.timedelta(days=period_days)
        self._cau = cau
        self._storage = storage
        self._skip_reported = False

    def first_due(self, now: datetime.datetime) -> datetime.datetime:
        """Newest existing backup's ctime plus one period, or now when there is none."""
        ctimes = []
        for path in glob.glob(os.path.join(glob.escape(self._directory), "*" + SUFFIX)):
            try:
                ctimes.append(os.stat(path).st_ctime)
            except OSError:
                continue
        if not ctimes:
            return now
        return from_timestamp(max(ctimes)) + self._period

    def run(self, now: datetime.datetime) -> datetime.datetime:
        """Make one backup; return when the next one is due."""
        name = now.strftime("%Y%m%d%H%M%S") + SUFFIX
        try:
            self._write(os.path.join(self._directory, name))
        except BackupError as error:
            write_line(sys.stderr, f"Backup skipped: {error}; retrying in 1 hour\n")
            return now + RETRY_DELAY
        except (OSError, CaucaseError) as error:
            write_line(sys.stderr, f"Backup failed: {error}; retrying in 1 hour\n")
            return now + RETRY_DELAY
        return now + self._period

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
        try:
            with os.fdopen(fd, "wb") as output:
                backup.write_backup(
                    output,
                    self._storage.dump(),
                    self._cau.iter_valid_certificates(),
                    on_skip=self._report_skipped,
                )
                output.flush()
                os.fsync(output.fileno())
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
