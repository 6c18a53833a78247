"""caucase-updater: bootstrap a certificate, then keep it, its CA and CRL up to date forever.

Runs as a daemon under a supervisor (cli.md 4). Network failures are retried forever; every
other failure ends the process with one line on stderr and a documented status:
0 after SIGINT/SIGTERM, 1 on an error, 2 on a usage error, 3 when the --on-renew hook fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Callable, TextIO

from cryptography import x509

from caucase import __version__
from caucase.cli.caucase_options import STORE_LAYOUT
from caucase.cli.hook import describe_outcome, run_hook
from caucase.cli.key_options import (
    RENEWAL_DEFAULT,
    check_key_options,
    key_len_option,
    key_type_option,
)
from caucase.client import CaucaseClient, RetryingCaucaseClient, parse_ca_url
from caucase.clock import Clock, utcnow
from caucase.crypto import keys, pemfile, verification
from caucase.exceptions import CaucaseError, CaucaseHTTPError, PemFileError
from caucase.trust_stores import load_valid_ca_list, update_ca_store, update_crl_store

BOOTSTRAP_POLL = datetime.timedelta(seconds=60)
MIN_SLEEP = datetime.timedelta(seconds=60)
MAX_NAP = datetime.timedelta(minutes=10)
HOOK_FAILED = 3
Sleep = Callable[[float], None]


class _Shutdown(BaseException):
    """SIGINT or SIGTERM arrived: leave quietly with status 0 (not an error)."""


class SignalGuard:
    """Turns SIGINT and SIGTERM into `_Shutdown`, at once (even in a sleep or a blocking
    request), except inside `critical()` blocks where it waits for the block to end."""

    def __init__(self) -> None:
        self._requested = False
        self._depth = 0

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._requested = True
        if not self._depth:
            raise _Shutdown

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Defer shutdown while files are being replaced or the hook runs."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._requested:
                raise _Shutdown


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


def format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000")


@contextlib.contextmanager
def _during(action: str) -> Iterator[None]:
    """Name the failed request in HTTP errors, which otherwise only carry a status."""
    try:
        yield
    except CaucaseHTTPError as error:
        reason = error.body.decode("utf-8", "replace").strip().splitlines()[:1]
        detail = f": {reason[0][:200]}" if reason else ""
        raise CaucaseError(f"{action}: server answered HTTP {error.status}{detail}") from None


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
    """One updater process: the state between wake-ups is only on disk."""

    def __init__(
        self,
        args: argparse.Namespace,
        guard: SignalGuard,
        clock: Clock = utcnow,
        sleep: Sleep = time.sleep,
        out: TextIO | None = None,
    ) -> None:
        self._args = args
        self._guard = guard
        self._clock = clock
        self._sleep = sleep
        self._out = out or sys.stdout
        self._cas_url = args.ca_url + "/cas"
        self._mode_url = args.ca_url + ("/cau" if args.mode == "user" else "/cas")
        self._cas_client = self._make_client(self._cas_url)
        self._client = (
            self._cas_client
            if self._mode_url == self._cas_url
            else self._make_client(self._mode_url)
        )
        self._updated = False

    def _make_client(self, url: str) -> CaucaseClient:
        return RetryingCaucaseClient(
            url, clock=self._clock, wait=self._wait_seconds, log=self._out
        )

    def _wait_seconds(self, seconds: float) -> None:
        self.wait(self._clock() + datetime.timedelta(seconds=seconds))

    def wait(self, deadline: datetime.datetime) -> datetime.datetime:
        return wait_until(deadline, self._clock, self._sleep)

    def _say(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    def close(self) -> None:
        self._cas_client.close()
        self._client.close()

    def run(self) -> int:
        """Start-up, optional bootstrap, then the endless loop; returns only on hook failure."""
        args = self._args
        if args.crt:
            for path in (args.crt, args.key):
                _check_writable(path)
        with _during(f"updating {args.cas_ca} from {self._cas_url}"):
            cas_changed = update_ca_store(self._cas_client, args.cas_ca, self._clock())
        self._updated = cas_changed and args.cas_ca == args.ca
        if args.crt and not pemfile.has_one_certificate(args.crt):
            self.bootstrap()
        deadline = self._clock()
        while True:
            self._say(f"Next wake-up at {format_time(deadline)}")
            deadline = self.iterate(self.wait(deadline))
            if self._updated:
                returncode = self.run_hook()
                if returncode:
                    print(f"Renewal hook {describe_outcome(returncode)}", file=sys.stderr)
                    return HOOK_FAILED
                self._updated = False

    def _check_csr_key(self, csr_pem: bytes) -> None:
        """Refuse to request a certificate for a key we do not hold: the reference would
        get it signed, then fail at every start on a certificate without its key."""
        args = self._args
        key_blocks = [
            block
            for block in (pemfile.read_blocks(args.crt) if os.path.exists(args.crt) else [])
            if block.kind is pemfile.BlockKind.KEY
        ]
        if len(key_blocks) > 1:
            raise PemFileError(args.crt, f"{args.crt} holds more than one key")
        if key_blocks:
            try:
                key = keys.load_private_key(key_blocks[0].text)
            except (ValueError, TypeError) as error:
                raise PemFileError(
                    args.crt, f"{args.crt}: unusable private key ({error})"
                ) from None
        elif args.key:
            key = pemfile.read_one_key(args.key)
        elif not os.path.exists(args.crt):
            raise PemFileError(
                args.crt, f"{args.crt}: no such file (it must hold the private key, or give --key)"
            )
        else:
            raise CaucaseError(f"{args.crt} holds no private key and no --key was given")
        csr_key_id = keys.key_id(x509.load_pem_x509_csr(csr_pem).public_key())
        if csr_key_id != keys.key_id(key.public_key()):
            raise CaucaseError(f"{args.csr} does not request a certificate for the private key")

    def bootstrap(self) -> None:
        """Submit --csr and poll until it is signed (or rejected, which is fatal)."""
        args = self._args
        self._say("Bootstraping...")
        if not args.csr:
            raise CaucaseError(f"{args.crt} holds no certificate and no --csr was given")
        csr_pem = pemfile.read_one_csr(args.csr)
        self._check_csr_key(csr_pem)
        with _during(f"submitting {args.csr} to {self._mode_url}"):
            csr_id = self._client.create_csr(csr_pem)
        self._say(f"Waiting for signature of {csr_id}")
        crt_pem = self._poll_certificate(csr_id)
        with self._guard.critical():
            pemfile.append_to_file(args.crt, crt_pem)
        self._updated = True
        self._say("Bootstrap done")

    def _poll_certificate(self, csr_id: int) -> bytes:
        while True:
            with _during(f"fetching the certificate of CSR {csr_id}"):
                try:
                    return self._client.get_certificate(csr_id)
                except CaucaseHTTPError as error:
                    if error.status != 404:
                        raise
                try:
                    self._client.get_csr(csr_id)
                except CaucaseHTTPError as error:
                    if error.status == 404:
                        raise CaucaseError(
                            f"CSR {csr_id} ({self._args.csr}) was rejected by {self._mode_url}"
                        ) from None
                    raise
            self.wait(self._clock() + BOOTSTRAP_POLL)

    def iterate(self, now: datetime.datetime) -> datetime.datetime:
        """One wake-up (cli.md 4.3 steps 2-8); returns the next deadline."""
        args = self._args
        wake_up = now + datetime.timedelta(days=args.max_sleep)
        if args.cas_ca != args.ca:
            with _during(f"updating {args.cas_ca} from {self._cas_url}"):
                update_ca_store(self._cas_client, args.cas_ca, now)
        with _during(f"updating {args.ca} from {self._mode_url}"):
            if update_ca_store(self._client, args.ca, now):
                self._say("Got new CA")
                self._updated = True
        ca_list = load_valid_ca_list(pemfile.read_ca_store(args.ca), now)
        with _during(f"updating {args.crl} from {self._mode_url}"):
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
            wake_up = min(wake_up, self.maintain_certificate(now, ca_list))
        return max(wake_up, now + MIN_SLEEP)

    def maintain_certificate(
        self, now: datetime.datetime, ca_list: Sequence[x509.Certificate]
    ) -> datetime.datetime:
        """Renew the certificate when within --threshold of expiry; its next renewal time."""
        args = self._args
        threshold = datetime.timedelta(days=args.threshold)
        pemfile.recover_interrupted_renewal(args.crt, args.key)
        pair = pemfile.read_key_pair(args.crt, args.key)
        certificate = pair.certificate
        try:
            verification.verify_certificate(certificate, ca_list, (), now)
        except CaucaseError as error:
            raise CaucaseError(f"{args.crt}: {error}") from None
        if certificate.not_valid_after_utc - threshold <= now:
            self._say(f"Renewing {args.crt}")
            with _during(f"renewing {args.crt} at {self._mode_url}"):
                new_key, crt_pem = self._client.renew_certificate(
                    certificate,
                    pair.key,
                    keys.spec_from_options(args.key_type, args.key_len, pair.key.public_key()),
                )
            with self._guard.critical():
                pemfile.write_renewed(pair, args.crt, keys.dump_private_key(new_key), crt_pem)
            certificate = x509.load_pem_x509_certificate(crt_pem)
            self._updated = True
        return certificate.not_valid_after_utc - threshold

    def run_hook(self) -> int:
        """Run --on-renew through the shell; its return code (0 when there is none)."""
        if not self._args.on_renew:
            return 0
        with self._guard.critical():
            return run_hook(self._args.on_renew)


def _check_writable(path: str | None) -> None:
    """Refuse at start a certificate or key file that could not be replaced: the reference
    found out only once the CSR was signed, or at the first renewal."""
    if not path:
        return
    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory):
        raise PemFileError(path, f"{path}: no such directory: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PemFileError(
            path, f"{path}: cannot create files in {directory}, which renewals need"
        )


def _parser() -> argparse.ArgumentParser:
    """The reference's options, metavars and defaults (cli.md 4.1), except --crl's metavar
    (CRL_PATH, where the reference says CRT_PATH)."""
    parser = argparse.ArgumentParser(
        prog="caucase-updater",
        description="Get a certificate signed by caucased, then keep it, the CA certificates "
        "and the revocation lists up to date, forever.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--ca-url",
        required=True,
        metavar="URL",
        help="Base URL of caucased's HTTP listener, scheme included: http://HOST[:PORT] "
        "(port 80 by default).",
    )
    parser.add_argument(
        "--cas-ca",
        required=True,
        metavar="CRT_PATH",
        help=f"CA certificates of caucased's service CA (CAS), kept up to date: {STORE_LAYOUT}.",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=31,
        help="Renew the certificate once fewer than THRESHOLD days of validity are left "
        "(fractions allowed). Default: %(default)s days",
    )
    parser.add_argument(
        "--crl-threshold",
        type=float,
        default=7,
        help="Fetch new revocation lists once fewer than CRL_THRESHOLD days are left before "
        "their next update. Default: %(default)s days",
    )
    for name, settings in (
        key_type_option(RENEWAL_DEFAULT),
        key_len_option("the size of the RSA key being replaced, else 2048"),
    ):
        parser.add_argument(name, **settings)
    parser.add_argument(
        "--on-renew",
        metavar="EXECUTABLE_PATH",
        help="Shell command line (run by /bin/sh -c) run after a pass that changed a CA, CRL "
        "or certificate file; if it fails, the updater stops with status 3. Default: none",
    )
    parser.add_argument(
        "--max-sleep",
        type=float,
        default=31,
        help="Longest time between two checks, in days (fractions allowed): lower it to "
        "notice revocations sooner. Default: %(default)s days",
    )
    parser.add_argument(
        "--mode",
        default="service",
        choices=["service", "user"],
        help="Authority that issues --crt and whose CA and CRL are --ca and --crl: service "
        "(the CAS) or user (the CAU). Default: %(default)s",
    )
    parser.add_argument(
        "--csr",
        metavar="CSR_PATH",
        help="CSR submitted when --crt holds no certificate yet; unused afterwards.",
    )
    parser.add_argument(
        "--key",
        metavar="KEY_PATH",
        help="Private key file: must exist at start, replaced on renewal. Without it, the "
        "key is kept in --crt, with the certificate.",
    )
    parser.add_argument(
        "--crt",
        metavar="CRT_PATH",
        help="Certificate to obtain (from --csr) and renew before it expires. Without it, "
        "only the CA certificates and revocation lists are maintained.",
    )
    parser.add_argument(
        "--ca",
        required=True,
        metavar="CRT_PATH",
        help=f"CA certificates of MODE's authority, kept up to date: {STORE_LAYOUT}. May be "
        "the same path as --cas-ca.",
    )
    parser.add_argument(
        "--crl",
        required=True,
        metavar="CRL_PATH",
        help=f"Revocation lists of MODE's authority, kept up to date: {STORE_LAYOUT}.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run until a signal (0), an error (1) or a hook failure (3)."""
    parser = _parser()
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
        updater = Updater(args, guard)
        return updater.run()
    except _Shutdown:
        return 0
    except (CaucaseError, OSError) as error:
        print(f"caucase-updater: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"caucase-updater: malformed data from the server: {error}", file=sys.stderr)
        return 1
    finally:
        if updater is not None:
            updater.close()
        sys.stdout.flush()
