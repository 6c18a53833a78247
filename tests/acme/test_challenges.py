"""Challenge validators against real responders: pebble-challtestsrv (an independent
implementation), and servers of the tests' own for the wrong answers it cannot give."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from josepy.jwk import JWK

from caucase.acme import problems
from caucase.acme.challenges import (
    DNS_01,
    HTTP_01,
    TLS_ALPN_01,
    Dns01Validator,
    Http01Validator,
    Validators,
    dns_txt_value,
    key_authorization,
    new_token,
)
from caucase.acme.identifiers import Identifier
from caucase.acme.keys import thumbprint
from caucase.acme.resolver import Resolver
from caucase.acme.tls_alpn import TlsAlpn01Validator
from tests.support.acme_jws import account_key
from tests.support.challtestsrv import ChallTestSrv
from tests.support.servers import free_port

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def key() -> JWK:
    return account_key("ES256")[0].public_key()


def resolver_of(server: ChallTestSrv) -> Resolver:
    return Resolver(("127.0.0.1", server.dns_port), timeout=TIMEOUT)


def test_key_authorization_is_token_dot_thumbprint(key: JWK) -> None:
    token = new_token()
    assert key_authorization(token, key) == f"{token}.{thumbprint(key)}"
    assert len(token) >= 22  # 128 bits at least (RFC 8555 8.1)


def test_http01_valid_against_challtestsrv(challtestsrv: ChallTestSrv, key: JWK) -> None:
    token = new_token()
    challtestsrv.add_http01(token, key_authorization(token, key))
    assert challtestsrv.http01_port is not None
    validator = Http01Validator(resolver_of(challtestsrv), challtestsrv.http01_port, TIMEOUT)

    validator.validate(Identifier.dns("web.svc.test"), token, key_authorization(token, key))
    validator.validate(Identifier.ip("127.0.0.1"), token, key_authorization(token, key))


def test_http01_wrong_content_is_incorrect(challtestsrv: ChallTestSrv, key: JWK) -> None:
    token = new_token()
    challtestsrv.add_http01(token, key_authorization(new_token(), key))
    assert challtestsrv.http01_port is not None
    validator = Http01Validator(resolver_of(challtestsrv), challtestsrv.http01_port, TIMEOUT)

    with pytest.raises(problems.IncorrectResponse):
        validator.validate(Identifier.dns("web.svc.test"), token, key_authorization(token, key))
    with pytest.raises(problems.IncorrectResponse):
        validator.validate(Identifier.dns("web.svc.test"), new_token(), "x")


def test_http01_nobody_listening_is_a_connection_problem(challtestsrv: ChallTestSrv) -> None:
    validator = Http01Validator(resolver_of(challtestsrv), free_port(), TIMEOUT)

    with pytest.raises(problems.ConnectionProblem):
        validator.validate(Identifier.dns("web.svc.test"), new_token(), "x")


@contextmanager
def http_answer(body: bytes, hosts: list[str], status: int = 200) -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers["Host"])
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_http01_ignores_trailing_whitespace_and_sends_the_host(challtestsrv: ChallTestSrv) -> None:
    hosts: list[str] = []
    with http_answer(b"tok.thumb\r\n \n", hosts) as port:
        Http01Validator(resolver_of(challtestsrv), port, TIMEOUT).validate(
            Identifier.dns("web.svc.test"), "tok", "tok.thumb"
        )
    assert hosts == [f"web.svc.test:{port}"]


def test_http01_an_error_status_is_incorrect(challtestsrv: ChallTestSrv) -> None:
    with http_answer(b"tok.thumb", [], status=404) as port:
        validator = Http01Validator(resolver_of(challtestsrv), port, TIMEOUT)
        with pytest.raises(problems.IncorrectResponse, match="404"):
            validator.validate(Identifier.dns("web.svc.test"), "tok", "tok.thumb")


def test_http01_an_ipv6_host_is_bracketed() -> None:
    from caucase.acme.challenges import host_header

    assert host_header(Identifier.ip("2001:db8::1"), 80) == "[2001:db8::1]"
    assert host_header(Identifier.ip("10.0.0.1"), 5002) == "10.0.0.1:5002"


def test_http01_a_huge_answer_is_incorrect(challtestsrv: ChallTestSrv) -> None:
    with http_answer(b"tok.thumb" + b" " * 5000 + b"x", []) as port:
        validator = Http01Validator(resolver_of(challtestsrv), port, TIMEOUT)
        with pytest.raises(problems.IncorrectResponse):
            validator.validate(Identifier.dns("web.svc.test"), "tok", "tok.thumb")


def test_dns01_valid_for_a_wildcard_through_its_base_name(
    challtestsrv: ChallTestSrv, key: JWK
) -> None:
    token = new_token()
    authorization = key_authorization(token, key)
    challtestsrv.set_txt("_acme-challenge.svc.test", dns_txt_value(authorization))
    validator = Dns01Validator(resolver_of(challtestsrv))

    validator.validate(Identifier.dns("*.svc.test"), token, authorization)
    validator.validate(Identifier.dns("svc.test"), token, authorization)


def test_dns01_wrong_or_missing_records(challtestsrv: ChallTestSrv, key: JWK) -> None:
    token = new_token()
    challtestsrv.set_txt("_acme-challenge.svc.test", dns_txt_value("something else"))
    validator = Dns01Validator(resolver_of(challtestsrv))

    with pytest.raises(problems.IncorrectResponse):
        validator.validate(Identifier.dns("svc.test"), token, key_authorization(token, key))
    with pytest.raises(problems.DNSProblem):
        validator.validate(Identifier.dns("other.test"), token, key_authorization(token, key))


def test_dns01_a_silent_server_is_a_dns_problem() -> None:
    validator = Dns01Validator(Resolver(("127.0.0.1", free_port()), timeout=0.5))

    with pytest.raises(problems.DNSProblem):
        validator.validate(Identifier.dns("svc.test"), "tok", "tok.thumb")


def test_tls_alpn01_valid_against_challtestsrv(challtestsrv: ChallTestSrv, key: JWK) -> None:
    token = new_token()
    authorization = key_authorization(token, key)
    challtestsrv.add_tlsalpn01("web.svc.test", authorization)
    assert challtestsrv.tlsalpn01_port is not None
    validator = TlsAlpn01Validator(resolver_of(challtestsrv), challtestsrv.tlsalpn01_port, TIMEOUT)

    validator.validate(Identifier.dns("web.svc.test"), token, authorization)
    with pytest.raises(problems.IncorrectResponse):
        validator.validate(
            Identifier.dns("web.svc.test"), token, key_authorization(new_token(), key)
        )


def test_challenge_types_by_identifier(challtestsrv: ChallTestSrv) -> None:
    resolver = resolver_of(challtestsrv)
    validators = Validators.of(
        [Http01Validator(resolver), TlsAlpn01Validator(resolver), Dns01Validator(resolver)]
    )

    assert validators.types_for(Identifier.dns("a.test")) == [HTTP_01, TLS_ALPN_01, DNS_01]
    assert validators.types_for(Identifier.dns("*.a.test")) == [DNS_01]
    assert validators.types_for(Identifier.ip("10.0.0.7")) == [HTTP_01, TLS_ALPN_01]
