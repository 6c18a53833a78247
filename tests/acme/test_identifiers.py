"""Identifiers in one normal form, and the scope patterns of EAB credentials."""

from __future__ import annotations

import pytest

from caucase.acme import problems
from caucase.acme.identifiers import (
    Identifier,
    InvalidIdentifier,
    Pattern,
    Scope,
    parse_identifier,
    parse_identifiers,
)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"type": "dns", "value": "Web.Example.COM."}, Identifier("dns", "web.example.com")),
        ({"type": "dns", "value": "*.Svc.example.com"}, Identifier("dns", "*.svc.example.com")),
        ({"type": "dns", "value": "xn--strae-oqa.de"}, Identifier("dns", "xn--strae-oqa.de")),
        ({"type": "ip", "value": "10.0.0.7"}, Identifier("ip", "10.0.0.7")),
        ({"type": "ip", "value": "2001:DB8:0:0::1"}, Identifier("ip", "2001:db8::1")),
        # lego 4.9 sends IP addresses as dns identifiers.
        ({"type": "dns", "value": "127.0.0.1"}, Identifier("ip", "127.0.0.1")),
    ],
)
def test_identifiers_are_normalised(document: dict[str, str], expected: Identifier) -> None:
    assert parse_identifier(document) == expected


@pytest.mark.parametrize(
    "value",
    ["", "a..b", "-a.example", "a-.example", "a_b.example", "a" * 64 + ".example",
     ".".join(["a" * 60] * 5), "*.*.example", "a.*.example", "*", "ab--c.example",
     "xn--zz.example", "xn--a.example", "xn--abc-.example", "straße.de", "exa mple.com"],
)  # fmt: skip
def test_names_that_are_no_host_names_are_rejected(value: str) -> None:
    with pytest.raises(problems.RejectedIdentifier):
        parse_identifier({"type": "dns", "value": value})


@pytest.mark.parametrize("value", ["10.0.0.256", "010.0.0.7", "fe80::1%eth0", "example.com"])
def test_bad_ip_identifiers_are_rejected(value: str) -> None:
    with pytest.raises(problems.RejectedIdentifier):
        parse_identifier({"type": "ip", "value": value})


def test_an_unknown_identifier_type_is_unsupported() -> None:
    with pytest.raises(problems.UnsupportedIdentifier):
        parse_identifier({"type": "email", "value": "a@example.com"})


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        {"type": "dns"},
        {"type": "dns", "value": 5},
        {"type": "dns", "value": "a", "x": 1},
    ],
)
def test_malformed_identifier_objects(document: object) -> None:
    with pytest.raises(problems.Malformed):
        parse_identifier(document)


def test_an_order_folds_duplicates_and_bounds_its_size() -> None:
    same = [{"type": "dns", "value": "A.example"}, {"type": "dns", "value": "a.example."}]
    assert parse_identifiers(same, limit=2) == (Identifier("dns", "a.example"),)
    with pytest.raises(problems.RejectedIdentifier):
        parse_identifiers(same * 2, limit=3)
    with pytest.raises(problems.Malformed):
        parse_identifiers([], limit=3)


SCOPE = Scope.parse(["Web.Example.com.", "*.svc.example.com", "10.0.0.7", "2001:db8::0:1"])


@pytest.mark.parametrize(
    ("identifier", "covered"),
    [
        (Identifier.dns("web.example.com"), True),
        (Identifier.dns("www.example.com"), False),
        (Identifier.dns("example.com"), False),
        (Identifier.dns("a.svc.example.com"), True),
        (Identifier.dns("a.b.svc.example.com"), True),
        (Identifier.dns("*.svc.example.com"), True),
        (Identifier.dns("*.b.svc.example.com"), True),
        (Identifier.dns("svc.example.com"), False),
        (Identifier.dns("xsvc.example.com"), False),
        (Identifier.dns("*.example.com"), False),
        (Identifier.ip("10.0.0.7"), True),
        (Identifier.ip("10.0.0.8"), False),
        (Identifier.ip("2001:db8::1"), True),
    ],
)
def test_scope_patterns(identifier: Identifier, covered: bool) -> None:
    assert SCOPE.covers(identifier) is covered


def test_star_covers_anything() -> None:
    scope = Scope.parse(["*"])
    assert scope.covers(Identifier.dns("*.anything.example")) and scope.covers(
        Identifier.ip("::1")
    )


def test_patterns_take_a_labels_and_refuse_u_labels() -> None:
    assert Pattern.parse("*.XN--strae-oqa.de").text == "*.xn--strae-oqa.de"
    assert Scope.parse(["xn--strae-oqa.de"]).covers(Identifier.dns("xn--strae-oqa.de"))
    with pytest.raises(InvalidIdentifier, match="A-labels"):
        Pattern.parse("*.Straße.de")


def test_scope_round_trips_its_normal_form() -> None:
    assert SCOPE.to_json() == ["web.example.com", "*.svc.example.com", "10.0.0.7", "2001:db8::1"]
    assert Scope.parse(SCOPE.to_json()) == SCOPE


@pytest.mark.parametrize("text", ["", "*.", "**.example", "a.*.example", "10.0.0.7/8", "exa mple"])
def test_invalid_patterns(text: str) -> None:
    with pytest.raises(InvalidIdentifier):
        Pattern.parse(text)


def test_an_empty_scope_is_invalid() -> None:
    with pytest.raises(InvalidIdentifier):
        Scope.parse([])


def test_wildcard_authorization_is_for_the_base_name() -> None:
    wildcard = Identifier.dns("*.svc.example.com")
    assert wildcard.is_wildcard and wildcard.base == Identifier.dns("svc.example.com")
