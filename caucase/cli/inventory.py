"""`caucase --list-crt`: the issued certificates of an authority, read page by page from
its inventory (``GET {ca}/inventory``) and printed as they come, one line (or one JSON
object, with --json) per certificate; and what `--revoke-serial` asks the inventory first.

A caucase 0.9.17 server has no inventory: --list-crt then fails with one line, and
--revoke-serial revokes without asking, as the reference client does.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Iterator
from typing import Any, Callable

from caucase.client import CaucaseClient
from caucase.exceptions import CaucaseError, CaucaseHTTPError

MAX_DAYS = 100_000
NO_INVENTORY = (
    "this server keeps no certificate inventory (caucase 0.9.17 does not): --list-crt "
    "needs caucased 1.0.0 or later"
)
_PAGE_SIZE = "1000"


def _days(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_DAYS:
        raise argparse.ArgumentTypeError(
            f"invalid number of days {text!r}: a whole number from 0 to {MAX_DAYS}"
        )
    return value


LIST_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--list-crt", {"action": "store_true",
                    "help": "Print every certificate --mode's authority issued, one per "
                            "line: serial, notBefore, notAfter, status (valid, revoked, "
                            "expired), approval (auto, user, renewed, acme, unknown), key "
                            "type, subject, SANs; in the order they expire."}),
]  # fmt: skip
LIST_FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("--expiring-within", {"type": _days, "metavar": "DAYS",
                           "help": "--list-crt: only certificates not expired yet that "
                                   "expire within DAYS days."}),
    ("--subject-match", {"metavar": "TEXT",
                         "help": "--list-crt: only certificates whose subject (as "
                                 "CN=...,O=...) contains TEXT, ASCII case ignored."}),
    ("--revoked", {"action": "store_true", "help": "--list-crt: only revoked certificates."}),
    ("--valid", {"action": "store_true",
                 "help": "--list-crt: only certificates neither revoked nor expired."}),
    ("--json", {"action": "store_true",
                "help": "--list-crt: print one JSON object per line (the server's fields: "
                        "serial in decimal, not_before, not_after, subject, sans, key_type, "
                        "approval, revoked, revoked_at) instead of text."}),
]  # fmt: skip


def check_list_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Filters go with --list-crt; --revoked and --valid exclude each other."""
    if args.revoked and args.valid:
        parser.error("--revoked and --valid cannot be used together")
    given = [name for name, _ in LIST_FILTERS if getattr(args, name[2:].replace("-", "_"))]
    if given and not args.list_crt:
        parser.error(f"{given[0]} only applies to --list-crt")


def printable(text: str) -> str:
    """`text` with what is not printable escaped, so that no value fakes a listing row."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def list_parameters(args: argparse.Namespace) -> dict[str, str]:
    """The inventory query of the command line's filters."""
    parameters = {"limit": _PAGE_SIZE}
    if args.expiring_within is not None:
        parameters["expiring_within"] = str(args.expiring_within)
    if args.subject_match:
        parameters["subject"] = args.subject_match
    if args.revoked or args.valid:
        parameters["status"] = "revoked" if args.revoked else "valid"
    return parameters


def iter_certificates(client: CaucaseClient, parameters: dict[str, str]) -> Iterator[Any]:
    """Every certificate the query selects, following the pages' cursors."""
    cursor: object = None
    seen: set[str] = set()
    while True:
        query = dict(parameters) if cursor is None else {**parameters, "cursor": str(cursor)}
        try:
            page = client.get_inventory_page(query)
        except CaucaseHTTPError as error:
            if error.status in (404, 405):
                raise CaucaseError(NO_INVENTORY) from None
            raise
        yield from page["certificates"]
        cursor = page.get("next")
        if not isinstance(cursor, str) or not cursor:
            return
        if cursor in seen:  # a server going round in circles would never end
            raise CaucaseError("server returned a page it had already returned")
        seen.add(cursor)


def _status(entry: dict[str, Any], now: datetime.datetime) -> str:
    if entry.get("revoked"):
        return "revoked"
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if str(entry.get("not_after")) < stamp:
        return "expired"
    return "not yet valid" if str(entry.get("not_before")) > stamp else "valid"


def format_line(entry: Any, now: datetime.datetime) -> str:
    """One certificate on one line, fields separated by ' | ' (serial in hex, as openssl
    prints it and --revoke-serial takes it)."""
    serial = str(entry.get("serial", "")) if isinstance(entry, dict) else ""
    if not (serial.isascii() and serial.isdigit()):
        raise CaucaseError("server returned an invalid certificate list")
    sans = entry.get("sans")
    fields = [
        f"{int(serial):#x}",
        str(entry.get("not_before")),
        str(entry.get("not_after")),
        _status(entry, now),
        str(entry.get("approval")),
        str(entry.get("key_type")),
        str(entry.get("subject")),
        ",".join(map(str, sans)) if isinstance(sans, list) and sans else "-",
    ]
    return " | ".join(printable(field) for field in fields)


def list_crt(
    client: CaucaseClient,
    args: argparse.Namespace,
    now: datetime.datetime,
    say: Callable[[str], None],
) -> int:
    """Print the listing as it arrives; how many certificates it held."""
    count = 0
    for entry in iter_certificates(client, list_parameters(args)):
        say(json.dumps(entry) if args.json else format_line(entry, now))
        count += 1
    return count


def serial_is_known(client: CaucaseClient, serial: int) -> bool | None:
    """Whether the authority's inventory lists `serial`; None when the server keeps no
    inventory (caucase 0.9.17), which cannot tell."""
    try:
        page = client.get_inventory_page({"serial": str(serial), "limit": "1"})
    except CaucaseHTTPError as error:
        if error.status in (404, 405):
            return None
        raise
    return bool(page["certificates"])
