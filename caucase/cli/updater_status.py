"""caucase-updater's status file (``--status FILE``), and its reading for a person
(``caucase-updater --print-status FILE``).

Written atomically after every pass, so that monitoring always reads a whole document:
``{"pid", "written_at", "crt", "serial", "not_after", "window": {"start", "end",
"source"}, "renewal_at", "last_renewal", "last_success", "last_error": {"at", "message",
"attempt"}, "next_check"}``; times are RFC 3339 UTC, serials decimal strings, absent
values null. ``window.source`` is "server" (the server's suggestion) or "threshold" (no
suggestion: notAfter minus --threshold, the reference's rule).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, TextIO

from caucase.crypto import pemfile
from caucase.exceptions import CaucaseError
from caucase.renewal import RenewalWindow

SERVER = "server"
THRESHOLD = "threshold"


def _time(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object) -> datetime.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc
    )


@dataclasses.dataclass
class Failure:
    at: datetime.datetime
    message: str
    attempt: int


@dataclasses.dataclass
class UpdaterStatus:
    """What the last passes found and did."""

    crt: str | None = None
    serial: int | None = None
    not_after: datetime.datetime | None = None
    window: RenewalWindow | None = None
    window_source: str | None = None
    renewal_at: datetime.datetime | None = None
    last_renewal: datetime.datetime | None = None
    last_success: datetime.datetime | None = None
    last_error: Failure | None = None
    next_check: datetime.datetime | None = None

    def to_json(self, written_at: datetime.datetime) -> dict[str, Any]:
        window = None
        if self.window is not None:
            window = {
                "start": _time(self.window.start),
                "end": _time(self.window.end),
                "source": self.window_source,
            }
        error = None
        if self.last_error is not None:
            error = {
                "at": _time(self.last_error.at),
                "message": self.last_error.message,
                "attempt": self.last_error.attempt,
            }
        return {
            "pid": os.getpid(),
            "written_at": _time(written_at),
            "crt": self.crt,
            "serial": None if self.serial is None else str(self.serial),
            "not_after": _time(self.not_after),
            "window": window,
            "renewal_at": _time(self.renewal_at),
            "last_renewal": _time(self.last_renewal),
            "last_success": _time(self.last_success),
            "last_error": error,
            "next_check": _time(self.next_check),
        }

    def write(self, path: str, now: datetime.datetime) -> None:
        """Replace `path` atomically (a reader never sees half a document)."""
        document = json.dumps(self.to_json(now), indent=2) + "\n"
        pemfile.write_file(path, document.encode())


def _ago(moment: datetime.datetime, now: datetime.datetime) -> str:
    """ "in 3 hours", "5 minutes ago": the distance from now, in its largest unit."""
    seconds = (moment - now).total_seconds()
    size = abs(seconds)
    unit, count = "second", int(size)
    for name, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if size >= length:
            unit, count = name, int(size // length)
            break
    text = f"{count} {unit}" + ("" if count == 1 else "s")
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def _when(value: datetime.datetime | None, now: datetime.datetime, never: str = "never") -> str:
    if value is None:
        return never
    return f"{value:%Y-%m-%d %H:%M:%S} UTC ({_ago(value, now)})"


def describe(document: dict[str, Any], now: datetime.datetime) -> list[str]:
    """The lines --print-status shows; ValueError for a document that is not a status."""
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    written = _parse_time(document.get("written_at"))
    lines = [f"Written:      {_when(written, now)} by process {document.get('pid')}"]
    crt = document.get("crt")
    if crt is None:
        lines.append("Certificate:  none (only CA certificates and revocation lists)")
    else:
        serial = document.get("serial")
        number = f", serial {int(serial):#x}" if isinstance(serial, str) else ""
        lines.append(f"Certificate:  {crt}{number}")
        lines.append(
            f"Valid until:  {_when(_parse_time(document.get('not_after')), now, 'unknown')}"
        )
        window = document.get("window")
        if isinstance(window, dict):
            source = "suggested by the server" if window.get("source") == SERVER else "threshold"
            start, end = _parse_time(window.get("start")), _parse_time(window.get("end"))
            lines.append(
                f"Window:       {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC ({source})"
            )
        lines.append(
            f"Renewal at:   {_when(_parse_time(document.get('renewal_at')), now, 'unknown')}"
        )
        lines.append(f"Last renewal: {_when(_parse_time(document.get('last_renewal')), now)}")
    lines.append(f"Last success: {_when(_parse_time(document.get('last_success')), now)}")
    error = document.get("last_error")
    if isinstance(error, dict):
        at = _parse_time(error.get("at"))
        lines.append(f"Last error:   {_when(at, now)}, attempt {error.get('attempt')}:")
        lines.append(f"  {error.get('message')}")
    else:
        lines.append("Last error:   never")
    lines.append(f"Next check:   {_when(_parse_time(document.get('next_check')), now, 'unknown')}")
    return lines


def print_status(path: str, now: datetime.datetime, out: TextIO) -> None:
    """Print the status file at `path` for a person; CaucaseError when unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        lines = describe(document, now)
    except OSError as error:
        raise CaucaseError(f"{path}: {error.strerror}") from None
    except (ValueError, TypeError) as error:
        raise CaucaseError(f"{path} is not a caucase-updater status file ({error})") from None
    print("\n".join(lines), file=out)
