"""Request payloads: what clients send is typed and bounded, the rest refused."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caucase.acme import messages, problems
from caucase.acme.identifiers import Identifier
from caucase.acme.jws import KeySource, verify_request
from caucase.acme.keys import thumbprint
from caucase.acme.renewal_info import CertID
from tests.support.acme_jws import account_key, encode, memory_nonces, sign, sign_raw

KEY_CHANGE_URL = "https://ca.example/cas/acme/key-change"
ACCOUNT_URL = "https://ca.example/cas/acme/account/1"


def test_new_account_with_everything() -> None:
    request = messages.parse_new_account(
        {"contact": ["mailto:ops@svc.test"], "termsOfServiceAgreed": True,
         "externalAccountBinding": {"protected": "x"}}
    )  # fmt: skip
    assert request.contact == ("mailto:ops@svc.test",)
    assert request.terms_of_service_agreed is True
    assert not request.only_return_existing
    assert request.external_account_binding == {"protected": "x"}


def test_only_return_existing() -> None:
    assert messages.parse_new_account({"onlyReturnExisting": True}).only_return_existing


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (None, problems.Malformed),
        ({"contact": "mailto:a@b"}, problems.Malformed),
        ({"contact": ["mailto:a@b"] * 5}, problems.Malformed),
        ({"contact": ["tel:+33123"]}, problems.UnsupportedContact),
        ({"contact": ["mailto:nobody"]}, problems.InvalidContact),
        ({"contact": ["mailto:a@b,c@d"]}, problems.InvalidContact),
        ({"contact": ["mailto:" + "a" * 300 + "@b"]}, problems.InvalidContact),
        ({"termsOfServiceAgreed": "yes"}, problems.Malformed),
        ({"externalAccountBinding": "jws"}, problems.Malformed),
    ],
)
def test_bad_new_accounts(payload: dict[str, Any] | None, problem: type[Exception]) -> None:
    with pytest.raises(problem):
        messages.parse_new_account(payload)


def test_account_update_and_deactivation() -> None:
    assert messages.parse_account_update(None) == messages.AccountUpdate(None, False)
    assert messages.parse_account_update({"contact": []}).contact == ()
    assert messages.parse_account_update({"status": "deactivated"}).deactivate
    with pytest.raises(problems.Malformed):
        messages.parse_account_update({"status": "valid"})


def test_new_order() -> None:
    order = messages.parse_new_order(
        {"identifiers": [{"type": "dns", "value": "A.svc.test"}],
         "notAfter": "2027-01-01T00:00:00Z", "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"}
    )  # fmt: skip
    assert order.identifiers == (Identifier.dns("a.svc.test"),)
    assert order.not_after == datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc)
    assert order.not_before is None
    assert order.replaces == CertID.parse("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"identifiers": []},
        {"identifiers": [{"type": "dns", "value": "a.test"}], "notBefore": "tomorrow"},
        {"identifiers": [{"type": "dns", "value": "a.test"}], "notBefore": "2027-01-01T00:00:00"},
        {"identifiers": [{"type": "dns", "value": "a.test"}], "replaces": 5},
        {"identifiers": [{"type": "dns", "value": "a.test"}], "replaces": "nodot"},
        {"identifiers": [{"type": "dns", "value": f"n{i}.test"} for i in range(101)]},
    ],
)
def test_bad_new_orders(payload: dict[str, Any] | None) -> None:
    with pytest.raises(problems.AcmeProblem):
        messages.parse_new_order(payload)


def _certificate_der() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(7).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    der = certificate.public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(der).rstrip(b"=").decode()


def test_revocation_reasons() -> None:
    der = _certificate_der()
    assert messages.parse_revocation({"certificate": der}).reason == x509.ReasonFlags.unspecified
    keyed = messages.parse_revocation({"certificate": der, "reason": 1})
    assert keyed.reason == x509.ReasonFlags.key_compromise
    assert keyed.certificate.serial_number == 7
    for bad in (2, 6, 7, 8, 10, -1, "1", True):
        with pytest.raises(problems.BadRevocationReason):
            messages.parse_revocation({"certificate": der, "reason": bad})


@pytest.mark.parametrize("certificate", [None, 5, "!!", "AAAA", "A" * 30_000])
def test_bad_revocation_certificates(certificate: object) -> None:
    with pytest.raises(problems.Malformed):
        messages.parse_revocation({"certificate": certificate})


class KeyChange:
    """An outer request signed by the account, carrying an inner JWS by the new key."""

    def __init__(self) -> None:
        self.old, self.old_alg = account_key("ES256")
        self.new, self.new_alg = account_key("ES384")
        self.nonces = memory_nonces()

    def inner(self, **overrides: Any) -> dict[str, Any]:
        protected = {"alg": "ES384", "jwk": self.new.public_key().to_json(), "url": KEY_CHANGE_URL}
        protected.update(overrides.pop("protected", {}))
        payload = {"account": ACCOUNT_URL, "oldKey": self.old.public_key().to_json(), **overrides}
        return sign_raw(protected, json.dumps(payload).encode(), self.new, self.new_alg)

    def verify(self, inner: dict[str, Any]) -> Any:
        body = encode(sign(inner, self.old, self.old_alg, url=KEY_CHANGE_URL,
                           nonce=self.nonces.issue(), kid=ACCOUNT_URL))  # fmt: skip
        request = verify_request(
            body, url=KEY_CHANGE_URL, nonces=self.nonces, source=KeySource.KID,
            lookup=lambda kid: self.old.public_key(),
        )  # fmt: skip
        return messages.parse_key_change(request, self.old.public_key())


def test_key_change_returns_the_new_key() -> None:
    change = KeyChange()
    new_key = change.verify(change.inner())
    assert thumbprint(new_key) == thumbprint(change.new.public_key())


@pytest.mark.parametrize(
    "overrides",
    [
        {"account": "https://ca.example/cas/acme/account/2"},
        {"oldKey": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}},
        {"protected": {"url": "https://ca.example/other"}},
        {"protected": {"kid": ACCOUNT_URL}},
        {"protected": {"alg": "ES256"}},
    ],
)
def test_bad_key_changes(overrides: dict[str, Any]) -> None:
    change = KeyChange()
    with pytest.raises(problems.AcmeProblem):
        change.verify(change.inner(**overrides))


def test_key_change_inner_signature_must_be_the_new_keys() -> None:
    change = KeyChange()
    inner = change.inner()
    forged = dict(inner, signature=change.inner(account="x")["signature"])
    with pytest.raises(problems.Malformed, match="signature"):
        change.verify(forged)
