"""Orders, finalize, download and revocation through the ACME front door: scopes
pre-authorize, the certificate has the profile of a CSR signed through /cas, sits in the
CAS crt table, and its revocation (with its reason) lands in the CAS CRL."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import b64
from josepy.jwk import JWKEC

from caucase.acme.issuance import Issuance
from caucase.acme.orders import Limits
from caucase.acme.renewal_info import CertID
from caucase.acme.service import AcmeSettings
from caucase.audit import AuditEvent, AuditLogError
from caucase.crypto import x509util
from tests.conftest import FakeClock
from tests.support.acme_jws import encode, sign
from tests.support.acme_wsgi import (
    BASE,
    PROBLEM,
    AcmeDeployment,
    Agent,
    csr_for,
    deploy_acme,
    path_of,
)
from tests.support.wsgi_support import Reply, call


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock) -> Iterator[AcmeDeployment]:
    deployment = deploy_acme(tmp_path, clock, AcmeSettings(limits=Limits(pending_orders=3)))
    yield deployment
    deployment.close()


@pytest.fixture
def agent(dep: AcmeDeployment) -> Agent:
    client = Agent(dep)
    assert client.register(dep.mint("*.svc.test", "web.example", "10.0.0.7")).status == 201
    return client


def problem(reply: Reply) -> str:
    assert reply.header("Content-Type") == PROBLEM, (reply.status, reply.body)
    assert 400 <= reply.status < 500 and reply.header("Replay-Nonce")
    return str(reply.json()["type"]).rsplit(":", 1)[-1]


def test_names_in_scope_are_ready_at_once(agent: Agent) -> None:
    reply = agent.order("a.svc.test", "web.example")

    assert reply.status == 201
    order = reply.json()
    assert order["status"] == "ready" and reply.header("Location")
    assert "Retry-After" not in dict(reply.headers)
    for url in order["authorizations"]:
        authz = agent.post(url, None).json()
        assert authz["status"] == "valid" and authz["challenges"] == []


def test_names_outside_the_scope_are_rejected_one_by_one(
    dep: AcmeDeployment, agent: Agent
) -> None:
    before = dep.state()

    reply = agent.order("a.svc.test", "other.example", "svc.test")

    assert problem(reply) == "rejectedIdentifier" and reply.status == 403
    refused = [sub["identifier"]["value"] for sub in reply.json()["subproblems"]]
    assert refused == ["other.example", "svc.test"]
    assert dep.state() == before


def test_the_profile_is_that_of_the_cas(dep: AcmeDeployment, agent: Agent) -> None:
    key, chain = agent.issue("b.svc.test", "a.svc.test")

    leaf, issuer = x509.load_pem_x509_certificates(chain)
    assert issuer.public_bytes(serialization.Encoding.PEM) == dep.cas.get_ca_certificate()
    leaf.verify_directly_issued_by(issuer)
    assert leaf.public_key() == key.public_key()
    assert leaf.subject.rfc4514_string() == "CN=a.svc.test"
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["a.svc.test", "b.svc.test"]
    assert not names.critical
    points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value.startswith("http://test/cas/crl/")
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert life == datetime.timedelta(days=93)
    assert not x509util.is_auto_signed(leaf)
    dep.cas.verify_certificate(leaf)
    stored = [x509util.load_certificate(pem) for pem in dep.cas._storage.iter_certificates()]
    assert leaf.serial_number in {crt.serial_number for crt in stored}


def test_an_ip_address_is_never_the_common_name(agent: Agent) -> None:
    order = agent.post(f"{BASE}/new-order", {"identifiers": [{"type": "ip", "value": "10.0.0.7"}]})
    _, finalized = agent.finalize(order.json(), "10.0.0.7")
    leaf = x509.load_pem_x509_certificates(agent.post(finalized.json()["certificate"]).body)[0]

    assert leaf.subject == x509.Name([])
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.critical and [
        str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)
    ] == ["10.0.0.7"]


@pytest.mark.parametrize(
    "names",
    [("a.svc.test",), ("a.svc.test", "b.svc.test", "c.svc.test"), ("x.svc.test", "b.svc.test")],
)
def test_a_csr_for_other_names_is_bad(
    dep: AcmeDeployment, agent: Agent, names: tuple[str, ...]
) -> None:
    order = agent.order("a.svc.test", "b.svc.test").json()
    before = dep.state()

    _, reply = agent.finalize(order, *names)

    assert problem(reply) == "badCSR"
    assert dep.state() == before
    assert (
        agent.post(order["finalize"].replace("/finalize/", "/order/"), None).json()["status"]
        == "ready"
    )


def test_the_account_key_cannot_be_the_certificate_key(dep: AcmeDeployment, agent: Agent) -> None:
    order = agent.order("a.svc.test").json()
    account_key = agent.key.key._wrapped  # josepy wraps the cryptography key
    _, reply = agent.finalize(order, "a.svc.test", key=account_key)
    assert problem(reply) == "badCSR"


def test_an_order_is_finalized_once(dep: AcmeDeployment, agent: Agent) -> None:
    order = agent.order("a.svc.test").json()
    assert agent.finalize(order, "a.svc.test")[1].status == 200
    before = dep.state()

    _, again = agent.finalize(order, "a.svc.test")

    assert problem(again) == "orderNotReady"
    assert dep.state() == before


def test_an_issuance_is_reported_once_its_order_is_committed(
    dep: AcmeDeployment, agent: Agent
) -> None:
    seen: list[AuditEvent] = []

    class Seen:
        def ready(self) -> None:
            """Always ready."""

        def notify(self, *items: AuditEvent) -> None:
            seen.extend(items)

    dep.acme.issuance = Issuance(dep.acme.storage, dep.cas, dep.acme.orders, Seen())
    order = agent.order("a.svc.test").json()
    crt_id = agent.finalize(order, "a.svc.test")[1].json()["certificate"].rsplit("/", 1)[-1]
    agent.finalize(order, "a.svc.test")  # refused: nothing more to report
    assert [(item.name, item.fields["authority"]) for item in seen] == [("acme-issued", "cas")]
    assert seen[0].fields["subject"] == "CN=a.svc.test" and crt_id


def test_a_finalize_the_audit_log_cannot_record_is_refused_and_the_order_stays_ready(
    dep: AcmeDeployment, agent: Agent
) -> None:
    class Broken:
        def ready(self) -> None:
            raise AuditLogError("disk full")

        def notify(self, *items: AuditEvent) -> None:
            raise AssertionError("nothing may be reported: nothing was issued")

    dep.acme.issuance = Issuance(dep.acme.storage, dep.cas, dep.acme.orders, Broken())
    order = agent.order("a.svc.test").json()
    before = dep.state()

    _, refused = agent.finalize(order, "a.svc.test")

    assert refused.status == 503 and refused.header("Retry-After")
    assert dep.state() == before
    dep.acme.issuance = Issuance(dep.acme.storage, dep.cas, dep.acme.orders)
    assert agent.finalize(order, "a.svc.test")[1].status == 200


def test_pending_orders_are_capped(dep: AcmeDeployment, agent: Agent) -> None:
    for number in range(3):
        assert agent.order(f"{number}.svc.test").status == 201
    before = dep.state()

    refused = agent.order("4.svc.test")

    assert problem(refused) == "rateLimited" and refused.header("Retry-After")
    assert dep.state() == before


def test_not_before_and_not_after_are_the_cas_to_decide(agent: Agent) -> None:
    reply = agent.post(f"{BASE}/new-order", {
        "identifiers": [{"type": "dns", "value": "a.svc.test"}],
        "notAfter": "2030-01-01T00:00:00Z",
    })  # fmt: skip
    assert problem(reply) == "malformed"


def test_orders_are_listed_and_another_account_sees_none(
    dep: AcmeDeployment, agent: Agent
) -> None:
    first = agent.order("a.svc.test").header("Location")
    stranger = Agent(dep)
    stranger.register(dep.mint("*"))
    assert agent.kid

    listed = agent.post(agent.kid.replace("/account/", "/orders/"), None)

    assert listed.json() == {"orders": [first]}
    assert problem(stranger.post(first or "", None)) == "unauthorized"


def revocation(agent: Agent, chain: bytes, reason: int | None = None, **options: bool) -> Reply:
    leaf = x509.load_pem_x509_certificates(chain)[0]
    payload: dict[str, object] = {
        "certificate": b64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()
    }
    if reason is not None:
        payload["reason"] = reason
    return agent.post(f"{BASE}/revoke-cert", payload, **options)


def crl_entry(dep: AcmeDeployment, chain: bytes) -> x509.RevokedCertificate | None:
    leaf = x509.load_pem_x509_certificates(chain)[0]
    crl = x509.load_pem_x509_crl(call(dep.app, "GET", "/cas/crl").body)
    return crl.get_revoked_certificate_by_serial_number(leaf.serial_number)


def test_revocation_by_the_account_puts_its_reason_in_the_crl(
    dep: AcmeDeployment, agent: Agent
) -> None:
    _, chain = agent.issue("a.svc.test")

    assert revocation(agent, chain, reason=4).status == 200

    entry = crl_entry(dep, chain)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.superseded
    assert problem(revocation(agent, chain)) == "alreadyRevoked"


def test_revocation_by_the_certificate_key(dep: AcmeDeployment, agent: Agent) -> None:
    key, chain = agent.issue("a.svc.test")
    holder = Agent(dep)
    holder.key = JWKEC(key=key)

    assert revocation(holder, chain, reason=1, use_jwk=True).status == 200
    entry = crl_entry(dep, chain)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )


def test_an_unspecified_reason_leaves_the_entry_without_reason_code(
    dep: AcmeDeployment, agent: Agent
) -> None:
    _, chain = agent.issue("a.svc.test")
    assert revocation(agent, chain, reason=0).status == 200
    entry = crl_entry(dep, chain)
    assert entry is not None and len(entry.extensions) == 0


@pytest.mark.parametrize("who", ["another account", "another key"])
def test_a_stranger_cannot_revoke(dep: AcmeDeployment, agent: Agent, who: str) -> None:
    _, chain = agent.issue("a.svc.test")
    stranger = Agent(dep)
    if who == "another account":
        stranger.register(dep.mint("*"))
    before = dep.state()

    reply = revocation(stranger, chain, use_jwk=who == "another key")

    assert problem(reply) == "unauthorized"
    assert dep.state() == before and crl_entry(dep, chain) is None


@pytest.mark.parametrize("reason", [2, 6, 7, 8, 10, 11, -1, "1", True])
def test_bad_reasons(dep: AcmeDeployment, agent: Agent, reason: object) -> None:
    _, chain = agent.issue("a.svc.test")
    before = dep.state()
    reply = revocation(agent, chain, reason=reason)  # type: ignore[arg-type]
    assert problem(reply) == "badRevocationReason"
    assert dep.state() == before


def test_an_order_replaces_a_certificate_once(dep: AcmeDeployment, agent: Agent) -> None:
    _, chain = agent.issue("a.svc.test")
    cert_id = str(CertID.of(x509.load_pem_x509_certificates(chain)[0]))
    payload = {"identifiers": [{"type": "dns", "value": "a.svc.test"}], "replaces": cert_id}

    first = agent.post(f"{BASE}/new-order", payload)
    second = agent.post(f"{BASE}/new-order", payload)

    assert first.status == 201 and first.json()["replaces"] == cert_id
    assert problem(second) == "alreadyReplaced" and second.status == 409


def test_only_a_certificate_of_the_account_can_be_replaced(
    dep: AcmeDeployment, agent: Agent
) -> None:
    _, chain = agent.issue("a.svc.test")
    stranger = Agent(dep)
    stranger.register(dep.mint("*"))
    cert_id = str(CertID.of(x509.load_pem_x509_certificates(chain)[0]))
    payload = {"identifiers": [{"type": "dns", "value": "a.svc.test"}], "replaces": cert_id}

    assert problem(stranger.post(f"{BASE}/new-order", payload)) == "malformed"


def test_the_certificate_is_renewed_by_its_key_holder(dep: AcmeDeployment, agent: Agent) -> None:
    """An ACME certificate is a CAS certificate like any: caucase's renewal takes it."""
    _, chain = agent.issue("a.svc.test")
    new_key = ec.generate_private_key(ec.SECP256R1())
    csr = x509util.make_renewal_csr(new_key, x509.load_pem_x509_certificates(chain)[0].subject)
    leaf_pem = x509util.dump_certificate(x509.load_pem_x509_certificates(chain)[0])

    renewed = x509util.load_certificate(
        dep.cas.renew(leaf_pem, x509util.dump_certificate_request(csr))
    )

    assert renewed.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == ["a.svc.test"]


def test_signed_requests_cannot_be_replayed(dep: AcmeDeployment, agent: Agent) -> None:
    payload = {"identifiers": [{"type": "dns", "value": "a.svc.test"}]}
    url = f"{BASE}/new-order"
    body = encode(sign(payload, agent.key, agent.alg, url=url, nonce=agent.nonce(), kid=agent.kid))
    assert agent.post(f"{BASE}/new-order", body=body).status == 201
    before = dep.state()

    replayed = agent.post(f"{BASE}/new-order", body=body)

    assert problem(replayed) == "badNonce"
    assert dep.state() == before
    assert path_of(f"{BASE}/new-order") == "/cas/acme/new-order"


def test_a_replayed_finalize_changes_nothing(dep: AcmeDeployment, agent: Agent) -> None:
    """finalize spends its nonce in the transaction storing the certificate."""
    order = agent.order("a.svc.test").json()
    _, csr = csr_for("a.svc.test")
    url = order["finalize"]
    body = encode(sign({"csr": csr}, agent.key, agent.alg, url=url, nonce=agent.nonce(),
                       kid=agent.kid))  # fmt: skip
    other = agent.order("b.svc.test").json()
    assert agent.post(url, body=body).status == 200
    before = dep.state()

    replayed = agent.post(url, body=body)

    assert problem(replayed) in ("badNonce", "orderNotReady")
    assert dep.state() == before
    assert (
        agent.post(other["finalize"].replace("/finalize/", "/order/")).json()["status"] == "ready"
    )


def test_a_deactivated_authorization_invalidates_its_order(agent: Agent) -> None:
    reply = agent.order("a.svc.test")
    (url,) = reply.json()["authorizations"]

    deactivated = agent.post(url, {"status": "deactivated"})

    assert deactivated.json()["status"] == "deactivated"
    assert agent.post(reply.header("Location") or "").json()["status"] == "invalid"
    assert problem(agent.post(url, {"status": "valid"})) == "malformed"
    _, finalized = agent.finalize(reply.json(), "a.svc.test")
    assert problem(finalized) == "orderNotReady"
