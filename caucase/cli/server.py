"""caucased: the caucase server (cli 8, http-api 1 and 13).

Three certificate authorities in one SQLite file (users, services, and the private one
signing our own HTTPS certificate), served over HTTP and HTTPS by threaded listeners,
with periodic encrypted backups. SIGINT and SIGTERM both stop it cleanly.
"""

from __future__ import annotations

import argparse
import datetime
import select
import signal
import socket
import sqlite3
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable

from cryptography import x509
from cryptography.x509.oid import NameOID

from caucase import __version__
from caucase.backup_schedule import BackupSchedule, check_backup_directory
from caucase.ca import CA_RENEWAL_MARGIN, CertificateAuthority
from caucase.cli.key_options import check_key_options
from caucase.clock import Clock, utcnow
from caucase.crypto import keys, x509util
from caucase.exceptions import CaucaseError
from caucase.http.app import Application
from caucase.http.server import (
    CaucasedServer,
    CaucasedTLSServer,
    start_serving,
    stop_serving,
    write_line,
)
from caucase.http.tls import ServerIdentity
from caucase.storage import Storage

MAX_CN_LENGTH = 64
# A CAU rollover must reach the TLS trust list without waiting for the next renewal.
CA_LIST_CHECK = datetime.timedelta(seconds=600)
RENEWAL_RETRY = datetime.timedelta(seconds=60)
# With --threshold close to the validity every new certificate is already due: the
# reference then renews in a tight loop; we pace it instead.
MIN_RENEWAL_INTERVAL = datetime.timedelta(seconds=10)
MAX_SLEEP_STEP = 600.0


class StartupError(CaucaseError):
    """caucased cannot start: one line for the operator, exit status 1."""


@dataclass(frozen=True)
class Endpoint:
    """Where caucased is reached: the public netloc and the local ports."""

    netloc: str
    host: str
    http_port: int

    @property
    def https_port(self) -> int:
        return 443 if self.http_port == 80 else self.http_port + 1


def build_parser() -> argparse.ArgumentParser:
    """Options, defaults, arities and repetition rules of cli 8.1."""
    parser = argparse.ArgumentParser(prog="caucased", description="caucase server")
    parser.add_argument("--version", action="version", version=__version__)
    add = parser.add_argument
    add("--db", default="caucase.sqlite", help="Path to the SQLite database.")
    add("--server-key", default="server.key.pem", help="HTTPS key and certificate file.")
    add("--cors-key-store", default="cors.key", help="CORS token secrets file.")
    add("--cors-whitelist", nargs="+", default=[], metavar="URL", help="Trusted origins.")
    add("--netloc", required=True, help="Public host[:port] of this service.")
    add("--base-port", type=int, help="Local HTTP port (HTTPS is the next one, or 443).")
    add("--bind", action="append", help="Local address to listen on (repeatable).")
    add("--threshold", type=float, default=31, help="Renew own certificate days ahead.")
    add(
        "--key-type",
        choices=keys.KEY_TYPE_NAMES,
        default=keys.KeyType.RSA.value,
        help="Type of new CA keys (CAU, CAS, HTTPS CA: from their next rollover) and of the "
        "HTTPS key. default: %(default)s",
    )
    add("--key-len", type=int, help="RSA key size for new keys (RSA only). default: 2048")
    add("--service-crt-validity", type=float, default=93, help="CAS certificate days.")
    add("--user-crt-validity", type=float, default=93, help="CAU certificate days.")
    add("--service-max-csr", type=int, default=50, help="Max pending CAS CSRs.")
    add("--user-max-csr", type=int, default=50, help="Max pending CAU CSRs.")
    add("--service-auto-approve-count", type=int, default=0, help="Auto-signed CAS CSRs.")
    add("--user-auto-approve-count", type=int, default=1, help="Auto-signed CAU CSRs.")
    add("--lock-auto-approve-count", action="store_true", help="Store the counts forever.")
    add("--backup-directory", help="Existing directory receiving encrypted backups.")
    add("--backup-period", type=float, default=1, help="Days between backups.")
    return parser


def parse_endpoint(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Endpoint:
    """Netloc verbatim for names, lowercased host for SAN and binding (errata 11)."""
    split = urllib.parse.urlsplit("http://" + args.netloc)
    try:
        port = split.port
    except ValueError:
        parser.error(f"invalid port in --netloc {args.netloc!r}")
    if not split.hostname or split.netloc != args.netloc:
        parser.error(f"invalid --netloc {args.netloc!r}: expected host[:port]")
    for label in ("Caucase CAU at ", "Caucased CA at "):
        if len((label + split.netloc).encode("utf-8")) > MAX_CN_LENGTH:
            parser.error(
                f"--netloc {args.netloc!r} is too long: certificate names are limited to "
                f"{MAX_CN_LENGTH} characters ({MAX_CN_LENGTH - len(label)} for the netloc)"
            )
    http_port = args.base_port if args.base_port is not None else (port or 80)
    return Endpoint(split.netloc, split.hostname, http_port)


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Authorities:
    """The three CAs of one caucased, sharing one database file."""

    cau: CertificateAuthority
    cau_storage: Storage
    cas: CertificateAuthority
    http_cas: CertificateAuthority


def open_authorities(args: argparse.Namespace, endpoint: Endpoint, clock: Clock) -> Authorities:
    """CAU, CAS and http CA as configured (ca-profile 1.2), creating CAs when needed."""
    netloc = endpoint.netloc
    user_days = args.user_crt_validity
    cau_storage = Storage(
        args.db,
        "cau",
        max_csr_amount=args.user_max_csr,
        crt_keep_time=user_days,
        crt_read_keep_time=user_days,
        enforce_unique_key_id=True,
    )
    cau = CertificateAuthority(
        cau_storage,
        _subject("Caucase CAU at " + netloc),
        args.key_spec,
        user_days,
        clock=clock,
        auto_sign_csr_amount=args.user_auto_approve_count,
        lock_auto_sign_csr_amount=args.lock_auto_approve_count,
    )
    cas = CertificateAuthority(
        Storage(args.db, "cas", max_csr_amount=args.service_max_csr),
        _subject("Caucase CAS at " + netloc),
        args.key_spec,
        args.service_crt_validity,
        clock=clock,
        crl_base_url=f"http://{netloc}/cas/crl",
        auto_sign_csr_amount=args.service_auto_approve_count,
        lock_auto_sign_csr_amount=args.lock_auto_approve_count,
    )
    http_cas = CertificateAuthority(
        Storage(args.db, "http_cas"),
        _subject("Caucased CA at " + netloc),
        args.key_spec,
        args.service_crt_validity,
        clock=clock,
        ca_life_period=40,
        ca_extensions=[x509util.name_constraints_for_host(endpoint.host)],
    )
    return Authorities(cau, cau_storage, cas, http_cas)


def announce_key_changes(args: argparse.Namespace, authorities: Authorities) -> None:
    """Say when a new --key-type/--key-len will reach the CAU and CAS: not at once, but with
    the next CA rollover, which caucased-manage --renew-ca can start now."""
    for label, authority, days in (
        ("CAU", authorities.cau, args.user_crt_validity),
        ("CAS", authorities.cas, args.service_crt_validity),
    ):
        ca_list = authority.get_ca_certificate_list()
        if not ca_list:
            continue
        newest = ca_list[-1]
        try:
            current = str(keys.spec_of(newest.public_key()))
        except CaucaseError as error:
            current = str(error)
        if current == str(args.key_spec):
            continue
        due = newest.not_valid_after_utc - datetime.timedelta(days=days * CA_RENEWAL_MARGIN)
        write_line(
            sys.stderr,
            f"{label} CA key is {current}: new {label} CAs will be {args.key_spec} from the "
            f"next rollover, due {due:%Y-%m-%d %H:%M:%S} UTC "
            f"(caucased-manage --renew-ca {label.lower()} starts it now)\n",
        )


def resolve_addresses(
    bind_list: Sequence[str], port: int
) -> list[tuple[socket.AddressFamily, str]]:
    """Every distinct IPv4/IPv6 address the bind values resolve to, in order."""
    found: list[tuple[socket.AddressFamily, str]] = []
    for value in bind_list:
        try:
            infos = socket.getaddrinfo(value, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            raise StartupError(f"cannot resolve bind address {value!r}: {error}") from None
        for family, _, _, _, sockaddr in infos:
            entry = (family, str(sockaddr[0]))
            if family in (socket.AF_INET, socket.AF_INET6) and entry not in found:
                found.append(entry)
    return found


def make_listeners(
    addresses: list[tuple[socket.AddressFamily, str]],
    endpoint: Endpoint,
    identity: ServerIdentity,
) -> tuple[list[CaucasedServer], list[CaucasedTLSServer]]:
    """One HTTP and one HTTPS listener per address, announced on stderr, not yet bound."""
    context = identity.make_context()
    plain: list[CaucasedServer] = []
    secure: list[CaucasedTLSServer] = []
    for family, address in addresses:
        write_line(
            sys.stderr,
            f"Listening on [{address}]:{endpoint.http_port}-{endpoint.https_port}\n",
        )
        plain.append(CaucasedServer((address, endpoint.http_port), family))
        secure.append(CaucasedTLSServer((address, endpoint.https_port), family, context))
    return plain, secure


def listen_all(servers: Sequence[CaucasedServer]) -> None:
    """Bind every listener, HTTP ones first; a clear error when an address is unusable."""
    for index, server in enumerate(servers):
        try:
            server.listen()
        except OSError as error:
            for opened in servers[:index]:
                opened.server_close()
            host, port = server.server_address[:2]
            raise StartupError(f"cannot listen on [{host!s}]:{port}: {error.strerror}") from None


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

    def _next_deadline(self) -> datetime.datetime:
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
            self._tls_due = max(self._identity.renewal_due, now + MIN_RENEWAL_INTERVAL)
        except (CaucaseError, OSError, ValueError) as error:
            write_line(sys.stderr, f"HTTPS certificate renewal failed: {error}\n")
            self._tls_due = now + RENEWAL_RETRY

    def run(self, stop: StopSignal) -> None:
        """Serve deadlines until a stop signal arrives."""
        while stop.sleep_until(self._next_deadline(), self._clock):
            now = self._clock()
            if now >= self._tls_due:
                self._renew_certificate(now)
            if now >= self._ca_check_due:
                self._ca_check_due = now + CA_LIST_CHECK
                if self._identity.user_ca_list() != self._identity.trusted_user_cas:
                    self._swap_context()
            if self._backups is not None and self._backup_due and now >= self._backup_due:
                self._backup_due = self._backups.run(now)


def make_application(args: argparse.Namespace, authorities: Authorities) -> Callable[..., Any]:
    """The WSGI application serving both authorities."""
    return Application(
        authorities.cau,
        authorities.cas,
        args.cors_key_store,
        cors_whitelist=tuple(args.cors_whitelist),
    )


def serve(args: argparse.Namespace, endpoint: Endpoint, stop: StopSignal) -> None:
    """Open everything, listen, and run the main loop until stopped."""
    clock = utcnow
    authorities = open_authorities(args, endpoint, clock)
    announce_key_changes(args, authorities)
    backups = None
    if args.backup_directory is not None:
        backups = BackupSchedule(
            args.backup_directory, args.backup_period, authorities.cau, authorities.cau_storage
        )
    authorities.cau.prepare_crl_entries()
    authorities.cas.prepare_crl_entries()
    application = make_application(args, authorities)
    addresses = resolve_addresses(args.bind or [endpoint.host], endpoint.http_port)
    identity = ServerIdentity(
        args.server_key,
        authorities.http_cas,
        authorities.cau,
        endpoint.host,
        args.key_spec,
        args.threshold,
        clock,
    )
    identity.prepare()
    plain, secure = make_listeners(addresses, endpoint, identity)
    servers: list[CaucasedServer] = [*plain, *secure]
    listen_all(servers)
    start_serving(servers, application)
    try:
        MainLoop(identity, secure, backups, clock).run(stop)
    finally:
        write_line(sys.stderr, "Exiting\n")
        stop_serving(servers)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of `caucased`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.key_spec = check_key_options(parser, args)
    endpoint = parse_endpoint(parser, args)
    if args.backup_directory is not None:
        problem = check_backup_directory(args.backup_directory)
        if problem is not None:
            parser.error(problem)
    stop = StopSignal()
    try:
        serve(args, endpoint, stop)
    except (CaucaseError, OSError, sqlite3.Error, ValueError) as error:
        write_line(sys.stderr, f"caucased: error: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
