"""Validation lookups: the system resolver, or one DNS server given as HOST[:PORT]."""

from __future__ import annotations

from pathlib import Path

import pytest

from caucase.acme import problems
from caucase.acme.resolver import Resolver, parse_dns_server
from tests.support.challtestsrv import ChallTestSrv


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.53", ("10.0.0.53", 53)),
        ("127.0.0.1:8053", ("127.0.0.1", 8053)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("localhost:53", ("127.0.0.1", 53)),
    ],
)
def test_parse_dns_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_dns_server(text) == expected


@pytest.mark.parametrize(
    "text", ["", ":53", "127.0.0.1:0", "127.0.0.1:x", "[::1", "[::1]x", "no.such.invalid"]
)
def test_bad_dns_servers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dns_server(text)


def test_a_given_server_answers_every_lookup(challtestsrv: ChallTestSrv) -> None:
    challtestsrv.add_a("web.svc.test", "127.0.0.2")
    challtestsrv.set_txt("_acme-challenge.web.svc.test", "digest")
    resolver = Resolver(parse_dns_server(challtestsrv.dns_server), timeout=5)

    assert resolver.addresses("web.svc.test") == ["127.0.0.2"]
    assert resolver.addresses("other.svc.test") == ["127.0.0.1"]  # its default answer
    assert resolver.txt("_acme-challenge.web.svc.test") == ["digest"]


def test_the_system_resolver_reads_etc_hosts() -> None:
    assert "127.0.0.1" in Resolver().addresses("localhost")


def test_an_unknown_name_is_a_dns_problem() -> None:
    with pytest.raises(problems.DNSProblem):
        Resolver(timeout=2).addresses("no-such-name.invalid")


def test_no_resolver_configuration_makes_txt_lookups_dns_problems(tmp_path: Path) -> None:
    empty = tmp_path / "resolv.conf"
    empty.write_text("")

    resolver = Resolver(timeout=1, resolv_conf=str(empty))

    with pytest.raises(problems.DNSProblem):
        resolver.txt("_acme-challenge.example.test")
