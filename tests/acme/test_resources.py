"""Resource documents as certbot's ``acme`` library reads them."""

from __future__ import annotations

import datetime

import pytest
from acme import messages

from caucase.acme.challenges import new_token
from caucase.acme.identifiers import Identifier
from caucase.acme.problems import IncorrectResponse
from caucase.acme.resources import (
    Account,
    Authorization,
    Challenge,
    Directory,
    Order,
    Status,
    Urls,
    timestamp,
)

URLS = Urls("https://ca.example:8001/cas")
NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.timezone.utc)


def test_directory_as_certbot_reads_it() -> None:
    document = Directory(URLS, external_account_required=True).to_json()

    directory = messages.Directory.from_json(document)

    assert directory["newAccount"] == "https://ca.example:8001/cas/acme/new-account"
    assert directory.meta.external_account_required is True
    assert document["renewalInfo"] == "https://ca.example:8001/cas/renewal-info"
    assert {document[name] for name in ("newNonce", "newOrder", "revokeCert", "keyChange")} == {
        URLS.new_nonce, URLS.new_order, URLS.revoke_cert, URLS.key_change,
    }  # fmt: skip


def test_account_as_certbot_reads_it() -> None:
    document = Account(Status.VALID, URLS.account_orders(7), ("mailto:ops@svc.test",)).to_json()

    account = messages.Registration.from_json(document)

    assert account.status == "valid"
    assert account.contact == ("mailto:ops@svc.test",)
    assert document["orders"] == "https://ca.example:8001/cas/acme/orders/7"


def test_order_as_certbot_reads_it() -> None:
    order = Order(
        Status.VALID,
        NOW,
        (Identifier.dns("a.example"), Identifier.ip("10.0.0.7")),
        [URLS.authorization(1)],
        URLS.finalize(3),
        certificate=URLS.certificate(3),
        replaces="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
    )

    document = order.to_json()
    parsed = messages.Order.from_json(document)

    assert parsed.status == messages.STATUS_VALID
    assert [identifier.value for identifier in parsed.identifiers] == ["a.example", "10.0.0.7"]
    assert document["certificate"].endswith("/certificate/3")
    assert document["expires"] == "2026-11-27T12:00:00Z"
    assert "error" not in document and "notBefore" not in document


def test_a_failed_order_carries_its_error() -> None:
    order = Order(Status.INVALID, NOW, (Identifier.dns("a.example"),), [], URLS.finalize(3),
                  error=IncorrectResponse("wrong answer"))  # fmt: skip
    assert order.to_json()["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse"


def test_wildcard_authorization_names_the_base_domain() -> None:
    challenge = Challenge("dns-01", URLS.challenge(9), new_token(), Status.VALID, validated=NOW)
    authorization = Authorization(Identifier.dns("*.b.example"), Status.VALID, NOW, [challenge])

    document = authorization.to_json()
    parsed = messages.Authorization.from_json(document)

    assert parsed.identifier.value == "b.example"
    assert parsed.wildcard is True
    assert parsed.challenges[0].chall.typ == "dns-01"
    assert document["challenges"][0]["validated"] == timestamp(NOW)


def test_timestamps_are_utc_with_z() -> None:
    eastern = datetime.timezone(datetime.timedelta(hours=-5))
    assert timestamp(datetime.datetime(2026, 1, 1, 7, tzinfo=eastern)) == "2026-01-01T12:00:00Z"


@pytest.mark.parametrize(
    ("kid", "expected"),
    [
        ("https://ca.example:8001/cas/acme/account/42", 42),
        ("https://ca.example:8001/cas/acme/account/042", None),
        ("https://ca.example:8001/cas/acme/account/", None),
        ("https://ca.example:8001/cas/acme/account/4x", None),
        ("https://ca.example:8001/cas/acme/account/٤", None),
        ("https://other.example/cas/acme/account/42", None),
        ("https://ca.example:8001/cas/acme/account/" + "9" * 20, None),
    ],
)
def test_an_account_url_names_its_id(kid: str, expected: int | None) -> None:
    assert URLS.account_id(kid) == expected
