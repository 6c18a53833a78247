"""``GET {ca}/inventory``: every certificate the authority issued, one bounded page at a
time (``caucase --list-crt``); CAU users only.

Query parameters, each at most once: ``limit`` (1 to 1000, default 100), ``cursor`` (the
``next`` of the previous page), ``expiring_within`` (days: not expired, notAfter within
that many days), ``subject`` (substring of the RFC 4514 subject, ASCII case ignored),
``status`` (``revoked``, or ``valid``: neither revoked nor expired), ``serial`` (decimal).
Anything else is 400.
"""

from __future__ import annotations

import datetime
import json
import urllib.parse
from typing import Any

from caucase.http.handlers import JSON, Service
from caucase.http.request import HTTPError, Request, Response
from caucase.storage.inventory import MAX_PAGE, BadQuery, InventoryEntry, Query

DAY = 86400
MAX_DAYS = 100_000
_PARAMETERS = ("limit", "cursor", "expiring_within", "subject", "status", "serial")


def _number(name: str, text: str, maximum: int) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 60 or int(text) > maximum:
        raise HTTPError(400, f"{name} must be an integer from 0 to {maximum}".encode())
    return int(text)


def parse_query(query_string: str) -> Query:
    """The listing a query string asks for; 400 naming the parameter at fault."""
    try:
        parsed = urllib.parse.parse_qs(
            query_string, keep_blank_values=True, strict_parsing=True, errors="strict"
        )
    except (ValueError, UnicodeDecodeError):
        raise HTTPError(400, b"Malformed query string") from None
    for name, values in parsed.items():
        if name not in _PARAMETERS:
            raise HTTPError(400, f"Unknown parameter {name!r}".encode("utf-8", "replace"))
        if len(values) != 1 or not values[0]:
            raise HTTPError(400, f"{name} must be given once, not empty".encode())
    fields = {name: values[0] for name, values in parsed.items()}
    within = fields.get("expiring_within")
    serial = fields.get("serial")
    try:
        return Query(
            expiring_within=None
            if within is None
            else _number("expiring_within", within, MAX_DAYS) * DAY,
            subject=fields.get("subject"),
            status=fields.get("status"),
            serial=None if serial is None else _number("serial", serial, 2**160 - 1),
            cursor=fields.get("cursor"),
            limit=_number("limit", fields.get("limit", "100"), MAX_PAGE),
        )
    except BadQuery as error:
        raise HTTPError(400, str(error).encode()) from None


def _time(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def entry_json(entry: InventoryEntry) -> dict[str, Any]:
    """One certificate as the listing gives it (serials as decimal strings: JSON numbers
    lose precision past 2**53)."""
    return {
        "serial": str(entry.serial),
        "not_before": _time(entry.not_before),
        "not_after": _time(entry.not_after),
        "subject": entry.subject,
        "sans": list(entry.sans),
        "key_type": entry.key_type,
        "approval": entry.approval,
        "revoked": entry.revoked_at is not None,
        "revoked_at": _time(entry.revoked_at),
    }


def list_certificates(service: Service, request: Request, _: int, __: None) -> Response:
    query = parse_query(str(request.environ.get("QUERY_STRING", "")))
    entries, cursor = service.authority(request).list_certificates(query)
    body = {"certificates": [entry_json(entry) for entry in entries], "next": cursor}
    return Response(200, [("Content-Type", JSON)], json.dumps(body).encode())
