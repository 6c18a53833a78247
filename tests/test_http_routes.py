"""The route table holds its handlers and body steps, and the dispatcher enforces its
credentials (issue 10): no handler authenticates, so none can forget to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.http import bodies, handlers
from caucase.http.routes import (
    ACME_CREDENTIAL_ROUTES,
    ACME_ROUTES,
    AUTHORITY_ROUTES,
    ROOT_ROUTES,
    Auth,
    Route,
)
from tests.conftest import FakeClock
from tests.support.wsgi_support import Deployment, call, deploy, make_csr

JSON = "application/json"
PKCS10 = "application/pkcs10"


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock, keys: list[rsa.RSAPrivateKey]) -> Deployment:
    return deploy(tmp_path, clock, keys[0])


def test_every_route_holds_its_handler_and_body_step() -> None:
    for route in (*ROOT_ROUTES, *AUTHORITY_ROUTES):
        assert callable(route.handler) and callable(route.body), route


def test_a_route_checking_credentials_after_its_body_must_have_a_body_step() -> None:
    for auth in (Auth.AFTER_BODY, Auth.SIGNATURE, Auth.SIGNATURE_OR_AFTER_BODY):
        with pytest.raises(ValueError, match="needs a body step"):
            Route(("crt",), "PUT", handlers.sign_csr, auth=auth)
    Route(("crt",), "PUT", handlers.sign_csr, auth=Auth.AFTER_BODY, body=bodies.template_body)


def test_the_table_asks_for_credentials_where_http_api_4_does() -> None:
    needs = {
        (route.node, route.method, route.subpath.value): route.auth
        for route in AUTHORITY_ROUTES
        if route.auth is not Auth.ANONYMOUS
    }
    assert needs == {
        (("csr",), "GET", "none"): Auth.FIRST,
        (("csr",), "DELETE", "id"): Auth.FIRST,
        (("crt",), "PUT", "id"): Auth.AFTER_BODY,
        (("crt", "revoke"), "PUT", "none"): Auth.SIGNATURE_OR_AFTER_BODY,
        (("crt", "renew"), "PUT", "none"): Auth.SIGNATURE,
        (("renewal-info",), "PUT", "none"): Auth.AFTER_BODY,
        (("inventory",), "GET", "none"): Auth.FIRST,
    }
    assert all(route.auth is Auth.ANONYMOUS for route in ROOT_ROUTES)


def test_the_dispatcher_refuses_every_credentialed_route_without_a_certificate(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    """Each route of the table that needs a client certificate, sent a body its step
    accepts, over plain HTTP: 401, and its handler did nothing."""
    pending = dep.cas.append_csr(make_csr(keys[1]))
    null_envelope = json.dumps({"digest": None, "payload": json.dumps({"revoke_serial": 7})})
    requests = {
        (("csr",), "GET"): ("/cas/csr", None, None),
        (("csr",), "DELETE"): (f"/cas/csr/{pending}", None, None),
        (("crt",), "PUT"): (f"/cas/crt/{pending}", make_csr(keys[1], "template"), PKCS10),
        (("crt", "revoke"), "PUT"): ("/cas/crt/revoke", null_envelope.encode(), JSON),
        (("renewal-info",), "PUT"): ("/cas/renewal-info", b'{"spread": 60, "all": true}', JSON),
        (("inventory",), "GET"): ("/cas/inventory?limit=1000", None, None),
    }
    crl_before = call(dep.app, "GET", "/cas/crl").body
    for route in AUTHORITY_ROUTES:
        if route.auth in (Auth.ANONYMOUS, Auth.SIGNATURE):
            continue
        path, body, content_type = requests[(route.node, route.method)]
        reply = call(dep.app, route.method, path, body, content_type=content_type)
        assert (reply.status, reply.header("WWW-Authenticate")) == (401, "transport"), path
    assert dep.cas.get_csr_list() == [(pending, make_csr(keys[1]))]
    assert call(dep.app, "GET", f"/cas/crt/{pending}").status == 404
    assert call(dep.app, "GET", "/cas/crl").body == crl_before


def test_renewal_without_a_signature_is_refused_before_anything_else(dep: Deployment) -> None:
    body = json.dumps({"digest": None, "payload": "{}"}).encode()
    reply = call(dep.app, "PUT", "/cas/crt/renew", body, content_type=JSON, https=True)
    assert (reply.status, reply.body) == (400, b"Renewal needs a signed envelope")


def test_acme_routes_verify_the_key_each_names() -> None:
    """jwk for newAccount, either for revokeCert (account or certificate key), kid for the
    rest; the directory and newNonce are anonymous."""
    sources = {
        (route.node[-1], route.method): route.key_source and route.key_source.value
        for route in ACME_ROUTES
    }
    assert all(route.acme for route in ACME_ROUTES)
    assert sources.pop(("directory", "GET")) is None
    assert sources.pop(("new-nonce", "GET")) is sources.pop(("new-nonce", "HEAD")) is None
    spenders = {route.node[-1] for route in ACME_ROUTES if route.spends_nonce}
    assert spenders == {"new-order", "finalize"}
    assert sources.pop(("new-account", "POST")) == "jwk"
    assert sources.pop(("revoke-cert", "POST")) == "either"
    assert set(sources.values()) == {"kid"}
    with pytest.raises(ValueError, match="ACME"):
        Route(("acme", "x"), "POST", handlers.sign_csr, auth=Auth.ACME_JWS)


def test_acme_credentials_need_an_authenticated_user(dep: Deployment) -> None:
    needs = {(route.node, route.method): route.auth for route in ACME_CREDENTIAL_ROUTES}
    assert needs == {
        (("acme", "eab"), "GET"): Auth.FIRST,
        (("acme", "eab"), "PUT"): Auth.AFTER_BODY,
        (("acme", "eab", "revoke"), "PUT"): Auth.AFTER_BODY,
    }
    for method, path, body in (
        ("GET", "/cau/acme/eab", None),
        ("PUT", "/cau/acme/eab", b'{"scope": ["*"]}'),
        ("PUT", "/cau/acme/eab/revoke", b'{"kid": "x"}'),
    ):
        reply = call(dep.app, method, path, body, content_type=JSON, https=True)
        assert reply.status == 401, path
