"""caucase-updater's command line: the reference's options, metavars and defaults (cli.md
4.1), except --crl's metavar (CRL_PATH, where the reference says CRT_PATH) and
--max-sleep's default (6 hours, not 31 days), plus --status and --print-status."""

from __future__ import annotations

import argparse

from caucase import __version__
from caucase.cli.caucase_options import STORE_LAYOUT
from caucase.cli.key_options import RENEWAL_DEFAULT, key_len_option, key_type_option

# The longest sleep by default: the server's windows (and an operator's early renewal)
# reach every updater within six hours, RFC 9773's suggested polling interval.
DEFAULT_MAX_SLEEP_DAYS = 0.25


def status_parser() -> argparse.ArgumentParser:
    """`caucase-updater --print-status FILE`, which needs none of the other options."""
    parser = argparse.ArgumentParser(prog="caucase-updater", add_help=False)
    parser.add_argument("--print-status", metavar="STATUS_PATH")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caucase-updater",
        description="Get a certificate signed by caucased, then keep it, the CA certificates "
        "and the revocation lists up to date, forever. The certificate is renewed at a "
        "random moment of the renewal window the server suggests (without one, once "
        "--threshold is reached); failures are retried with a growing, random delay.",
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
        help="Renew the certificate at the latest once fewer than THRESHOLD days of "
        "validity are left (fractions allowed); without a window from the server, renew "
        "then. Default: %(default)s days",
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
        default=DEFAULT_MAX_SLEEP_DAYS,
        help="Longest time between two checks, in days (fractions allowed); each sleep is "
        "shortened by up to a quarter at random. Default: %(default)s days (6 hours)",
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
        help="CSR submitted when --crt holds no certificate (at start, or once the "
        "certificate was removed from it); unused otherwise.",
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
    parser.add_argument(
        "--status",
        metavar="STATUS_PATH",
        help="After every pass, write there (atomically) a JSON status for monitoring: "
        "certificate serial and notAfter, renewal window, last success, last error, next "
        "check. Default: none",
    )
    parser.add_argument(
        "--print-status",
        metavar="STATUS_PATH",
        help="Print the status file written by --status for a person, and exit (no other "
        "option needed).",
    )
    return parser
