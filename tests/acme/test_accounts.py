"""Accounts through the ACME front door (RFC 8555 7.3): External Account Binding by
default, one account per credential, lookups by key, updates, deactivation, key rollover,
and the open accounts of --acme-open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from josepy import b64, jwa
from josepy.jwk import JWKOct

from caucase.acme.challenges import Validators
from caucase.acme.service import AcmeSettings
from tests.conftest import FakeClock
from tests.support.acme_jws import account_key, sign_raw
from tests.support.acme_wsgi import BASE, PROBLEM, AcmeDeployment, Agent, deploy_acme
from tests.support.wsgi_support import Reply, call


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock) -> Iterator[AcmeDeployment]:
    deployment = deploy_acme(tmp_path, clock)
    yield deployment
    deployment.close()


def problem(reply: Reply) -> str:
    assert reply.header("Content-Type") == PROBLEM, reply.body
    assert 400 <= reply.status < 500, reply.status
    assert reply.header("Replay-Nonce")
    return str(reply.json()["type"]).rsplit(":", 1)[-1]


def test_the_directory_requires_external_account_binding(dep: AcmeDeployment) -> None:
    reply = call(dep.app, "GET", "/cas/acme/directory", https=True)
    assert reply.status == 200
    assert reply.json()["meta"] == {"externalAccountRequired": True}
    assert reply.json()["renewalInfo"] == "https://127.0.0.1:18641/cas/renewal-info"
    assert reply.header("Link") == f'<{BASE}/directory>;rel="index"'


def test_an_account_needs_a_credential(dep: AcmeDeployment) -> None:
    assert problem(Agent(dep).register()) == "externalAccountRequired"


def test_a_credential_makes_one_account_and_its_key_finds_it_again(dep: AcmeDeployment) -> None:
    credential = dep.mint("*.svc.test")
    agent = Agent(dep)

    created = agent.register(credential, contact=["mailto:ops@svc.test"])
    again = agent.register(credential)
    lookup = agent.register(onlyReturnExisting=True)

    assert created.status == 201
    assert created.json() == {
        "status": "valid",
        "orders": created.header("Location").replace("/account/", "/orders/"),
        "contact": ["mailto:ops@svc.test"],
    }
    assert again.status == lookup.status == 200
    assert again.header("Location") == lookup.header("Location") == created.header("Location")


def test_only_return_existing_finds_no_unknown_key(dep: AcmeDeployment) -> None:
    assert problem(Agent(dep).register(onlyReturnExisting=True)) == "accountDoesNotExist"


def test_a_credential_binds_a_single_account(dep: AcmeDeployment) -> None:
    credential = dep.mint("*.svc.test")
    assert Agent(dep).register(credential).status == 201
    before = dep.state()

    assert problem(Agent(dep).register(credential)) == "unauthorized"
    assert dep.state() == before


@pytest.mark.parametrize("alteration", ["unknown kid", "wrong key", "other account key"])
def test_a_bad_binding_is_unauthorized(dep: AcmeDeployment, alteration: str) -> None:
    kid, key = dep.mint("*.svc.test")
    agent = Agent(dep)
    if alteration == "unknown kid":
        kid = "no-such-kid"
    elif alteration == "wrong key":
        key = b64.b64encode(b"\x01" * 32).decode()
    binding = agent.eab(kid, key)
    if alteration == "other account key":
        stranger, _ = account_key("ES256")
        binding["payload"] = b64.b64encode(
            json.dumps(stranger.public_key().to_json()).encode()
        ).decode()
    before = dep.state()

    reply = agent.post(f"{BASE}/new-account", {"externalAccountBinding": binding}, use_jwk=True)

    assert problem(reply) == "unauthorized"
    assert dep.state() == before


def test_the_binding_compares_keys_by_content_not_by_bytes(dep: AcmeDeployment) -> None:
    kid, key = dep.mint("*.svc.test")
    agent = Agent(dep)
    binding = agent.eab(kid, key)
    members = agent.key.public_key().to_json()
    reordered = json.dumps(dict(reversed(list(members.items()))), indent=3).encode()
    protected = json.loads(b64.b64decode(binding["protected"]))
    binding = sign_raw(protected, reordered, JWKOct(key=b64.b64decode(key)), jwa.HS256)

    reply = agent.post(f"{BASE}/new-account", {"externalAccountBinding": binding}, use_jwk=True)

    assert reply.status == 201, reply.body


def test_an_account_reads_updates_and_deactivates_itself(dep: AcmeDeployment) -> None:
    agent = Agent(dep)
    agent.register(dep.mint("*.svc.test"))
    assert agent.kid

    read = agent.post(agent.kid, None)
    updated = agent.post(agent.kid, {"contact": ["mailto:new@svc.test"]})
    deactivated = agent.post(agent.kid, {"status": "deactivated"})

    assert read.json()["status"] == "valid" and "contact" not in read.json()
    assert updated.json()["contact"] == ["mailto:new@svc.test"]
    assert deactivated.json()["status"] == "deactivated"
    assert problem(agent.post(agent.kid, None)) == "unauthorized"
    assert problem(agent.order("a.svc.test")) == "unauthorized"
    assert problem(agent.register(onlyReturnExisting=True)) == "unauthorized"


def test_an_account_cannot_read_another(dep: AcmeDeployment) -> None:
    first, second = Agent(dep), Agent(dep)
    first.register(dep.mint("*.svc.test"))
    second.register(dep.mint("*.svc.test"))
    assert first.kid and second.kid

    assert problem(first.post(second.kid, None)) == "unauthorized"
    assert problem(first.post(second.kid.replace("/account/", "/orders/"), None)) == "unauthorized"


@pytest.mark.parametrize("contact", [["tel:+33"], ["mailto:a@b", "mailto:c@d"] * 3, "x"])
def test_bad_contacts_are_refused(dep: AcmeDeployment, contact: object) -> None:
    reply = Agent(dep).register(dep.mint("*.svc.test"), contact=contact)
    assert problem(reply) in ("unsupportedContact", "invalidContact", "malformed")


def test_a_revoked_credential_revokes_its_account(dep: AcmeDeployment) -> None:
    kid, key = dep.mint("*.svc.test")
    agent = Agent(dep)
    agent.register((kid, key))
    reply = call(dep.app, "PUT", "/cau/acme/eab/revoke", json.dumps({"kid": kid}).encode(),
                 content_type="application/json", https=True, cert=dep.user_crt)  # fmt: skip
    assert reply.status == 204

    assert problem(agent.order("a.svc.test")) == "unauthorized"
    assert problem(Agent(dep).register((kid, key))) == "unauthorized"


def key_change(agent: Agent, new: Agent) -> Reply:
    url = f"{BASE}/key-change"
    inner = sign_raw(
        {"alg": new.alg.name, "jwk": new.key.public_key().to_json(), "url": url},
        json.dumps({"account": agent.kid, "oldKey": agent.key.public_key().to_json()}).encode(),
        new.key, new.alg,
    )  # fmt: skip
    return agent.post(url, inner)


def test_key_rollover(dep: AcmeDeployment) -> None:
    agent, successor = Agent(dep), Agent(dep)
    agent.register(dep.mint("*.svc.test"))

    assert key_change(agent, successor).status == 200

    successor.kid = agent.kid
    assert successor.post(agent.kid or "", None).status == 200
    assert problem(agent.post(agent.kid or "", None)) == "malformed"  # old key: bad signature


def test_a_key_another_account_holds_is_a_conflict(dep: AcmeDeployment) -> None:
    agent, other = Agent(dep), Agent(dep)
    agent.register(dep.mint("*.svc.test"))
    other.register(dep.mint("*.svc.test"))
    before = dep.state()

    reply = key_change(agent, other)

    assert reply.status == 409 and reply.header("Location") == other.kid
    assert dep.state() == before


@pytest.fixture
def open_dep(tmp_path: Path, clock: FakeClock) -> Iterator[AcmeDeployment]:
    settings = AcmeSettings(Validators.of([]), open_accounts=True, max_open_accounts=2)
    deployment = deploy_acme(tmp_path, clock, settings)
    yield deployment
    deployment.close()


def test_open_accounts_need_no_credential_up_to_their_cap(open_dep: AcmeDeployment) -> None:
    directory = call(open_dep.app, "GET", "/cas/acme/directory", https=True).json()
    assert directory["meta"]["externalAccountRequired"] is False
    assert Agent(open_dep).register().status == 201
    assert Agent(open_dep).register().status == 201
    assert Agent(open_dep).register(open_dep.mint("a.svc.test")).status == 201
    before = open_dep.state()

    refused = Agent(open_dep).register()

    assert problem(refused) == "rateLimited" and refused.status == 429
    assert open_dep.state() == before
