"""The options of `caucase` (cli.md 3.1): names, metavars, defaults and arities of the
reference, so that its command lines keep working; help texts say units and defaults."""

from __future__ import annotations

import argparse
import datetime
import re
from typing import Any

from caucase import __version__
from caucase.cli.inventory import LIST_FILTERS, LIST_OPTIONS
from caucase.cli.key_options import RENEWAL_DEFAULT, key_len_option, key_type_option
from caucase.clock import as_utc

# How openssl prints a serial number ("Serial Number:" of `openssl x509 -text`).
_COLON_HEX = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2})+")


def parse_serial(text: str) -> int:
    """A serial number as decimal, 0x-prefixed hex, or colon-separated hex; never negative
    (RFC 5280 4.1.2.2: a positive integer; a negative one breaks the reference's CRLs)."""
    value = text.strip()
    try:
        if value[:2].lower() == "0x":
            number = int(value[2:], 16)
        elif _COLON_HEX.fullmatch(value):
            number = int(value.replace(":", ""), 16)
        else:
            number = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid serial number {text!r}: give it in decimal, as 0x... or as aa:bb:..."
        ) from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"invalid serial number {text!r}: it is negative")
    return number


def parse_date(text: str) -> datetime.datetime:
    """An ISO 8601 date or date and time (UTC unless it gives its offset)."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r}: give YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
        ) from None
    return as_utc(moment)


def parse_hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 31 * 24:
        raise argparse.ArgumentTypeError(
            f"invalid number of hours {text!r}: more than 0, at most 744 (31 days)"
        )
    return value


PAIR = {"nargs": 2, "action": "append", "default": []}
SEVERAL = {"nargs": "+", "default": []}
STORE_LAYOUT = (
    "a PEM file, or a directory of one PEM file per entry (a missing path becomes a "
    "directory when it has no extension)"
)
GENERAL_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--ca-url", {"required": True, "metavar": "URL",
                  "help": "Base URL of caucased's HTTP listener, scheme included: "
                          "http://HOST[:PORT] (port 80 by default). Authenticated requests "
                          "go to its HTTPS port: PORT + 1, or 443 for port 80."}),
    ("--ca-crt", {"default": "cas.crt.pem", "metavar": "CRT_PATH",
                  "help": f"Service (CAS) CA certificates, kept up to date: {STORE_LAYOUT}. "
                          "Default: %(default)s"}),
    ("--user-ca-crt", {"default": "cau.crt.pem", "metavar": "CRT_PATH",
                       "help": "User (CAU) CA certificates, same layout as --ca-crt; kept up "
                               "to date with --update-user or --mode user. "
                               "Default: %(default)s"}),
    ("--crl", {"default": "cas.crl.pem", "metavar": "CRL_PATH",
               "help": f"Service (CAS) revocation lists, kept up to date: {STORE_LAYOUT}. "
                       "Default: %(default)s"}),
    ("--user-crl", {"default": "cau.crl.pem", "metavar": "CRL_PATH",
                    "help": "User (CAU) revocation lists, same layout as --crl; kept up to "
                            "date with --update-user. Default: %(default)s"}),
    ("--threshold", {"default": 31, "type": float, "metavar": "THRESHOLD",
                     "help": "--renew-crt renews a certificate once fewer than THRESHOLD "
                             "days of validity are left (fractions allowed). "
                             "Default: %(default)s days"}),
    key_type_option(RENEWAL_DEFAULT + " (for --renew-crt)"),
    key_len_option("the size of the RSA key being replaced, else 2048"),
    ("--on-renew", {"metavar": "EXECUTABLE_PATH",
                    "help": "Shell command line (run by /bin/sh -c) run at the end when a CA, "
                            "CRL or certificate file changed; if it fails, the exit status "
                            "is 3. Default: none"}),
    ("--user-key", {"metavar": "KEY_PATH",
                    "help": "PEM file holding a CAU user certificate and its private key "
                            "(unencrypted), needed by the authenticated actions."}),
    ("--mode", {"default": "service", "choices": ("service", "user"),
                "help": "Authority the actions address: service (the CAS, which certifies "
                        "services) or user (the CAU, which certifies caucase operators). "
                        "Default: %(default)s"}),
    ("--before", {"type": parse_date, "metavar": "DATE",
                  "help": "--renew-early-all moves only certificates whose validity "
                          "started before DATE (YYYY-MM-DD[THH:MM[:SS]], UTC unless an "
                          "offset is given). Default: every valid certificate"}),
    ("--spread", {"type": parse_hours, "default": 4, "metavar": "HOURS",
                  "help": "--renew-early and --renew-early-all move renewal windows to "
                          "'from now to HOURS from now' (fractions allowed), each "
                          "certificate its own part of it. Default: %(default)s hours"}),
]  # fmt: skip
ANONYMOUS_ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--send-csr", {**SEVERAL, "metavar": "CSR_PATH",
                    "help": "Submit each CSR and print '<CSR_ID> <CSR_PATH>'; the same CSR "
                            "submitted again gets the same id."}),
    ("--get-crt", {**PAIR, "metavar": ("CSR_ID", "CRT_PATH"),
                   "help": "Append the certificate issued for CSR_ID to CRT_PATH, which, if "
                           "it exists, must hold only the matching private key. Exit status "
                           "2 while the CSR is pending. Repeatable."}),
    ("--revoke-crt", {**PAIR, "metavar": ("CRT_PATH", "KEY_PATH"),
                      "help": "Revoke a certificate by proving possession of its private key; "
                              "KEY_PATH is ignored (may be '') when CRT_PATH holds the key. "
                              "Repeatable."}),
    ("--renew-crt", {**PAIR, "metavar": ("CRT_PATH", "KEY_PATH"),
                     "help": "Replace a certificate that reached --threshold by a new one for "
                             "a new key, written where the old ones were read from (KEY_PATH "
                             "is ignored, may be '', when CRT_PATH holds the key). Repeatable."}),
    ("--get-csr", {**PAIR, "metavar": ("CSR_ID", "CSR_PATH"),
                   "help": "Append pending CSR CSR_ID to CSR_PATH, to read it before signing "
                           "or rejecting it. Repeatable."}),
    ("--update-user", {"action": "store_true",
                       "help": "Also keep --user-ca-crt and --user-crl up to date (for an "
                               "HTTPS front-end that authenticates caucase users)."}),
]  # fmt: skip
AUTHENTICATED_ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--list-csr", {"action": "store_true",
                    "help": "Print the pending CSRs of --mode, after every other action."}),
    ("--sign-csr", {**SEVERAL, "metavar": "CSR_ID",
                    "help": "Sign these pending CSRs as submitted."}),
    ("--sign-csr-with", {**PAIR, "metavar": ("CSR_ID", "CSR_PATH"),
                         "help": "Sign pending CSR CSR_ID with the subject and extensions of "
                                 "the CSR in CSR_PATH (the key stays the submitted one). "
                                 "Repeatable."}),
    ("--reject-csr", {**SEVERAL, "metavar": "CSR_ID", "help": "Delete these pending CSRs."}),
    ("--revoke-other-crt", {**SEVERAL, "metavar": "CRT_PATH",
                            "help": "Revoke the certificate in each file, without its key."}),
    ("--revoke-serial", {**SEVERAL, "type": parse_serial, "metavar": "SERIAL",
                         "help": "Revoke by serial number: decimal, 0x-prefixed hex, or "
                                 "openssl's colon-separated hex (3a:f2:...). Nothing checks "
                                 "it: a typo revokes some other certificate, and the entry "
                                 "stays in the CRL until every current CA certificate "
                                 "expired. Prefer --revoke-crt or --revoke-other-crt."}),
    ("--renew-early", {**SEVERAL, "type": parse_serial, "metavar": "SERIAL",
                       "help": "Ask the holders of these certificates (by serial, written as "
                               "for --revoke-serial) to renew them now, with new keys: "
                               "their renewal windows move to now, spread over --spread, "
                               "and stay there until they are renewed; the old "
                               "certificates keep working until they expire."}),
    ("--renew-early-all", {"action": "store_true",
                           "help": "The same for every valid certificate of --mode's "
                                   "authority (issued before --before, when given), e.g. "
                                   "after a suspected key compromise or before a CA "
                                   "rollover."}),
    ("--new-acme-eab", {"nargs": "+", "action": "append", "default": [],
                        "metavar": "PATTERN",
                        "help": "Mint an ACME external account binding and print "
                                "'<KID> <HMAC_KEY>' (give them to certbot's --eab-kid and "
                                "--eab-hmac-key, lego's --kid and --hmac). The account "
                                "bound to it gets certificates without challenge for "
                                "the names the patterns cover: NAME, *.DOMAIN (any name "
                                "below DOMAIN), an IP address, or * (anything); DNS names "
                                "in A-labels (xn--...). Repeatable."}),
    ("--show-acme-eab", {"action": "store_true",
                         "help": "Print the ACME external account bindings: kid, status, "
                                 "bound account, when and by whom minted, scope."}),
    ("--revoke-acme-eab", {**SEVERAL, "metavar": "KID",
                           "help": "Revoke these ACME external account bindings and the "
                                   "accounts bound to them (their certificates stay "
                                   "valid until revoked)."}),
    *LIST_OPTIONS,
]  # fmt: skip
AUTHENTICATED_NAMES = [name for name, _ in AUTHENTICATED_ACTIONS]
LATER_OPTIONS = frozenset(name for name, _ in (*LIST_OPTIONS, *LIST_FILTERS))


class _Parser(argparse.ArgumentParser):
    """Long-option prefixes keep the meaning they had with the reference's options: where
    one of the inventory's options (which the reference lacks) makes a prefix ambiguous,
    the reference's option wins (``--list`` is ``--list-csr``, ``--v`` is ``--version``)."""

    def _get_option_tuples(self, option_string: str) -> list[Any]:
        matches: list[Any] = super()._get_option_tuples(option_string)
        if len(matches) > 1:
            matches = [match for match in matches if match[1] not in LATER_OPTIONS]
        return matches


def build_parser() -> argparse.ArgumentParser:
    """Every option of cli.md 3.1, with the reference names, metavars, defaults and arities:
    "append" options accumulate, the other multi-value ones keep the last occurrence."""
    parser = _Parser(
        prog="caucase",
        description="caucase client: get certificates signed by a caucased, renew and revoke "
        "them, keep CA certificates and revocation lists up to date; with a user "
        "certificate, sign, reject and revoke the certificates of others. What scripts parse "
        "goes to stdout; confirmations and errors go to stderr.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    groups = [
        (parser, GENERAL_OPTIONS),
        (parser.add_argument_group("Anonymous actions", "No user certificate needed."),
         ANONYMOUS_ACTIONS),
        (parser.add_argument_group(
            "Authenticated actions", "Need --user-key, a certificate of the CAU."),
         AUTHENTICATED_ACTIONS),
        (parser.add_argument_group("--list-crt filters and format"), LIST_FILTERS),
    ]  # fmt: skip
    for group, options in groups:
        for name, settings in options:
            group.add_argument(name, **settings)
    return parser
