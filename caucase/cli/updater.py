"""caucase-updater: bootstrap a certificate, then keep it, its CA and CRL up to date forever.

Runs as a daemon under a supervisor (cli.md 4). Each pass refreshes the CA and CRL stores,
asks the server for the certificate's renewal window (RFC 9773; the threshold rule when it
has none) and renews at the moment drawn in it (caucase.cli.updater_certificate). A pass
that fails for a reason the server, the network or an operator may fix is logged in one
line and tried again after a capped, random, growing delay (caucase.cli.backoff), for
ever (caucase.cli.updater_failures). Sleeps between passes are at most --max-sleep,
shortened at random; SIGHUP and SIGUSR1 cut them short (caucase.cli.updater_signals).
After every attempt the status file is written (caucase.cli.updater_status) and systemd
told (caucase.cli.sd_notify). Local errors end the process with one line on stderr:
exit status 0 after SIGINT/SIGTERM, 1 on an error, 2 on a usage error, 3 when the
--on-renew hook fails.
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import time
from collections.abc import Sequence
from typing import Callable, TextIO

from cryptography import x509

from caucase.cli import backoff, updater_options, updater_status
from caucase.cli.backoff import Backoff
from caucase.cli.hook import describe_outcome, run_hook
from caucase.cli.key_options import check_key_options
from caucase.cli.renewal_plan import RenewalPlanner
from caucase.cli.sd_notify import SystemdNotifier
from caucase.cli.updater_certificate import CertificateKeeper, check_writable
from caucase.cli.updater_failures import TRANSIENT, during, failure_line, format_time
from caucase.cli.updater_signals import Shutdown, SignalGuard, WakeUp
from caucase.cli.updater_status import Failure, UpdaterStatus
from caucase.client import CaucaseClient, parse_ca_url
from caucase.clock import Clock, utcnow
from caucase.crypto import pemfile
from caucase.exceptions import CaucaseError, PemFileError
from caucase.trust_stores import load_valid_ca_list, update_ca_store, update_crl_store

MIN_SLEEP = datetime.timedelta(seconds=60)
MAX_NAP = datetime.timedelta(minutes=10)
HOOK_FAILED = 3
Sleep = Callable[[float], None]


def wait_until(deadline: datetime.datetime, clock: Clock, sleep: Sleep) -> datetime.datetime:
    """Sleep until the wall clock reaches `deadline`; return the time it was reached.

    Naps shrink as the deadline nears (cli.md 2.9), so that a suspend or a clock jump is
    noticed at the next wake-up rather than after one long monotonic sleep."""
    while True:
        now = clock()
        remaining = deadline - now
        if remaining <= datetime.timedelta(0):
            return now
        sleep(max(remaining / 2, min(remaining, MAX_NAP)).total_seconds())


def crl_refresh_deadline(
    crl_pem_list: Sequence[bytes],
    ca_list: Sequence[x509.Certificate],
    crl_threshold: datetime.timedelta,
) -> datetime.datetime | None:
    """The earliest nextUpdate - threshold among the CRLs signed by a trusted CA."""
    result: datetime.datetime | None = None
    for pem in crl_pem_list:
        try:
            crl = x509.load_pem_x509_crl(pem)
            trusted = any(crl.is_signature_valid(ca.public_key()) for ca in ca_list)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            continue
        if trusted and crl.next_update_utc is not None:
            candidate = crl.next_update_utc - crl_threshold
            result = candidate if result is None else min(result, candidate)
    return result


class Updater:
    """One updater process. Its state between wake-ups is on disk, but for the renewal
    moment drawn, the failures counted since the last success, and the signals' requests."""

    def __init__(
        self,
        args: argparse.Namespace,
        guard: SignalGuard,
        clock: Clock = utcnow,
        sleep: Sleep = time.sleep,
        out: TextIO | None = None,
        rng: random.Random | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self._args = args
        self._guard = guard
        self._clock = clock
        self._sleep = sleep
        self._out = out or sys.stdout
        self._notifier = notifier
        self._rng = rng or random.SystemRandom()
        self._max_sleep = datetime.timedelta(days=args.max_sleep)
        # Retries never wait longer than a check would.
        self._backoff = Backoff(self._rng, min(max(self._max_sleep, MIN_SLEEP), backoff.CAP))
        self._status = UpdaterStatus(crt=args.crt)
        self._cas_url = args.ca_url + "/cas"
        mode_url = args.ca_url + ("/cau" if args.mode == "user" else "/cas")
        self._cas_client = CaucaseClient(self._cas_url)
        self._client = self._cas_client if mode_url == self._cas_url else CaucaseClient(mode_url)
        planner = RenewalPlanner(self._rng, datetime.timedelta(days=args.threshold))
        self._keeper = CertificateKeeper(
            args, self._client, guard, planner, self._status, self._say, self._wait_for
        )
        self._updated = False
        self._check_requested = self._renewal_requested = False

    def _say(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    def close(self) -> None:
        self._cas_client.close()
        self._client.close()

    # Time
    def _nap(self, seconds: float) -> None:
        """One nap, short enough for systemd's watchdog, which hears from us first."""
        if self._notifier is not None and self._notifier.watchdog_interval is not None:
            self._notifier.ping()
            seconds = min(seconds, self._notifier.watchdog_interval.total_seconds() / 2)
        self._sleep(seconds)

    def wait(self, deadline: datetime.datetime) -> datetime.datetime:
        """Sleep until `deadline`, or until SIGHUP/SIGUSR1 asks for a pass now."""
        try:
            with self._guard.sleeping():
                return wait_until(deadline, self._clock, self._nap)
        except WakeUp:
            return self._clock()

    def _wait_for(self, delay: datetime.timedelta) -> None:
        self.wait(self._clock() + delay)

    def _next_check(self, now: datetime.datetime) -> datetime.datetime:
        """Now plus --max-sleep shortened by up to a quarter at random, so that updaters
        started together do not keep checking together."""
        return now + self._max_sleep * (1 - self._rng.random() / 4)

    # The loop
    def run(self) -> int:
        """Start-up, optional bootstrap, then the endless loop; returns only on hook failure."""
        args = self._args
        if args.crt:
            for path in (args.crt, args.key):
                check_writable(path)
        if self._notifier is not None:
            self._notifier.ready("starting")
        returncode = self._attempt(self._start, hook=False)
        deadline = self._clock()
        while not returncode:
            self._say(f"Next wake-up at {format_time(deadline)}")
            self.wait(deadline)
            returncode = self._attempt(self._pass)
            deadline = self._status.next_check or self._clock()
        return returncode

    def _attempt(self, step: Callable[[], None], hook: bool = True) -> int:
        """Run `step` until it succeeds, waiting after each failure as the backoff says;
        with `hook`, the hook runs after each attempt that changed a file (start-up
        leaves that to the first pass, as the reference). Its failure's return code,
        else 0."""
        while True:
            try:
                step()
            except TRANSIENT as error:
                returncode = self._after_attempt(error, hook)
                if returncode:
                    return returncode
                assert self._status.next_check is not None
                self.wait(self._status.next_check)
                continue
            return self._after_attempt(None, hook)

    def _after_attempt(self, error: BaseException | None, hook: bool) -> int:
        now = self._clock()
        status = self._status
        if error is None:
            self._backoff.reset()
            status.last_success = now
        else:
            delay = self._backoff.next_delay()
            status.next_check = now + delay
            line = failure_line(error, status.next_check, self._backoff.attempt, delay)
            self._say(line)
            status.last_error = Failure(now, line, self._backoff.attempt)
        self._publish(now, error)
        if not (hook and self._updated):
            return 0
        returncode = self.run_hook()
        self._updated = False
        if returncode:
            print(f"Renewal hook {describe_outcome(returncode)}", file=sys.stderr)
            return HOOK_FAILED
        return 0

    def _publish(self, now: datetime.datetime, error: BaseException | None) -> None:
        """The status file and systemd's STATUS line, after each attempt."""
        status = self._status
        if self._args.status:
            try:
                status.write(self._args.status, now)
            except (PemFileError, OSError) as write_error:
                self._say(f"Cannot write the status file: {write_error}")
        if self._notifier is not None:
            next_check = format_time(status.next_check) if status.next_check else "unknown"
            state = "failing, retrying" if error is not None else "up to date"
            self._notifier.status(f"{state}; next check at {next_check}")

    def _start(self) -> None:
        args = self._args
        with during(f"updating {args.cas_ca} from {self._cas_url}"):
            cas_changed = update_ca_store(self._cas_client, args.cas_ca, self._clock())
        self._updated |= cas_changed and args.cas_ca == args.ca
        if args.crt and self._keeper.needs_bootstrap():
            self._keeper.bootstrap()
            self._updated = True

    def _pass(self) -> None:
        check, renew = self._guard.take_requests()
        self._check_requested |= check
        self._renewal_requested |= renew
        self._status.next_check = self.iterate(self._clock())

    def iterate(self, now: datetime.datetime) -> datetime.datetime:
        """One wake-up (cli.md 4.3 steps 2-8); returns the next deadline."""
        args = self._args
        wake_up = self._next_check(now)
        if args.cas_ca != args.ca:
            with during(f"updating {args.cas_ca} from {self._cas_url}"):
                update_ca_store(self._cas_client, args.cas_ca, now)
        with during(f"updating {args.ca} from {self._client.ca_url}"):
            if update_ca_store(self._client, args.ca, now):
                self._say("Got new CA")
                self._updated = True
        ca_list = load_valid_ca_list(pemfile.read_ca_store(args.ca), now)
        with during(f"updating {args.crl} from {self._client.ca_url}"):
            if update_crl_store(self._client, args.crl, ca_list):
                self._say("Got new CRL")
                self._updated = True
        crl_deadline = crl_refresh_deadline(
            pemfile.read_crl_store(args.crl),
            ca_list,
            datetime.timedelta(days=args.crl_threshold),
        )
        if crl_deadline is not None:
            wake_up = min(wake_up, crl_deadline)
        if args.crt:
            moment, changed = self._keeper.maintain(
                now, ca_list, check=self._check_requested, renew=self._renewal_requested
            )
            # Asked for by a signal: done (or not needed).
            self._check_requested = self._renewal_requested = False
            self._updated |= changed
            wake_up = min(wake_up, moment)
        return max(wake_up, now + MIN_SLEEP)

    def run_hook(self) -> int:
        """Run --on-renew through the shell; its return code (0 when there is none)."""
        if not self._args.on_renew:
            return 0
        with self._guard.critical():
            return run_hook(self._args.on_renew)


def _print_status(path: str) -> int:
    try:
        updater_status.print_status(path, utcnow(), sys.stdout)
    except CaucaseError as error:
        print(f"caucase-updater: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run until a signal (0), an error (1) or a hook failure (3)."""
    wanted, _ = updater_options.status_parser().parse_known_args(argv)
    if wanted.print_status is not None:
        return _print_status(wanted.print_status)
    parser = updater_options.build_parser()
    args = parser.parse_args(argv)
    check_key_options(parser, args)
    try:
        parse_ca_url(args.ca_url)
    except CaucaseError as error:
        print(f"caucase-updater: --ca-url: {error}", file=sys.stderr)
        return 1
    guard = SignalGuard()
    guard.install()
    updater: Updater | None = None
    try:
        updater = Updater(args, guard, notifier=SystemdNotifier.from_environment())
        return updater.run()
    except Shutdown:
        return 0
    except (CaucaseError, OSError) as error:
        print(f"caucase-updater: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"caucase-updater: malformed data: {error}", file=sys.stderr)
        return 1
    finally:
        if updater is not None:
            updater.close()
        sys.stdout.flush()
