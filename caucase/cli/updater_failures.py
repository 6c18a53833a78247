"""What a pass of caucase-updater can fail with, and the line that tells it.

A failure the server, the network or an operator may fix (TRANSIENT) is retried: no
answer, an HTTP error, an unusable answer, a certificate that expired or was revoked, a
certificate not valid yet. Any other error is local (files, options) and ends the process.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator

from cryptography import x509

from caucase.exceptions import CaucaseError, CaucaseHTTPError, CaucaseNetworkError, UnusableAnswer


class RetryLater(CaucaseError):
    """What the server, the network or an operator may fix: the pass is tried again."""


class RequestFailed(RetryLater):
    """The server refused a request."""


class CertificateLost(RetryLater):
    """The certificate expired or was revoked: renewing it is impossible until someone
    gets a new one (said at every check, so that it is noticed)."""

    def __init__(self, crt: str, certificate: x509.Certificate, what: str) -> None:
        super().__init__(
            f"{crt}: certificate {certificate.serial_number:#x} {what}: it cannot be renewed "
            f"with its key; submit a CSR again with --csr (remove the certificate from {crt} "
            "and the updater submits --csr; caucase-rerequest makes a CSR for a new key)"
        )


# A ValueError: malformed data from the server.
TRANSIENT = (CaucaseNetworkError, RetryLater, UnusableAnswer, ValueError)


def format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000")


@contextlib.contextmanager
def during(action: str) -> Iterator[None]:
    """Name the failed request in HTTP errors, which otherwise only carry a status."""
    try:
        yield
    except CaucaseHTTPError as error:
        reason = error.body.decode("utf-8", "replace").strip().splitlines()[:1]
        detail = f": {reason[0][:200]}" if reason else ""
        raise RequestFailed(f"{action}: server answered HTTP {error.status}{detail}") from None


def failure_line(
    error: BaseException, retry_at: datetime.datetime, attempt: int, delay: datetime.timedelta
) -> str:
    """The one line logged for a failed attempt: what failed, and when the next one is.
    Network errors keep the reference's wording (cli.md 4.4), which scripts look for."""
    when = f"attempt {attempt}, next try in {delay.total_seconds():.0f} s"
    if isinstance(error, CaucaseNetworkError):
        cause = error.cause
        request = f"{error.method} {error.url}".strip()
        return (
            f"Got a network error, retrying at {format_time(retry_at)}, "
            f"{type(cause).__name__}: {str(cause)!r} ({request}), {when}"
        )
    if isinstance(error, ValueError):
        error = UnusableAnswer(f"malformed data from the server: {error}")
    return f"Check failed, retrying at {format_time(retry_at)}: {error} ({when})"
