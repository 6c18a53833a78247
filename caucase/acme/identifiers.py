"""ACME identifiers (RFC 8555 7.1.4, RFC 8738) and the EAB scopes that pre-authorize them.

Everything is compared in one normal form: DNS names in lower case, without the trailing
dot, in A-labels; IP addresses in their canonical text (RFC 5952 for IPv6). Orders must
send A-labels (RFC 8555 7.1.4) and so must the CAU user minting a scope: converting
U-labels would need a full IDNA 2008 library for one convenience, while ``idn2`` or any
registrar's tool prints the A-label. An ``xn--`` label is checked to be well-formed
Punycode of a lower-case NFC text (the standard library's codec), not against IDNA 2008's
tables: which names exist is the operator's business.
A scope is a list of patterns a CAU user gave when minting an EAB credential:

- ``web.example.com``: exactly that name;
- ``*.example.com``: any name below example.com, and the wildcard identifier itself;
- ``10.0.0.7``, ``2001:db8::1``: exactly that address;
- ``*``: anything.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from caucase.acme.problems import Malformed, RejectedIdentifier, UnsupportedIdentifier

DNS = "dns"
IP = "ip"
WILDCARD_PREFIX = "*."
ANYTHING = "*"
MAX_NAME_LENGTH = 253
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class InvalidIdentifier(ValueError):
    """Text that is neither a DNS name nor an IP address."""


def _check_a_label(label: str) -> None:
    if not _LABEL.fullmatch(label):
        raise InvalidIdentifier(f"{label!r} is not a valid DNS label")
    if label[2:4] == "--" and not label.startswith("xn--"):
        raise InvalidIdentifier(f"{label!r}: hyphens in the third and fourth places")
    if label.startswith("xn--") and not _is_punycode(label[4:]):
        raise InvalidIdentifier(f"{label!r} is not a valid A-label")


def _is_punycode(encoded: str) -> bool:
    """Whether `encoded` is the one Punycode spelling of a printable, lower-case, NFC
    text with some non-ASCII character (what an A-label holds)."""
    try:
        text = encoded.encode("ascii").decode("punycode")
    except UnicodeError:
        return False
    return (
        not text.isascii()
        and text.isprintable()
        and text == text.lower() == unicodedata.normalize("NFC", text)
        and text.encode("punycode").decode("ascii") == encoded
    )


def normalise_dns_name(name: str) -> str:
    """`name` in lower case, without its trailing dot; InvalidIdentifier unless it is a
    host name in A-labels (a leading ``*.`` is the caller's business)."""
    if name.endswith("."):
        name = name[:-1]
    if not name.isascii():
        raise InvalidIdentifier(f"{name!r} is not in A-labels (xn--...): convert it first")
    name = name.lower()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidIdentifier("a DNS name has 1 to 253 characters")
    for label in name.split("."):
        _check_a_label(label)
    return name


def normalise_ip(text: str) -> str:
    """Canonical text of an IPv4 or IPv6 address; InvalidIdentifier otherwise."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidIdentifier(f"{text!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise InvalidIdentifier(f"{text!r}: an address with a zone is not an identifier")
    return str(address)


def _is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, order=True)
class Identifier:
    """One identifier of an order, normalised; ``*.`` kept for wildcard DNS identifiers."""

    type: str
    value: str

    @property
    def is_wildcard(self) -> bool:
        return self.type == DNS and self.value.startswith(WILDCARD_PREFIX)

    @property
    def base(self) -> Identifier:
        """What the authorization is for: the wildcard's base name (RFC 8555 7.1.3)."""
        if self.is_wildcard:
            return Identifier(DNS, self.value[len(WILDCARD_PREFIX) :])
        return self

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}

    @classmethod
    def dns(cls, name: str) -> Identifier:
        wildcard = name.startswith(WILDCARD_PREFIX)
        base = normalise_dns_name(name[len(WILDCARD_PREFIX) :] if wildcard else name)
        return cls(DNS, WILDCARD_PREFIX + base if wildcard else base)

    @classmethod
    def ip(cls, address: str) -> Identifier:
        return cls(IP, normalise_ip(address))


def parse_identifier(document: object) -> Identifier:
    """An identifier object of a newOrder or newAuthz payload, normalised.

    A ``dns`` identifier holding an IP literal becomes an ``ip`` one: lego 4.9 sends IP
    addresses that way, and a DNS name never looks like an address (RFC 1123 2.1)."""
    if not isinstance(document, dict) or document.keys() != {"type", "value"}:
        raise Malformed("an identifier is an object with exactly 'type' and 'value'")
    kind, value = document["type"], document["value"]
    if not isinstance(kind, str) or not isinstance(value, str):
        raise Malformed("identifier type and value are strings")
    json_identifier = {"type": kind, "value": value}
    if kind not in (DNS, IP):
        raise UnsupportedIdentifier(
            f"identifier type {kind!r} is not supported", identifier=json_identifier
        )
    try:
        if kind == IP or _is_ip_literal(value):
            return Identifier.ip(value)
        return Identifier.dns(value)
    except InvalidIdentifier as error:
        raise RejectedIdentifier(str(error), identifier=json_identifier) from None


def parse_identifiers(documents: object, limit: int) -> tuple[Identifier, ...]:
    """The identifiers of a newOrder payload: 1 to `limit`, duplicates folded, sorted."""
    if not isinstance(documents, list) or not documents:
        raise Malformed("'identifiers' is a non-empty list")
    if len(documents) > limit:
        raise RejectedIdentifier(f"an order has at most {limit} identifiers")
    return tuple(sorted({parse_identifier(document) for document in documents}))


@dataclass(frozen=True)
class Pattern:
    """One scope pattern, normalised; ``text`` is what listings show."""

    text: str

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """InvalidIdentifier for text that is no pattern (DNS names in A-labels)."""
        text = text.strip()
        if text == ANYTHING:
            return cls(ANYTHING)
        if _is_ip_literal(text):
            return cls(normalise_ip(text))
        if text.startswith(WILDCARD_PREFIX):
            base = text[len(WILDCARD_PREFIX) :]
            return cls(WILDCARD_PREFIX + normalise_dns_name(base))
        return cls(normalise_dns_name(text))

    def covers(self, identifier: Identifier) -> bool:
        if self.text == ANYTHING:
            return True
        if identifier.type == IP:
            return self.text == identifier.value
        if self.text.startswith(WILDCARD_PREFIX):
            suffix = self.text[1:]
            return identifier.value.endswith(suffix)
        return self.text == identifier.value


@dataclass(frozen=True)
class Scope:
    """The identifiers an EAB credential pre-authorizes."""

    patterns: tuple[Pattern, ...]

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Scope:
        patterns = tuple(dict.fromkeys(Pattern.parse(text) for text in texts))
        if not patterns:
            raise InvalidIdentifier("a scope has at least one pattern")
        return cls(patterns)

    def covers(self, identifier: Identifier) -> bool:
        return any(pattern.covers(identifier) for pattern in self.patterns)

    def to_json(self) -> list[str]:
        return [pattern.text for pattern in self.patterns]
