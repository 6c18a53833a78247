"""Account keys: Ed25519 as RFC 8037 writes it, identity by thumbprint."""

from __future__ import annotations

import json

import pytest
from josepy.jwk import JWK

from caucase.acme import keys, problems
from tests.support.acme_jws import account_key


def test_rfc_8037_ed25519_thumbprint() -> None:
    """RFC 8037 A.3: the thumbprint of the example public key."""
    jwk = keys.load_account_key(
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    )
    assert keys.thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "OKP", "crv": "X25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "oct", "k": "AAAA"},
    ],
)
def test_unusable_keys_are_bad_public_keys(jwk: dict[str, str]) -> None:
    with pytest.raises(problems.BadPublicKey):
        keys.load_account_key(jwk)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES384", "EdDSA"])
def test_same_key_whatever_the_json_formatting(alg: str) -> None:
    key = account_key(alg)[0].public_key()
    reformatted = json.loads(json.dumps(dict(reversed(list(key.to_json().items()))), indent=2))

    assert keys.same_key(key, keys.load_account_key(reformatted))
    assert not keys.same_key(key, account_key(alg)[0].public_key())


def test_the_key_id_matches_caucases_for_the_same_key() -> None:
    from caucase.crypto import keys as crypto_keys

    key: JWK = account_key("ES256")[0]
    account_public_key = keys.public_key_of(key).public_key()
    assert keys.key_id(key.public_key()) == crypto_keys.key_id(account_public_key)
