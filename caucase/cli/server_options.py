"""caucased's command line (cli 8.1): options with their defaults and units, the endpoint
they name, and the checks made before anything is created."""

from __future__ import annotations

import argparse
import os
import urllib.parse
from dataclasses import dataclass

from caucase import __version__
from caucase.acme.resolver import parse_dns_server
from caucase.backup_schedule import check_backup_directory
from caucase.cli import server_ops
from caucase.crypto import keys
from caucase.ports import https_port_for
from caucase.storage import is_url

MAX_CN_LENGTH = 64


@dataclass(frozen=True)
class Endpoint:
    """Where caucased is reached: the public netloc and the local ports."""

    netloc: str
    host: str
    http_port: int

    @property
    def https_port(self) -> int:
        return https_port_for(self.http_port)


def _positive_days(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of days, got {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count of 0 or more, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Options, defaults, arities and repetition rules of cli 8.1, metavars as the
    reference shows them."""
    parser = argparse.ArgumentParser(
        prog="caucased",
        description="caucase certificate authority server: a CAU signing user "
        "certificates and a CAS signing service certificates, over HTTP and HTTPS.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    add = parser.add_argument
    add(
        "--db",
        default="caucase.sqlite",
        help="database of the authorities: an SQLite file, created (mode 0600) when "
        "missing, or a postgresql:// URL (libpq's, credentials from the environment or "
        "~/.pgpass) that several caucased may share (default: %(default)s)",
    )
    add(
        "--server-key",
        default="server.key.pem",
        metavar="KEY_PATH",
        help="file holding caucased's own HTTPS key and certificate, made or renewed "
        "as needed (default: %(default)s)",
    )
    add(
        "--cors-key-store",
        default="cors.key",
        metavar="PATH",
        help="file keeping the secrets that sign CORS consent tokens; unused with a "
        "PostgreSQL --db, which keeps them for every caucased (default: %(default)s)",
    )
    add(
        "--cors-whitelist",
        nargs="+",
        default=[],
        metavar="URL",
        help="origins always allowed to use credentials cross-origin, compared "
        "exactly with the Origin header (default: none)",
    )
    add(
        "--netloc",
        required=True,
        help="host[:port] by which clients reach this service, written into CA names, "
        "CRL URLs and the HTTPS certificate; ASCII only, IDNA-encode other host names "
        "(required)",
    )
    add(
        "--base-port",
        type=int,
        help="local HTTP port; HTTPS listens on the next port, or on 443 when this "
        "is 80 (default: the port of --netloc, else 80)",
    )
    add(
        "--bind",
        action="append",
        help="local address to listen on, repeatable (default: every address the "
        "--netloc host resolves to)",
    )
    add(
        "--threshold",
        type=float,
        default=31,
        help="renew the HTTPS certificate when it has fewer days of validity left "
        "than this; no renewal window suggested to clients ends later than this before "
        "expiry (default: %(default)s days)",
    )
    add(
        "--key-type",
        choices=keys.KEY_TYPE_NAMES,
        default=keys.KeyType.RSA.value,
        help="type of new CA keys (CAU, CAS and the HTTPS CA, each from its next rollover) "
        "and of the HTTPS key (default: %(default)s)",
    )
    add(
        "--key-len",
        type=int,
        metavar="BITLENGTH",
        help="size in bits of new RSA keys: CA keys and the HTTPS key; RSA only "
        "(default: 2048 bits)",
    )
    add(
        "--lock-auto-approve-count",
        action="store_true",
        help="store both auto-approve counts in the database the first time this is "
        "given; every later start uses the stored counts, whatever it is told",
    )
    _add_authority_options(parser)
    _add_acme_options(parser)
    server_ops.add_options(parser.add_argument_group("operability"))
    backups = parser.add_argument_group("backups")
    backups.add_argument(
        "--backup-directory",
        help="existing directory receiving encrypted backups, which the key of any "
        "user valid at backup time opens (default: none, no backups)",
    )
    backups.add_argument(
        "--backup-period",
        type=_positive_days,
        default=1,
        help="days between backups; a skipped or failed backup is retried after one "
        "period, or 1 hour when the period is longer (default: %(default)s day)",
    )
    backups.add_argument(
        "--backup-keep",
        type=_count,
        default=0,
        metavar="N",
        help="after each backup, delete the oldest backups caucased wrote in "
        "--backup-directory so that N remain, the new one included; other files are "
        "never touched; 0 keeps every backup (default: %(default)s, keep all)",
    )
    return parser


def _add_authority_options(parser: argparse.ArgumentParser) -> None:
    """The options of each authority, CAS then CAU."""
    validity = "in days, validity of the certificates it issues"
    max_csr = (
        "pending CSRs it holds at most; more are refused (HTTP 507) until some are "
        "signed or rejected (default: %(default)s)"
    )
    cas = parser.add_argument_group("service certificates (CAS)")
    cas.add_argument(
        "--service-crt-validity",
        type=float,
        default=93,
        metavar="DAYS",
        help=validity + " and of caucased's own HTTPS certificate; its CA "
        "certificates live 4 times as long (default: %(default)s days)",
    )
    cas.add_argument("--service-max-csr", type=int, default=50, help=max_csr)
    cas.add_argument(
        "--service-auto-approve-count",
        type=int,
        default=0,
        metavar="COUNT",
        help="number of first service CSRs signed on arrival, without a user's "
        "approval (default: %(default)s)",
    )
    cau = parser.add_argument_group("user certificates (CAU: users approve CSRs, open backups)")
    cau.add_argument(
        "--user-crt-validity",
        type=float,
        default=93,
        metavar="DAYS",
        help=validity + "; its CA certificates live 4 times as long (default: %(default)s days)",
    )
    cau.add_argument("--user-max-csr", type=int, default=50, help=max_csr)
    cau.add_argument(
        "--user-auto-approve-count",
        type=int,
        default=1,
        metavar="COUNT",
        help="number of first user CSRs signed on arrival, without approval; the "
        "default lets the first user in (default: %(default)s)",
    )


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}")
    return value


def _dns_server(text: str) -> tuple[str, int]:
    try:
        return parse_dns_server(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_acme_options(parser: argparse.ArgumentParser) -> None:
    """ACME (RFC 8555) for the CAS, at https://NETLOC/cas/acme/directory."""
    acme = parser.add_argument_group(
        "ACME (certbot, lego...: accounts need an external account binding that a CAU "
        "user mints with caucase --new-acme-eab; its scope is pre-authorized)"
    )
    acme.add_argument(
        "--acme-challenge",
        action="store_true",
        help="also issue for identifiers outside the account's scope once an http-01, "
        "dns-01 or tls-alpn-01 challenge proves control of them (default: refused)",
    )
    acme.add_argument(
        "--acme-open",
        action="store_true",
        help="accept ACME accounts without external account binding; their identifiers "
        "all need a challenge; requires --acme-challenge (default: every account needs "
        "a binding)",
    )
    acme.add_argument(
        "--acme-http-port",
        type=_port,
        default=80,
        metavar="PORT",
        help="port http-01 validation connects to (default: %(default)s)",
    )
    acme.add_argument(
        "--acme-tls-alpn-port",
        type=_port,
        default=443,
        metavar="PORT",
        help="port tls-alpn-01 validation connects to (default: %(default)s)",
    )
    acme.add_argument(
        "--acme-dns-server",
        type=_dns_server,
        metavar="HOST[:PORT]",
        help="DNS server every validation lookup goes to: A/AAAA of http-01 and "
        "tls-alpn-01, TXT of dns-01 (default: the system resolver)",
    )


def check_acme_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.acme_open and not args.acme_challenge:
        parser.error("--acme-open requires --acme-challenge")


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


def check_parent_directories(args: argparse.Namespace) -> str | None:
    """Why a file caucased writes cannot be created, checked before anything is."""
    files = [("--server-key", args.server_key), ("--cors-key-store", args.cors_key_store)]
    if not is_url(args.db):
        files.insert(0, ("--db", args.db))
    for option, path in files:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            return f"{option} {path!r}: directory {parent!r} does not exist"
    if args.backup_directory is not None:
        return check_backup_directory(args.backup_directory)
    return None
