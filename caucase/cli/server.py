"""caucased: the caucase server (cli 8, http-api 1 and 13).

Three certificate authorities in one database (users, services, and the private one
signing our own HTTPS certificate), served over HTTP and HTTPS by threaded listeners,
with periodic encrypted backups. SIGINT and SIGTERM both stop it cleanly.

The database is an SQLite file held by this caucased alone, or a PostgreSQL database that
several caucased share (behind one address): they then also share the CORS secrets and
take turns at backups (caucase.storage.cluster); each keeps its own HTTPS key.

Start-up binds every listener before it opens the database, and says `Listening` only
once it is ready to serve: a start-up that fails (busy port, database in use or
unusable) creates no database, server key or CORS store of its own.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

from cryptography import x509
from cryptography.x509.oid import NameOID

from caucase.acme.challenges import Dns01Validator, Http01Validator, Validators
from caucase.acme.resolver import Resolver
from caucase.acme.service import AcmeService, AcmeSettings
from caucase.acme.tls_alpn import TlsAlpn01Validator
from caucase.backup_schedule import BackupSchedule
from caucase.ca import CertificateAuthority
from caucase.cli import server_ops
from caucase.cli.key_options import check_key_options
from caucase.cli.server_options import (
    Endpoint,
    build_parser,
    check_acme_options,
    check_parent_directories,
    parse_endpoint,
)
from caucase.clock import Clock, utcnow
from caucase.crypto import keys, x509util
from caucase.events import NULL_OBSERVER, Observer
from caucase.exceptions import CaucaseError
from caucase.http.app import Application
from caucase.http.cors import SharedCorsKeyStore
from caucase.http.server import (
    CaucasedServer,
    CaucasedTLSServer,
    start_serving,
    stop_serving,
    write_line,
)
from caucase.http.tls import ServerIdentity
from caucase.main_loop import MainLoop, StopSignal
from caucase.rollover import CA_RENEWAL_MARGIN
from caucase.storage import Engine, Storage, is_url, open_database
from caucase.storage.cluster import ClusterState


class StartupError(CaucaseError):
    """caucased cannot start: one line for the operator, exit status 1."""


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Authorities:
    """The three CAs of one caucased, sharing one database and its owner."""

    database: Engine
    key_spec: keys.KeySpec
    cau: CertificateAuthority
    cau_storage: Storage
    cas: CertificateAuthority
    cas_storage: Storage
    http_cas: CertificateAuthority
    # What the caucased sharing a PostgreSQL database share besides the CAs; None on SQLite.
    cluster: ClusterState | None = None


def open_authorities(
    args: argparse.Namespace,
    endpoint: Endpoint,
    clock: Clock,
    observer: Observer = NULL_OBSERVER,
) -> Authorities:
    """CAU, CAS and http CA as configured (ca-profile 1.2), creating CAs when needed.

    An SQLite database is held exclusively until closed: DatabaseInUse if another
    caucased or caucased-manage holds it. The database is closed again if anything fails
    here."""
    database = open_database(args.db, exclusive=True)
    try:
        authorities = _open_authorities(database, args, endpoint, clock, observer)
        if is_url(args.db):
            authorities.cluster = ClusterState(database)
        return authorities
    except BaseException:
        database.close()
        raise


def _open_authorities(
    database: Engine,
    args: argparse.Namespace,
    endpoint: Endpoint,
    clock: Clock,
    observer: Observer,
) -> Authorities:
    netloc = endpoint.netloc
    user_days = args.user_crt_validity
    # Checked at parsing (check_key_options): the type and size of every new key.
    key_spec = keys.spec_from_options(args.key_type, args.key_len)
    cau_storage = Storage(
        database,
        "cau",
        max_csr_amount=args.user_max_csr,
        crt_keep_time=user_days,
        crt_read_keep_time=user_days,
        enforce_unique_key_id=True,
    )
    cau = CertificateAuthority(
        cau_storage,
        _subject("Caucase CAU at " + netloc),
        key_spec,
        user_days,
        clock=clock,
        auto_sign_csr_amount=args.user_auto_approve_count,
        lock_auto_sign_csr_amount=args.lock_auto_approve_count,
        renewal_threshold=args.threshold,
        observer=observer,
    )
    cas_storage = Storage(database, "cas", max_csr_amount=args.service_max_csr)
    cas = CertificateAuthority(
        cas_storage,
        _subject("Caucase CAS at " + netloc),
        key_spec,
        args.service_crt_validity,
        clock=clock,
        crl_base_url=f"http://{netloc}/cas/crl",
        auto_sign_csr_amount=args.service_auto_approve_count,
        lock_auto_sign_csr_amount=args.lock_auto_approve_count,
        renewal_threshold=args.threshold,
        observer=observer,
    )
    http_cas = CertificateAuthority(
        Storage(database, "http_cas"),
        _subject("Caucased CA at " + netloc),
        key_spec,
        args.service_crt_validity,
        clock=clock,
        ca_life_period=40,
        ca_extensions=[x509util.name_constraints_for_host(endpoint.host)],
    )
    return Authorities(database, key_spec, cau, cau_storage, cas, cas_storage, http_cas)


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
        wanted = str(authorities.key_spec)
        if current == wanted:
            continue
        due = newest.not_valid_after_utc - datetime.timedelta(days=days * CA_RENEWAL_MARGIN)
        write_line(
            sys.stderr,
            f"{label} CA key is {current}: new {label} CAs will be {wanted} from the "
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


def bind_listeners(
    addresses: list[tuple[socket.AddressFamily, str]], endpoint: Endpoint
) -> tuple[list[CaucasedServer], list[CaucasedTLSServer]]:
    """One HTTP and one HTTPS listener per address, all bound, HTTP ones first; a clear
    error, with every socket closed, when an address is unusable.

    They are bound before the database is opened, so that a busy port creates nothing.
    The HTTPS ones get their real TLS context before serving starts; until then they
    hold one without a certificate."""
    placeholder = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    plain = [
        CaucasedServer((address, endpoint.http_port), family) for family, address in addresses
    ]
    secure = [
        CaucasedTLSServer((address, endpoint.https_port), family, placeholder)
        for family, address in addresses
    ]
    servers: list[CaucasedServer] = [*plain, *secure]
    for index, server in enumerate(servers):
        try:
            server.listen()
        except OSError as error:
            close_listeners(servers[:index])
            host, port = server.server_address[:2]
            raise StartupError(f"cannot listen on [{host!s}]:{port}: {error.strerror}") from None
    return plain, secure


def close_listeners(servers: Sequence[CaucasedServer]) -> None:
    """Close listeners that never served (stop_serving would wait for their loops)."""
    for server in servers:
        server.server_close()


def announce_listeners(
    addresses: list[tuple[socket.AddressFamily, str]], endpoint: Endpoint
) -> None:
    """cli 8.2's `Listening on` lines, once every listener is bound and ready."""
    for _, address in addresses:
        write_line(
            sys.stderr,
            f"Listening on [{address}]:{endpoint.http_port}-{endpoint.https_port}\n",
        )


def acme_settings(args: argparse.Namespace) -> AcmeSettings:
    """What --acme-challenge, --acme-open and the validation ports and DNS server say."""
    if not args.acme_challenge:
        return AcmeSettings()
    resolver = Resolver(args.acme_dns_server)
    validators = Validators.of(
        [
            Http01Validator(resolver, args.acme_http_port),
            Dns01Validator(resolver),
            TlsAlpn01Validator(resolver, args.acme_tls_alpn_port),
        ]
    )
    return AcmeSettings(validators, open_accounts=args.acme_open)


def make_application(
    args: argparse.Namespace,
    authorities: Authorities,
    acme: AcmeService,
    clock: Clock,
    operations: server_ops.Operations,
) -> Callable[..., Any]:
    """The WSGI application serving both authorities, ACME and the HTTPS CA; the CORS
    secrets in the shared database when there is one, else in the --cors-key-store file."""
    cors_key_store = args.cors_key_store
    if authorities.cluster is not None:
        cors_key_store = SharedCorsKeyStore(authorities.cluster, clock)
    return Application(
        authorities.cau,
        authorities.cas,
        cors_key_store,
        cors_whitelist=tuple(args.cors_whitelist),
        acme=acme,
        https_ca=authorities.http_cas,
        metrics=operations.metrics,
        health=operations.watched.health_report if operations.watched is not None else None,
    )


@dataclass
class Service:
    """What the listeners serve and the main loop keeps up, once the database is open."""

    database: Engine
    application: Callable[..., Any]
    identity: ServerIdentity
    context: ssl.SSLContext
    backups: BackupSchedule | None
    acme: AcmeService

    def close(self) -> None:
        """Once the listeners stopped: the validation workers, then the database."""
        self.acme.close()
        self.database.close()


def open_service(
    args: argparse.Namespace,
    endpoint: Endpoint,
    clock: Clock,
    operations: server_ops.Operations,
) -> Service:
    """Open the database, create what is missing (CAs, server key), build the app; the
    database is closed again if anything fails."""
    authorities = open_authorities(args, endpoint, clock, operations.recorder)
    try:
        operations.watched = watched(args, authorities, clock)
        return _build_service(args, endpoint, clock, authorities, operations)
    except BaseException:
        authorities.database.close()
        raise


def watched(
    args: argparse.Namespace, authorities: Authorities, clock: Clock
) -> server_ops.Watched:
    """What /health and the metrics read."""
    return server_ops.Watched(
        {
            "cau": (authorities.cau, authorities.cau_storage, args.user_crt_validity),
            "cas": (authorities.cas, authorities.cas_storage, args.service_crt_validity),
        },
        authorities.database,
        args.backup_directory,
        args.backup_period,
        clock,
        clock(),
    )


def _build_service(
    args: argparse.Namespace,
    endpoint: Endpoint,
    clock: Clock,
    authorities: Authorities,
    operations: server_ops.Operations,
) -> Service:
    announce_key_changes(args, authorities)
    backups = None
    if args.backup_directory is not None:
        backups = BackupSchedule(
            args.backup_directory,
            args.backup_period,
            authorities.cau,
            authorities.cau_storage,
            keep=args.backup_keep,
            cluster=authorities.cluster,
            observer=operations.recorder,
        )
    authorities.cau.prepare_crl_entries()
    authorities.cas.prepare_crl_entries()
    identity = ServerIdentity(
        args.server_key,
        authorities.http_cas,
        authorities.cau,
        endpoint.host,
        authorities.key_spec,
        args.threshold,
        clock,
    )
    identity.prepare()
    acme = AcmeService(
        authorities.database, authorities.cas, acme_settings(args), clock, operations.recorder
    )
    try:
        application = make_application(args, authorities, acme, clock, operations)
        context = identity.make_context()
    except BaseException:
        acme.close()
        raise
    return Service(authorities.database, application, identity, context, backups, acme)


def serve(args: argparse.Namespace, endpoint: Endpoint, stop: StopSignal) -> None:
    """Bind, open everything, say Listening, and run the main loop until stopped."""
    clock = utcnow
    addresses = resolve_addresses(args.bind or [endpoint.host], endpoint.http_port)
    plain, secure = bind_listeners(addresses, endpoint)
    servers: list[CaucasedServer] = [*plain, *secure]
    try:
        operations = server_ops.open_operations(args, clock)
    except BaseException:
        close_listeners(servers)
        raise
    try:
        service = open_service(args, endpoint, clock, operations)
    except BaseException:
        close_listeners(servers)
        operations.close()
        raise
    for server in secure:
        server.ssl_context = service.context
    announce_listeners(addresses, endpoint)
    start_serving(servers, service.application)
    server_ops.start_metrics(operations, servers)
    try:
        MainLoop(service.identity, secure, service.backups, clock).run(stop)
    finally:
        write_line(sys.stderr, "Exiting\n")
        stop_serving(servers)
        operations.close()
        service.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of `caucased`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_key_options(parser, args)
    check_acme_options(parser, args)
    endpoint = parse_endpoint(parser, args)
    problem = check_parent_directories(args) or server_ops.check_options(args)
    if problem is not None:
        parser.error(problem)
    stop = StopSignal()
    try:
        serve(args, endpoint, stop)
    except (CaucaseError, OSError, ValueError) as error:
        write_line(sys.stderr, f"caucased: error: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
