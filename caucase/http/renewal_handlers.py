"""The renewal-info routes: suggested renewal windows (RFC 9773 renewalInfo, which ACME's
directory points at too) and operators moving them forward (``caucase --renew-early``).

``GET {ca}/renewal-info/<certID>`` is anonymous and cacheable; its errors are problem
documents (RFC 8555 6.7), which ACME clients read and others show as text.
``PUT {ca}/renewal-info`` needs a CAU user certificate; who asked is stored with the
moved windows.
"""

from __future__ import annotations

import datetime
import json
import math
import wsgiref.util
from dataclasses import dataclass
from typing import Any

from caucase.acme import problems, renewal_info
from caucase.acme.resources import timestamp
from caucase.clock import from_timestamp
from caucase.crypto import x509util
from caucase.http.bodies import JSON, json_loads
from caucase.http.handlers import Service
from caucase.http.request import HTTPError, Request, Response
from caucase.renewal_schedule import EarlyRenewalResult

# Proxies may keep an answer this long: an operator's early renewal shows within the hour.
CACHE_CONTROL = "public, max-age=3600"
EXPLANATION = """\
Renewal information of this certificate authority (RFC 9773)

Each certificate has a suggested renewal window: its clients (caucase-updater, ACME
clients reading renewalInfo) renew it at a random moment inside that window.

By default the window lies between one half and two thirds of the certificate's
lifetime, never later than {latest} before it expires, and its place there follows from
the certificate's serial number: certificates issued together are renewed over days,
not all at once.

A window that starts now was moved: either the certificate was revoked (it cannot be
renewed with its key any more: its holder must request a new certificate), or an
operator of this authority asked for the early renewal of some or all of its
certificates, for example after a suspected key compromise or before a change of CA.
Renew such a certificate now, with a new key; the old certificate keeps working until
it expires or is revoked.
"""
MAX_SERIALS = 100_000
# Year 9999 is the last one datetime holds.
MAX_SECONDS = 253_402_300_799


def _problem(problem: problems.AcmeProblem) -> Response:
    rendered = problems.render(problem)
    return Response(rendered.status, rendered.headers, rendered.body)


def get_renewal_info(service: Service, request: Request, cert_id: str, _: None) -> Response:
    """The window of the certificate a certID names; 404 unless this CA issued it."""
    try:
        parsed = renewal_info.CertID.parse(cert_id)
    except problems.AcmeProblem as problem:
        return _problem(problem)
    schedule = service.authority(request).renewal
    served = schedule.window(parsed.authority_key_identifier, parsed.serial)
    if served is None:
        return _problem(
            problems.NotFound("No certificate of this authority has this certID (or it expired)")
        )
    explanation = None
    if served.moved_early or served.revoked:
        base = wsgiref.util.request_uri(request.environ, include_query=False)
        explanation = base.rsplit("/", 1)[0]
    info = renewal_info.RenewalInfo(served.window, explanation)
    headers = [*info.headers(), ("Cache-Control", CACHE_CONTROL)]
    return Response(200, headers, json.dumps(info.to_json()).encode())


def get_explanation(service: Service, request: Request, _: int, __: None) -> Response:
    """The page a moved window's explanationURL names."""
    latest = service.authority(request).renewal.latest
    body = EXPLANATION.format(latest=_days(latest)).encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", CACHE_CONTROL)]
    return Response(200, headers, body)


def _days(delta: datetime.timedelta) -> str:
    days = delta / datetime.timedelta(days=1)
    return f"{days:g} day" + ("" if days == 1 else "s")


@dataclass(frozen=True)
class EarlyRenewalRequest:
    """The body of PUT renewal-info: which certificates, over how long."""

    spread: datetime.timedelta
    serials: tuple[int, ...] = ()
    renew_all: bool = False
    issued_before: datetime.datetime | None = None


def _serial(value: object) -> int:
    """A serial as a JSON integer or decimal string (serials exceed what JavaScript
    numbers carry), never negative."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise HTTPError(400, b"serials must be integers >= 0 (or their decimal strings)")


def _seconds(fields: dict[str, Any], name: str) -> int:
    """A JSON number of seconds, within what dates can hold."""
    value = fields.get(name)
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or abs(value) > MAX_SECONDS
    ):
        raise HTTPError(400, f"{name} must be a number of seconds".encode())
    return int(value)


def early_renewal_body(request: Request) -> EarlyRenewalRequest:
    """``{"spread": SECONDS, "serials": [...]}`` or ``{"spread": SECONDS, "all": true,
    "before": UNIX_SECONDS}`` (``before`` optional)."""
    if request.content_type != JSON:
        raise HTTPError(400, b"b'Bad Content-Type'")
    try:
        fields = json_loads(request.read_body().decode("utf-8"))
    except ValueError:
        raise HTTPError(400, b"b'Invalid json'") from None
    if not isinstance(fields, dict):
        raise HTTPError(400, b"Body is not a JSON object")
    spread = datetime.timedelta(seconds=_seconds(fields, "spread"))
    if fields.get("all") is True:
        if "serials" in fields:
            raise HTTPError(400, b"Give serials or all, not both")
        before = None
        if fields.get("before") is not None:
            before = from_timestamp(_seconds(fields, "before"))
        return EarlyRenewalRequest(spread, renew_all=True, issued_before=before)
    serials = fields.get("serials")
    if not isinstance(serials, list) or not serials or len(serials) > MAX_SERIALS:
        raise HTTPError(400, b"serials must be a non-empty list (or all true)")
    return EarlyRenewalRequest(spread, tuple(_serial(value) for value in serials))


def _requester(request: Request) -> str:
    """Who asked: the subject and serial of the user certificate that authenticated."""
    pem = str(request.environ.get("SSL_CLIENT_CERT", ""))
    certificate = x509util.load_certificate(pem.encode("utf-8"))
    return f"{certificate.subject.rfc4514_string()} (serial {certificate.serial_number})"


def renew_early(service: Service, request: Request, _: int, body: EarlyRenewalRequest) -> Response:
    schedule = service.authority(request).renewal
    requester = _requester(request)
    result: EarlyRenewalResult
    if body.renew_all:
        result = schedule.renew_early_all(body.spread, requester, body.issued_before)
    else:
        result = schedule.renew_early(body.serials, body.spread, requester)
    moved = result.moved if isinstance(result.moved, int) else [str(s) for s in result.moved]
    document = {
        "start": timestamp(result.band.start),
        "end": timestamp(result.band.end),
        "moved": moved,
        "unknown": [str(serial) for serial in result.unknown],
    }
    return Response(200, [("Content-Type", JSON)], json.dumps(document).encode())
