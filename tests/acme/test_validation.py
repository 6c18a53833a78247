"""Challenges caucased validates with --acme-challenge, for names outside the scope: a
POST starts the validation in the background, the client polls the authorization, the
outcome is stored; each validator is the real one, against a real responder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caucase.acme.challenges import (
    Dns01Validator,
    Http01Validator,
    Validators,
    dns_txt_value,
    key_authorization,
)
from caucase.acme.resolver import Resolver
from caucase.acme.service import AcmeSettings
from caucase.acme.tls_alpn import TlsAlpn01Validator
from tests.conftest import FakeClock
from tests.support.acme_wsgi import AcmeDeployment, Agent, deploy_acme
from tests.support.challtestsrv import ChallTestSrv
from tests.support.servers import free_port
from tests.support.wait import poll


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock, challtestsrv: ChallTestSrv) -> Iterator[AcmeDeployment]:
    challtestsrv.add_a("outside.example.", "127.0.0.1")
    resolver = Resolver(("127.0.0.1", challtestsrv.dns_port), timeout=5)
    validators = Validators.of([
        Http01Validator(resolver, challtestsrv.http01_port or 0, timeout=5),
        Dns01Validator(resolver),
        TlsAlpn01Validator(resolver, free_port(), timeout=5),
    ])  # fmt: skip
    deployment = deploy_acme(tmp_path, clock, AcmeSettings(validators))
    yield deployment
    deployment.close()


@pytest.fixture
def agent(dep: AcmeDeployment) -> Agent:
    client = Agent(dep)
    client.register(dep.mint("*.svc.test"))
    return client


def pending_order(agent: Agent, *names: str) -> tuple[dict[str, Any], dict[str, Any]]:
    order = agent.order(*names)
    assert order.status == 201 and order.json()["status"] == "pending"
    (url,) = [u for u in order.json()["authorizations"]
              if agent.post(u, None).json()["status"] == "pending"]  # fmt: skip
    return order.json() | {"url": order.header("Location")}, agent.post(url, None).json() | {
        "url": url
    }


def challenge(authz: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [item for item in authz["challenges"] if item["type"] == kind]
    return found


def settled(agent: Agent, url: str) -> dict[str, Any]:
    poll(lambda: agent.post(url, None).json()["status"] != "pending", "the validation", 30)
    document: dict[str, Any] = agent.post(url, None).json()
    return document


def test_out_of_scope_names_get_the_challenges_that_apply(agent: Agent) -> None:
    _, authz = pending_order(agent, "a.svc.test", "outside.example")
    assert sorted(item["type"] for item in authz["challenges"]) == [
        "dns-01", "http-01", "tls-alpn-01",
    ]  # fmt: skip
    assert all(item["status"] == "pending" for item in authz["challenges"])
    wildcard = agent.order("*.outside.example").json()
    (url,) = wildcard["authorizations"]
    document = agent.post(url, None).json()
    assert document["wildcard"] is True and document["identifier"]["value"] == "outside.example"
    assert [item["type"] for item in document["challenges"]] == ["dns-01"]


def test_dns_01_validates_and_the_order_becomes_ready(
    agent: Agent, challtestsrv: ChallTestSrv
) -> None:
    order, authz = pending_order(agent, "a.svc.test", "outside.example")
    item = challenge(authz, "dns-01")
    challtestsrv.set_txt(
        "_acme-challenge.outside.example",
        dns_txt_value(key_authorization(item["token"], agent.key)),
    )

    started = agent.post(item["url"], {})

    assert started.status == 200 and started.json()["status"] in ("processing", "valid")
    links = [value for name, value in started.headers if name == "Link"]
    assert f'<{authz["url"]}>;rel="up"' in links
    assert settled(agent, authz["url"])["status"] == "valid"
    assert agent.post(item["url"], None).json()["status"] == "valid"
    assert agent.post(order["url"], None).json()["status"] == "ready"
    _, finalized = agent.finalize(order, "a.svc.test", "outside.example")
    assert finalized.json()["status"] == "valid"


def test_a_failed_challenge_invalidates_the_authorization_and_the_order(
    agent: Agent, dep: AcmeDeployment
) -> None:
    order, authz = pending_order(agent, "outside.example")
    item = challenge(authz, "http-01")  # challtestsrv answers 404 for an unknown token

    agent.post(item["url"], {})

    assert settled(agent, authz["url"])["status"] == "invalid"
    failed = agent.post(item["url"], None).json()
    assert failed["status"] == "invalid"
    assert failed["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse"
    assert agent.post(order["url"], None).json()["status"] == "invalid"


def test_http_01_validates(agent: Agent, challtestsrv: ChallTestSrv) -> None:
    _, authz = pending_order(agent, "outside.example")
    item = challenge(authz, "http-01")
    challtestsrv.add_http01(item["token"], key_authorization(item["token"], agent.key))

    agent.post(item["url"], {})

    assert settled(agent, authz["url"])["status"] == "valid"


def test_a_post_as_get_starts_nothing(agent: Agent) -> None:
    _, authz = pending_order(agent, "outside.example")
    item = challenge(authz, "dns-01")
    assert agent.post(item["url"], None).json()["status"] == "pending"
    assert agent.post(authz["url"], None).json()["status"] == "pending"
