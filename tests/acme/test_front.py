"""The ACME front door refuses every bad request with its RFC 8555 error type, a 4xx, a
problem document with a fresh nonce, and the state unchanged; never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from josepy import b64, jwa
from josepy.jwk import JWKRSA

from caucase.acme.challenges import Dns01Validator, Validators
from caucase.acme.resolver import Resolver
from caucase.acme.service import AcmeSettings
from tests.conftest import FakeClock
from tests.support.acme_jws import account_key, encode, sign, sign_raw, with_protected
from tests.support.acme_wsgi import BASE, JOSE, PROBLEM, AcmeDeployment, Agent, deploy_acme
from tests.support.wsgi_support import Reply, call

NEW_ORDER = f"{BASE}/new-order"
ORDER = {"identifiers": [{"type": "dns", "value": "a.svc.test"}]}


@pytest.fixture(scope="module")
def module_dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeDeployment]:
    deployment = deploy_acme(tmp_path_factory.mktemp("front"), FakeClock())
    yield deployment
    deployment.close()


@pytest.fixture
def dep(module_dep: AcmeDeployment) -> AcmeDeployment:
    return module_dep


@pytest.fixture(scope="module")
def agents(module_dep: AcmeDeployment) -> tuple[Agent, Agent]:
    """Two registered accounts; the first has an order and a certificate."""
    first, second = Agent(module_dep), Agent(module_dep)
    first.register(module_dep.mint("*.svc.test"))
    second.register(module_dep.mint("*.svc.test"))
    return first, second


def refused(dep: AcmeDeployment, send: Callable[[], Reply]) -> tuple[int, str]:
    """Send a request; check it was refused as RFC 8555 says and changed nothing."""
    before = dep.state()
    reply = send()
    assert 400 <= reply.status < 500, (reply.status, reply.body)
    assert reply.header("Content-Type") == PROBLEM, reply.body
    assert reply.header("Replay-Nonce") and reply.header("Cache-Control") == "no-store"
    assert reply.header("Link") == f'<{BASE}/directory>;rel="index"'
    assert reply.errors == ""
    assert dep.state() == before
    document = reply.json()
    assert document["status"] == reply.status and document["detail"]
    return reply.status, str(document["type"]).removeprefix("urn:ietf:params:acme:error:")


def post(dep: AcmeDeployment, url: str, body: bytes, content_type: str = JOSE,
         headers: dict[str, str] | None = None) -> Reply:  # fmt: skip
    path = url.removeprefix("https://127.0.0.1:18641")
    return call(dep.app, "POST", path, body, content_type=content_type, https=True,
                headers=headers)  # fmt: skip


def signed(agent: Agent, payload: Any = ORDER, url: str = NEW_ORDER) -> dict[str, Any]:
    return sign(payload, agent.key, agent.alg, url=url, nonce=agent.nonce(), kid=agent.kid)


def _resigned(agent: Agent, protected: dict[str, Any]) -> bytes:
    return encode(sign_raw(protected, json.dumps(ORDER).encode(), agent.key, agent.alg))


def malformed_bodies(agent: Agent) -> dict[str, bytes]:
    good = signed(agent)
    protected = {**json.loads(b64.b64decode(good["protected"])), "nonce": agent.nonce()}
    parts = [good[name].encode() for name in ("protected", "protected", "payload", "signature")]
    duplicate = b'{"protected": "%s", "protected": "%s", "payload": "%s", "signature": "%s"}'
    without_nonce = {name: value for name, value in protected.items() if name != "nonce"}
    return {
        "not json": b"{",
        "json array": b"[]",
        "compact serialization": b'"a.b.c"',
        "missing signature": json.dumps({k: good[k] for k in ("protected", "payload")}).encode(),
        "extra member": json.dumps({**good, "header": {}}).encode(),
        "bad base64": json.dumps({**good, "payload": "!!!"}).encode(),
        "duplicate member": duplicate % tuple(parts),
        "header not json": json.dumps(
            {**good, "protected": b64.b64encode(b"{").decode()}
        ).encode(),
        "no nonce": _resigned(agent, without_nonce),
        "jwk and kid": _resigned(agent, {**protected, "jwk": agent.key.public_key().to_json()}),
        "payload not an object": encode(signed(agent, payload=b"[1]")),
    }


@pytest.mark.parametrize(
    "case",
    ["not json", "json array", "compact serialization", "missing signature", "extra member",
     "bad base64", "duplicate member", "header not json", "no nonce", "jwk and kid",
     "payload not an object"],
)  # fmt: skip
def test_malformed_jws(dep: AcmeDeployment, agents: tuple[Agent, Agent], case: str) -> None:
    body = malformed_bodies(agents[0])[case]
    assert refused(dep, lambda: post(dep, NEW_ORDER, body)) == (400, "malformed")


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", "ES512", "PS256", 5])
def test_algorithms_other_than_the_four_are_refused(
    dep: AcmeDeployment, agents: tuple[Agent, Agent], alg: object
) -> None:
    agent = agents[0]
    protected = {"alg": alg, "nonce": agent.nonce(), "url": NEW_ORDER, "kid": agent.kid}
    body = encode(sign_raw(protected, json.dumps(ORDER).encode(), agent.key, agent.alg))
    status, kind = refused(dep, lambda: post(dep, NEW_ORDER, body))
    assert (status, kind) == (400, "badSignatureAlgorithm")


def test_an_algorithm_not_of_the_key_is_refused(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    agent = agents[0]
    protected = {"alg": "ES384", "nonce": agent.nonce(), "url": NEW_ORDER, "kid": agent.kid}
    body = encode(sign_raw(protected, json.dumps(ORDER).encode(), agent.key, agent.alg))
    assert refused(dep, lambda: post(dep, NEW_ORDER, body)) == (400, "badSignatureAlgorithm")


def test_a_bad_signature_is_refused_and_keeps_the_nonce(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    agent = agents[0]
    document = signed(agent)
    forged = dict(
        document, payload=b64.b64encode(json.dumps({"identifiers": []}).encode()).decode()
    )

    assert refused(dep, lambda: post(dep, NEW_ORDER, encode(forged))) == (400, "malformed")
    assert post(dep, NEW_ORDER, encode(document)).status == 201


def test_replayed_and_unknown_nonces_are_bad(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    agent = agents[0]
    url = agent.kid or ""
    document = signed(agent, payload=None, url=url)
    assert post(dep, url, encode(document)).status == 200
    never_issued = b64.b64encode(b"\x00" * 32).decode()
    unknown = sign(None, agent.key, agent.alg, url=url, nonce=never_issued, kid=agent.kid)

    assert refused(dep, lambda: post(dep, url, encode(document))) == (400, "badNonce")
    assert refused(dep, lambda: post(dep, url, encode(unknown))) == (400, "badNonce")


def test_a_request_for_another_url_is_unauthorized(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    agent = agents[0]
    body = encode(signed(agent, url=f"{BASE}/new-account"))
    assert refused(dep, lambda: post(dep, NEW_ORDER, body)) == (403, "unauthorized")


def test_the_kid_of_another_account_does_not_verify(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    agent, other = agents
    body = encode(sign(ORDER, agent.key, agent.alg, url=NEW_ORDER, nonce=agent.nonce(),
                       kid=other.kid))  # fmt: skip
    assert refused(dep, lambda: post(dep, NEW_ORDER, body)) == (400, "malformed")


def test_the_resources_of_another_account_are_unauthorized(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    agent, other = agents
    order = agent.order("b.svc.test")
    urls = [order.header("Location"), order.json()["finalize"], *order.json()["authorizations"]]
    for url in urls:
        payload = {"csr": "AA"} if "/finalize/" in (url or "") else None
        reply = other.post(url or "", payload)
        assert reply.status == 403 and reply.json()["type"].endswith(":unauthorized")
    assert agent.post(order.header("Location") or "", None).status == 200


@pytest.mark.parametrize("kid", ["https://127.0.0.1:18641/cas/acme/account/1",
                                 "https://elsewhere/cas/acme/account/1", "1"])  # fmt: skip
def test_an_unknown_kid_is_no_account(
    dep: AcmeDeployment, agents: tuple[Agent, Agent], kid: str
) -> None:
    agent = agents[0]
    body = encode(sign(ORDER, agent.key, agent.alg, url=NEW_ORDER, nonce=agent.nonce(), kid=kid))
    assert refused(dep, lambda: post(dep, NEW_ORDER, body)) == (400, "accountDoesNotExist")


def test_a_new_account_must_carry_its_key(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    agent = agents[0]
    url = f"{BASE}/new-account"
    body = encode(sign({}, agent.key, agent.alg, url=url, nonce=agent.nonce(), kid=agent.kid))
    assert refused(dep, lambda: post(dep, url, body)) == (400, "malformed")


def test_orders_must_be_signed_by_an_account(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    stranger = Agent(dep)
    body = encode(sign(ORDER, stranger.key, stranger.alg, url=NEW_ORDER, nonce=stranger.nonce()))
    assert refused(dep, lambda: post(dep, NEW_ORDER, body)) == (400, "malformed")


@pytest.mark.parametrize("bits", [1024])
def test_a_weak_key_is_a_bad_public_key(dep: AcmeDeployment, bits: int) -> None:
    key = JWKRSA(key=rsa.generate_private_key(65537, bits))
    url = f"{BASE}/new-account"
    nonce = Agent(dep).nonce()
    protected = {"alg": "RS256", "nonce": nonce, "url": url, "jwk": key.public_key().to_json()}
    body = encode(sign_raw(protected, b"{}", key, jwa.RS256))
    assert refused(dep, lambda: post(dep, url, body)) == (400, "badPublicKey")


def test_oversized_bodies_are_refused_unread(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    def send() -> Reply:
        environ = {"CONTENT_LENGTH": str(10**6), "wsgi.input": _Exploding()}
        return call(dep.app, "POST", "/cas/acme/new-order", b"", content_type=JOSE, https=True,
                    environ=environ)  # fmt: skip

    assert refused(dep, send) == (413, "malformed")
    big = encode(
        signed(agents[0], payload={"identifiers": ORDER["identifiers"], "x": "a" * 70_000})
    )
    assert refused(dep, lambda: post(dep, NEW_ORDER, big)) == (413, "malformed")


class _Exploding:
    def read(self, size: int = -1) -> bytes:
        raise AssertionError("read although refused first")


@pytest.mark.parametrize("content_type", ["application/json", None, "application/jose"])
def test_the_content_type_is_jose_json(
    dep: AcmeDeployment, agents: tuple[Agent, Agent], content_type: str | None
) -> None:
    body = encode(signed(agents[0]))
    reply = lambda: call(dep.app, "POST", "/cas/acme/new-order", body,  # noqa: E731
                         content_type=content_type, https=True)  # fmt: skip
    assert refused(dep, reply) == (415, "malformed")


def test_get_on_a_post_resource_is_not_allowed(dep: AcmeDeployment) -> None:
    status, kind = refused(dep, lambda: call(dep.app, "GET", "/cas/acme/new-order", https=True))
    assert (status, kind) == (405, "malformed")
    reply = call(dep.app, "GET", "/cas/acme/new-order", https=True)
    assert "POST" in (reply.header("Allow") or "")


@pytest.mark.parametrize(
    "path", ["/cas/acme", "/cas/acme/nothing", "/cas/acme/order/abc", "/cas/acme/order/1/2",
             "/cas/acme/order/+1", "/cas/acme/order/" + "9" * 30, "/cas/acme/order/\u0661"],
)  # fmt: skip
def test_unknown_resources_are_not_found(
    dep: AcmeDeployment, agents: tuple[Agent, Agent], path: str
) -> None:
    agent = agents[0]
    url = "https://127.0.0.1:18641" + path
    body = encode(sign(None, agent.key, agent.alg, url=url, nonce=agent.nonce(), kid=agent.kid))
    status, kind = refused(dep, lambda: post(dep, url, body))
    assert status == 404 and kind == "malformed"


def test_an_unknown_order_id_is_not_found(
    dep: AcmeDeployment, agents: tuple[Agent, Agent]
) -> None:
    agent = agents[0]
    assert refused(dep, lambda: agent.post(f"{BASE}/order/12345", None)) == (404, "malformed")


def test_acme_is_served_over_https_only(dep: AcmeDeployment) -> None:
    reply = call(dep.app, "GET", "/cas/acme/directory")
    assert reply.status == 400 and reply.header("Content-Type") == PROBLEM
    assert "https://" in reply.json()["detail"]


def test_finalize_before_ready(tmp_path: Path, clock: FakeClock) -> None:
    validators = Validators.of([Dns01Validator(Resolver(("127.0.0.1", 9)))])
    dep = deploy_acme(tmp_path, clock, AcmeSettings(validators))
    try:
        agent = Agent(dep)
        agent.register(dep.mint("*.svc.test"))
        order = agent.order("outside.example")
        assert order.json()["status"] == "pending"
        assert refused(dep, lambda: agent.finalize(order.json(), "outside.example")[1]) == (
            403,
            "orderNotReady",
        )
    finally:
        dep.close()


def test_a_key_of_the_wrong_type_for_eddsa(dep: AcmeDeployment) -> None:
    key, _ = account_key("ES256")
    url = f"{BASE}/new-account"
    protected = {
        "alg": "EdDSA",
        "nonce": Agent(dep).nonce(),
        "url": url,
        "jwk": key.public_key().to_json(),
    }
    body = with_protected(
        sign({}, key, account_key("ES256")[1], url=url, nonce=Agent(dep).nonce()), protected
    )
    assert refused(dep, lambda: post(dep, url, encode(body)))[1] == "badSignatureAlgorithm"


ACME_POST_PATHS = [
    "/cas/acme/new-account", "/cas/acme/new-order", "/cas/acme/key-change",
    "/cas/acme/revoke-cert", "/cas/acme/account/1", "/cas/acme/orders/1",
    "/cas/acme/order/1", "/cas/acme/finalize/1", "/cas/acme/authz/1",
    "/cas/acme/challenge/1", "/cas/acme/certificate/1",
]  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
PAYLOAD_MEMBERS = [
    "identifiers", "csr", "status", "contact", "certificate", "reason", "onlyReturnExisting",
    "externalAccountBinding", "replaces", "x",
]  # fmt: skip
FIXTURES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FIXTURES
@given(
    path=st.sampled_from(ACME_POST_PATHS),
    body=st.binary(max_size=512) | JSON_VALUES.map(lambda value: json.dumps(value).encode()),
)
def test_arbitrary_bodies_on_every_route_are_refused_cleanly(
    dep: AcmeDeployment, path: str, body: bytes
) -> None:
    reply = call(dep.app, "POST", path, body, content_type=JOSE, https=True)
    assert 400 <= reply.status < 500 and reply.header("Content-Type") == PROBLEM
    assert reply.errors == ""


@FIXTURES
@given(
    path=st.sampled_from(ACME_POST_PATHS),
    payload=st.dictionaries(st.sampled_from(PAYLOAD_MEMBERS), JSON_VALUES, max_size=3),
)
def test_signed_arbitrary_payloads_never_fail_the_server(
    dep: AcmeDeployment, agents: tuple[Agent, Agent], path: str, payload: dict[str, Any]
) -> None:
    agent = agents[1]
    url = "https://127.0.0.1:18641" + path
    reply = agent.post(url, payload, use_jwk=path.endswith("new-account"))
    assert reply.status < 500 and reply.errors == "", (reply.status, reply.body)
    if reply.status >= 400:
        assert reply.header("Content-Type") == PROBLEM
