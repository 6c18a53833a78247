"""caucase-probe: check that a caucased serves the same CAS over HTTP and HTTPS.

Meant for monitoring: status 0 when healthy, 1 otherwise, with one line on stderr either
way and nothing on stdout (cli.md 5). With --health, it prints caucased's GET /health
report on stdout instead, and exits 1 unless the report says every check passed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from caucase import __version__
from caucase.client import CaucaseClient, Response, parse_ca_url
from caucase.crypto import pemfile
from caucase.exceptions import CaucaseError, CaucaseHTTPError

CA_PATH = "/crt/ca.crt.pem"


class _HTTPSOnlyClient(CaucaseClient):
    """Sends even the anonymous requests over the HTTPS connection."""

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], https: bool
    ) -> Response:
        return super()._exchange(method, path, body, headers, True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caucase-probe",
        description="Check that a caucased answers over HTTP and HTTPS with the same CAS.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "ca_url",
        help="Base URL of caucased's HTTP listener, scheme included, e.g. "
        "http://ca.example:8000 (its HTTPS listener is then expected on port 8001).",
    )
    parser.add_argument(
        "--health",
        action="store_true",
        help="print caucased's health report (GET /health over HTTP) and exit non-zero "
        "unless every check passes",
    )
    return parser


def _is_one_certificate(body: bytes) -> bool:
    blocks = pemfile.split_blocks(body)
    return len(blocks) == 1 and blocks[0].kind is pemfile.BlockKind.CERTIFICATE


def _fetch_ca(client: CaucaseClient, scheme: str) -> bytes:
    """The CA certificate body, an HTTP error status becoming a one-line CaucaseError."""
    try:
        return client.get_ca_certificate()
    except CaucaseHTTPError as error:
        raise CaucaseError(
            f"{scheme} GET {client.ca_url}{CA_PATH} answered HTTP {error.status}"
        ) from None


def probe(ca_url: str) -> None:
    """HTTP, then HTTPS, then HTTP again, so that a CA rollover between the first two
    requests is not taken for a mismatch. CaucaseError describes any failure."""
    try:
        parse_ca_url(ca_url)
    except CaucaseError as error:
        raise CaucaseError(f"ca_url: {error}") from None
    service_url = ca_url + "/cas"
    with CaucaseClient(service_url) as http_client, _HTTPSOnlyClient(service_url) as tls_client:
        first = _fetch_ca(http_client, "http")
        if not _is_one_certificate(first):
            raise CaucaseError(f"{service_url}{CA_PATH} is not a CA certificate: not a caucased?")
        over_tls = _fetch_ca(tls_client, "https")
        if over_tls in (first, _fetch_ca(http_client, "http")):
            return
    raise CaucaseError(f"{ca_url}: http and https do not serve the same caucase database")


def health(ca_url: str, out: TextIO) -> bool:
    """Print the health report; whether it says every check passed (status 200)."""
    try:
        parse_ca_url(ca_url)
    except CaucaseError as error:
        raise CaucaseError(f"ca_url: {error}") from None
    with CaucaseClient(ca_url) as client:
        status, _, body = client.get("/health")
    try:
        report = json.loads(body)
    except ValueError:
        report = None
    if status not in (200, 503) or not isinstance(report, dict):
        raise CaucaseError(f"{ca_url}/health answered HTTP {status}: not a caucased health report")
    out.write(body.decode("utf-8", "replace"))
    return status == 200 and report.get("status") == "pass"


def main(
    argv: Sequence[str] | None = None, stderr: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    """0 when healthy; 1 with one line on stderr otherwise."""
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)
    if args.health:
        try:
            healthy = health(args.ca_url, stdout or sys.stdout)
        except CaucaseError as error:
            print(f"caucase-probe: {error}", file=err)
            return 1
        print(f"caucase-probe: {args.ca_url}: {'healthy' if healthy else 'unhealthy'}", file=err)
        return 0 if healthy else 1
    try:
        probe(args.ca_url)
    except CaucaseError as error:
        print(f"caucase-probe: {error}", file=err)
        return 1
    print(f"caucase-probe: {args.ca_url}: HTTP and HTTPS serve the same CAS", file=err)
    return 0
