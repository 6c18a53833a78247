"""External Account Binding: certbot's binding verifies; other keys, MACs and URLs do not."""

from __future__ import annotations

import json

import pytest
from acme import messages
from josepy import b64, jwa
from josepy.jwk import JWK, JWKOct

from caucase.acme import problems
from caucase.acme.eab import Credential, decode_hmac_key, parse_binding
from tests.support.acme_jws import account_key, sign_raw

NEW_ACCOUNT = "https://ca.example:8001/cas/acme/new-account"
DIRECTORY = messages.Directory({"newAccount": NEW_ACCOUNT})


@pytest.fixture(scope="module")
def key() -> JWK:
    return account_key("ES256")[0]


def certbot_binding(key: JWK, credential: Credential, alg: str = "HS256") -> dict[str, object]:
    return messages.ExternalAccountBinding.from_data(
        key.public_key(), credential.kid, credential.encoded_key, DIRECTORY, alg
    )


def test_credential_line_is_kid_then_base64url_key() -> None:
    credential = Credential.generate()

    kid, encoded = credential.line().split(" ")

    assert kid == credential.kid and ":" not in kid
    assert decode_hmac_key(encoded) == credential.hmac_key
    assert len(credential.hmac_key) == 32


def test_no_credential_reads_as_a_command_line_option() -> None:
    # certbot's --eab-kid and --eab-hmac-key refuse a value starting with "-". Without the
    # rule, about one credential in 32 has one: 2,000 of them would all but surely hold one.
    credentials = [Credential.generate() for _ in range(2000)]

    assert not [c for c in credentials if c.kid.startswith("-")]
    assert not [c for c in credentials if c.encoded_key.startswith("-")]


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_certbots_binding_verifies(key: JWK, alg: str) -> None:
    credential = Credential.generate()

    binding = parse_binding(
        certbot_binding(key, credential, alg), url=NEW_ACCOUNT, account_key=key.public_key()
    )
    binding.verify(credential.hmac_key)

    assert binding.kid == credential.kid


def test_the_bound_key_is_compared_by_content_not_bytes(key: JWK) -> None:
    credential = Credential.generate()
    reordered = dict(reversed(list(key.public_key().to_json().items())))
    payload = json.dumps(reordered, indent=3).encode()
    protected = {"alg": "HS256", "kid": credential.kid, "url": NEW_ACCOUNT}
    document = sign_raw(protected, payload, JWKOct(key=credential.hmac_key), jwa.HS256)

    parse_binding(document, url=NEW_ACCOUNT, account_key=key.public_key()).verify(
        credential.hmac_key
    )


def test_another_mac_key_is_unauthorized(key: JWK) -> None:
    binding = parse_binding(
        certbot_binding(key, Credential.generate()), url=NEW_ACCOUNT, account_key=key.public_key()
    )

    with pytest.raises(problems.Unauthorized):
        binding.verify(Credential.generate().hmac_key)


def test_a_binding_of_another_key_is_unauthorized(key: JWK) -> None:
    other = account_key("ES256")[0]

    with pytest.raises(problems.Unauthorized, match="another key"):
        parse_binding(
            certbot_binding(other, Credential.generate()),
            url=NEW_ACCOUNT,
            account_key=key.public_key(),
        )


def test_a_binding_for_another_url_is_unauthorized(key: JWK) -> None:
    with pytest.raises(problems.Unauthorized, match="url"):
        parse_binding(
            certbot_binding(key, Credential.generate()),
            url=NEW_ACCOUNT + "2",
            account_key=key.public_key(),
        )


@pytest.mark.parametrize(
    ("protected", "match"),
    [
        ({"alg": "RS256", "kid": "k", "url": NEW_ACCOUNT}, "MAC"),
        ({"alg": "none", "kid": "k", "url": NEW_ACCOUNT}, "MAC"),
        ({"alg": "HS256", "url": NEW_ACCOUNT}, "kid"),
        ({"alg": "HS256", "kid": "", "url": NEW_ACCOUNT}, "kid"),
        ({"alg": "HS256", "kid": "k", "url": NEW_ACCOUNT, "nonce": "abc"}, "nonce"),
    ],
)
def test_malformed_binding_headers(key: JWK, protected: dict[str, object], match: str) -> None:
    payload = json.dumps(key.public_key().to_json()).encode()
    document = sign_raw(protected, payload, JWKOct(key=b"k" * 32), jwa.HS256)

    with pytest.raises(problems.Malformed, match=match):
        parse_binding(document, url=NEW_ACCOUNT, account_key=key.public_key())


@pytest.mark.parametrize("document", [None, "jws", [], {"protected": "e30"}])
def test_a_binding_that_is_no_jws_is_malformed(key: JWK, document: object) -> None:
    with pytest.raises(problems.Malformed):
        parse_binding(document, url=NEW_ACCOUNT, account_key=key.public_key())


def test_a_binding_payload_that_is_no_key_is_a_bad_public_key(key: JWK) -> None:
    protected = {"alg": "HS256", "kid": "k", "url": NEW_ACCOUNT}
    document = sign_raw(
        protected, b'{"kty": "oct", "k": "AAAA"}', JWKOct(key=b"k" * 32), jwa.HS256
    )

    with pytest.raises(problems.BadPublicKey):
        parse_binding(document, url=NEW_ACCOUNT, account_key=key.public_key())


def test_a_tampered_payload_fails_the_mac(key: JWK) -> None:
    credential = Credential.generate()
    document = certbot_binding(key, credential)
    protected = json.loads(b64.b64decode(document["protected"]))
    tampered = sign_raw(
        protected,
        json.dumps(key.public_key().to_json()).encode(),
        JWKOct(key=b"x" * 32),
        jwa.HS256,
    )

    binding = parse_binding(tampered, url=NEW_ACCOUNT, account_key=key.public_key())
    with pytest.raises(problems.Unauthorized):
        binding.verify(credential.hmac_key)
