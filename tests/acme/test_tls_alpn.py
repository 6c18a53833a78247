"""tls-alpn-01 (RFC 8737) against a responder of the tests' own, right and wrong."""

from __future__ import annotations

import pytest

from caucase.acme import problems
from caucase.acme.identifiers import Identifier
from caucase.acme.resolver import Resolver
from caucase.acme.tls_alpn import TlsAlpn01Validator
from tests.support.tls_alpn_responder import challenge_certificate, tls_alpn_responder

AUTHORIZATION = "token.thumbprint"
LOCAL = Identifier.ip("127.0.0.1")


def validate(port: int, identifier: Identifier = LOCAL) -> None:
    TlsAlpn01Validator(Resolver(), port, timeout=5).validate(identifier, "token", AUTHORIZATION)


def test_a_right_answer_for_an_ip_uses_the_reverse_name_in_sni() -> None:
    with tls_alpn_responder(*challenge_certificate(["127.0.0.1"], AUTHORIZATION)) as responder:
        validate(responder.port)
    assert responder.server_names == ["1.0.0.127.in-addr.arpa"]


def test_a_dns_name_is_sent_in_sni() -> None:
    with tls_alpn_responder(*challenge_certificate(["localhost"], AUTHORIZATION)) as responder:
        validate(responder.port, Identifier.dns("localhost"))
    assert responder.server_names[0] == "localhost"


@pytest.mark.parametrize(
    ("names", "critical", "authorization", "match"),
    [
        (["127.0.0.1"], False, AUTHORIZATION, "not critical"),
        (["127.0.0.1", "127.0.0.2"], True, AUTHORIZATION, "exactly"),
        (["127.0.0.2"], True, AUTHORIZATION, "exactly"),
        (["127.0.0.1"], True, "other.thumbprint", "digest"),
    ],
)
def test_wrong_certificates_are_incorrect(
    names: list[str], critical: bool, authorization: str, match: str
) -> None:
    certificate = challenge_certificate(names, authorization, critical=critical)
    with (
        tls_alpn_responder(*certificate) as responder,
        pytest.raises(problems.IncorrectResponse, match=match),
    ):
        validate(responder.port)


def test_a_responder_without_acme_tls_alpn_is_a_tls_problem() -> None:
    certificate = challenge_certificate(["127.0.0.1"], AUTHORIZATION)
    with (
        tls_alpn_responder(*certificate, alpn=("h2",)) as responder,
        pytest.raises(problems.TLSProblem),
    ):
        validate(responder.port)
