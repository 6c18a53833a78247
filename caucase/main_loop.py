"""caucased's main loop (cli 8.3 to 8.5): own HTTPS certificate renewal, TLS trust of
new CAU CAs, periodic backups, and the stop signals.

None of these tasks ever stops the server: a failure is one log line on stderr, and the
task is tried again later.
"""

from __future__ import annotations

import datetime
import select
import signal
import socket
import sys
from types import FrameType

from caucase.backup_schedule import TASK_ERRORS, BackupSchedule, describe_delay
from caucase.clock import Clock
from caucase.http.server import CaucasedTLSServer, write_line
from caucase.http.tls import ServerIdentity

# A CAU rollover must reach the TLS trust list without waiting for the next renewal.
CA_LIST_CHECK = datetime.timedelta(seconds=600)
# A failed renewal or CA list refresh is tried again after this.
TASK_RETRY = datetime.timedelta(seconds=60)
# With --threshold close to the validity every new certificate is already due: the
# reference then renews in a tight loop; we pace it instead.
MIN_RENEWAL_INTERVAL = datetime.timedelta(seconds=10)
MAX_SLEEP_STEP = 600.0


class StopSignal:
    """SIGINT/SIGTERM set a flag and wake the main loop through a self-pipe."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self.received = False
        signal.set_wakeup_fd(self._writer.fileno())
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, returning early when a signal arrives."""
        if not self.received:
            select.select([self._reader], [], [], max(seconds, 0))
        try:
            while self._reader.recv(256):
                pass
        except BlockingIOError:
            pass

    def sleep_until(self, deadline: datetime.datetime, clock: Clock) -> bool:
        """Wait for `deadline` with the cli 2.9 strategy; False when interrupted."""
        while not self.received:
            remaining = (deadline - clock()).total_seconds()
            if remaining <= 0:
                return True
            self.wait(max(remaining / 2, min(remaining, MAX_SLEEP_STEP)))
        return False


class MainLoop:
    """Own-certificate renewal, TLS trust refresh and backups, until a stop signal."""

    def __init__(
        self,
        identity: ServerIdentity,
        secure: list[CaucasedTLSServer],
        backups: BackupSchedule | None,
        clock: Clock,
    ) -> None:
        self._identity = identity
        self._secure = secure
        self._backups = backups
        self._clock = clock
        now = clock()
        self._tls_due = max(identity.renewal_due, now + MIN_RENEWAL_INTERVAL)
        self._backup_due = backups.first_due(now) if backups else None
        self._ca_check_due = now + CA_LIST_CHECK

    def next_deadline(self) -> datetime.datetime:
        """When the earliest task is due."""
        deadlines = [self._tls_due, self._ca_check_due]
        if self._backup_due is not None:
            deadlines.append(self._backup_due)
        return min(deadlines)

    def _swap_context(self) -> None:
        context = self._identity.make_context()
        for server in self._secure:
            server.ssl_context = context

    def _renew_certificate(self, now: datetime.datetime) -> None:
        try:
            self._identity.renew()
            self._swap_context()
        except (*TASK_ERRORS, ValueError) as error:
            self._tls_due = now + TASK_RETRY
            _log_failure("HTTPS certificate renewal", error)
            return
        self._tls_due = max(self._identity.renewal_due, now + MIN_RENEWAL_INTERVAL)

    def _refresh_ca_list(self, now: datetime.datetime) -> None:
        """Trust a new CAU CA on TLS as soon as it exists (reading the list may make it)."""
        try:
            if self._identity.user_ca_list() != self._identity.trusted_user_cas:
                self._swap_context()
        except TASK_ERRORS as error:
            self._ca_check_due = now + TASK_RETRY
            _log_failure("CA list refresh", error)
            return
        self._ca_check_due = now + CA_LIST_CHECK

    def run_due(self, now: datetime.datetime) -> None:
        """Every task due at `now`: TLS first, then the CA list, then the backup."""
        if now >= self._tls_due:
            self._renew_certificate(now)
        if now >= self._ca_check_due:
            self._refresh_ca_list(now)
        if self._backups is not None and self._backup_due and now >= self._backup_due:
            self._backup_due = self._backups.run(now)

    def run(self, stop: StopSignal) -> None:
        """Serve deadlines until a stop signal arrives."""
        while stop.sleep_until(self.next_deadline(), self._clock):
            self.run_due(self._clock())


def _log_failure(task: str, error: BaseException) -> None:
    write_line(sys.stderr, f"{task} failed: {error}; retrying in {describe_delay(TASK_RETRY)}\n")
