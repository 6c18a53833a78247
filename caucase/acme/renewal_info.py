"""ACME Renewal Information (RFC 9773): the certificate identifier and the answer.

A certID is ``base64url(keyIdentifier of the AKI) "." base64url(serial)``, the serial as
the content octets of its DER INTEGER (4.1); it names a certificate in renewalInfo URLs and
in the ``replaces`` member of a newOrder. When to renew is not decided here: the window
comes from a ``RenewalSchedule`` (the renewal-window rule caucase shares between its
updater and ACME), and the answer is ``application/json``, the only type certbot accepts.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from josepy import json_util

from caucase.acme.jws import decode_base64url
from caucase.acme.problems import Malformed
from caucase.acme.resources import timestamp
from caucase.renewal import RenewalWindow

CONTENT_TYPE = "application/json"
# 4.3: clients poll again after Retry-After; six hours is what Let's Encrypt sends.
DEFAULT_RETRY_AFTER = datetime.timedelta(hours=6)


def _serial_octets(serial: int) -> bytes:
    """Content octets of a non-negative DER INTEGER: minimal, with a leading zero octet
    when the high bit would otherwise read as a sign."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


@dataclass(frozen=True, order=True)
class CertID:
    """Which certificate: its authority key identifier and its serial."""

    authority_key_identifier: bytes
    serial: int

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertID:
        extension = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        key_identifier = extension.value.key_identifier
        if key_identifier is None:
            raise ValueError("the certificate's AKI has no keyIdentifier")
        return cls(key_identifier, certificate.serial_number)

    @classmethod
    def parse(cls, text: str) -> CertID:
        """malformed unless `text` is a certID with a canonically encoded serial."""
        key_part, dot, serial_part = text.partition(".")
        if not (dot and key_part and serial_part):
            raise Malformed("a certID is two base64url parts joined by a dot")
        key_identifier = decode_base64url(key_part, "the certID key identifier")
        octets = decode_base64url(serial_part, "the certID serial")
        serial = int.from_bytes(octets, "big", signed=True)
        if serial < 0 or _serial_octets(serial) != octets:
            raise Malformed("the certID serial is not a minimal non-negative DER integer")
        return cls(key_identifier, serial)

    def __str__(self) -> str:
        encode = json_util.encode_b64jose
        return f"{encode(self.authority_key_identifier)}.{encode(_serial_octets(self.serial))}"


class RenewalSchedule(Protocol):
    """When a certificate should be renewed: defined by caucase's renewal rule (a window
    inside the lifetime, spread per certificate), moved to now once it is revoked or an
    operator asked for early renewal."""

    def window(self, certificate: x509.Certificate) -> RenewalWindow: ...


@dataclass(frozen=True)
class RenewalInfo:
    """The renewalInfo answer (4.2) and its Retry-After (4.3)."""

    window: RenewalWindow
    explanation_url: str | None = None
    retry_after: datetime.timedelta = DEFAULT_RETRY_AFTER

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "suggestedWindow": {
                "start": timestamp(self.window.start),
                "end": timestamp(self.window.end),
            }
        }
        if self.explanation_url is not None:
            document["explanationURL"] = self.explanation_url
        return document

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", CONTENT_TYPE),
            ("Retry-After", str(int(self.retry_after.total_seconds()))),
        ]


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z")


def _parse_timestamp(value: object) -> datetime.datetime:
    """An RFC 3339 date-time (any fraction, Z or an offset), aware."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    day, time_of_day, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    parsed = datetime.datetime.fromisoformat(f"{day}T{time_of_day}{zone}")
    return parsed + datetime.timedelta(seconds=float(fraction or 0))


def parse_suggested_window(body: bytes) -> RenewalWindow:
    """The suggestedWindow of a renewalInfo answer (4.2), as a client reads it; ValueError
    for a document that is not one."""
    try:
        window = json.loads(body)["suggestedWindow"]
        return RenewalWindow(_parse_timestamp(window["start"]), _parse_timestamp(window["end"]))
    except (KeyError, TypeError) as error:
        raise ValueError(f"no suggestedWindow start and end: {error}") from None
