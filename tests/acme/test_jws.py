"""Verification of ACME requests: what certbot's library signs passes, nothing else does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from josepy import b64, jwa
from josepy.jwk import JWK

from caucase.acme import problems
from caucase.acme.jws import MAX_REQUEST_BYTES, KeySource, verify_request
from caucase.acme.keys import thumbprint
from caucase.acme.nonces import SignedNonces
from tests.support.acme_jws import (
    ALGORITHMS,
    account_key,
    encode,
    memory_nonces,
    protected_of,
    sign,
    sign_raw,
    with_protected,
)

URL = "https://ca.example:8001/cas/acme/new-order"
ACCOUNT_URL = "https://ca.example:8001/cas/acme/account/1"


@pytest.fixture(scope="module")
def keys_by_alg() -> dict[str, tuple[JWK, jwa.JWASignature]]:
    return {alg: account_key(alg) for alg in ALGORITHMS}


@pytest.fixture
def nonces() -> SignedNonces:
    return memory_nonces()


@pytest.fixture
def rsa_key(keys_by_alg: dict[str, tuple[JWK, jwa.JWASignature]]) -> tuple[JWK, jwa.JWASignature]:
    return keys_by_alg["RS256"]


def lookup_for(accounts: dict[str, JWK]) -> Any:
    def lookup(kid: str) -> JWK:
        if kid not in accounts:
            raise problems.AccountDoesNotExist("no such account")
        return accounts[kid]

    return lookup


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_each_algorithm_is_accepted_with_its_jwk(
    alg: str, keys_by_alg: dict[str, tuple[JWK, jwa.JWASignature]], nonces: SignedNonces
) -> None:
    key, algorithm = keys_by_alg[alg]
    body = encode(sign({"identifiers": []}, key, algorithm, url=URL, nonce=nonces.issue()))

    request = verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)

    assert request.payload == {"identifiers": []}
    assert request.kid is None
    assert thumbprint(request.jwk) == thumbprint(key.public_key())


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_kid_requests_use_the_account_key(
    alg: str, keys_by_alg: dict[str, tuple[JWK, jwa.JWASignature]], nonces: SignedNonces
) -> None:
    key, algorithm = keys_by_alg[alg]
    body = encode(sign(None, key, algorithm, url=URL, nonce=nonces.issue(), kid=ACCOUNT_URL))

    request = verify_request(
        body, url=URL, nonces=nonces, lookup=lookup_for({ACCOUNT_URL: key.public_key()})
    )

    assert request.kid == ACCOUNT_URL
    assert request.payload is None  # POST-as-GET


def test_a_nonce_is_good_once(rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces) -> None:
    key, alg = rsa_key
    body = encode(sign({}, key, alg, url=URL, nonce=nonces.issue()))
    verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)

    with pytest.raises(problems.BadNonce):
        verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)


def test_an_unknown_nonce_is_bad(
    rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    body = encode(sign({}, key, alg, url=URL, nonce=memory_nonces().issue()))

    with pytest.raises(problems.BadNonce):
        verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)


def test_a_forged_request_does_not_burn_the_nonce(
    rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    nonce = nonces.issue()
    document = sign({"a": 1}, key, alg, url=URL, nonce=nonce)
    forged = dict(document, payload=b64.b64encode(b'{"a":2}').decode())

    with pytest.raises(problems.Malformed, match="signature"):
        verify_request(encode(forged), url=URL, nonces=nonces, source=KeySource.JWK)
    verify_request(encode(document), url=URL, nonces=nonces, source=KeySource.JWK)


def test_the_url_header_must_be_the_request_url(
    rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    body = encode(sign({}, key, alg, url=URL + "x", nonce=nonces.issue()))

    with pytest.raises(problems.Unauthorized):
        verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)


def test_kid_of_another_account_fails_the_signature(
    keys_by_alg: dict[str, tuple[JWK, jwa.JWASignature]], nonces: SignedNonces
) -> None:
    mine, alg = keys_by_alg["ES256"]
    theirs, _ = account_key("ES256")
    body = encode(sign({}, mine, alg, url=URL, nonce=nonces.issue(), kid=ACCOUNT_URL))

    with pytest.raises(problems.Malformed, match="signature"):
        verify_request(
            body, url=URL, nonces=nonces, lookup=lookup_for({ACCOUNT_URL: theirs.public_key()})
        )


def test_an_unknown_kid_is_refused_by_the_lookup(
    rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    body = encode(sign({}, key, alg, url=URL, nonce=nonces.issue(), kid=ACCOUNT_URL))

    with pytest.raises(problems.AccountDoesNotExist):
        verify_request(body, url=URL, nonces=nonces, lookup=lookup_for({}))


@pytest.mark.parametrize("alg_name", ["none", "HS256", "RS512", "PS256", "ES512", 7, None])
def test_other_algorithms_are_refused_with_the_list(
    alg_name: object, rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    protected = {
        "alg": alg_name,
        "nonce": nonces.issue(),
        "url": URL,
        "jwk": key.public_key().to_json(),
    }
    body = encode(sign_raw(protected, b"{}", key, alg))

    with pytest.raises(problems.BadSignatureAlgorithm) as caught:
        verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)
    assert caught.value.to_json()["algorithms"] == list(ALGORITHMS)


def test_an_algorithm_for_another_key_type_is_refused(
    keys_by_alg: dict[str, tuple[JWK, jwa.JWASignature]], nonces: SignedNonces
) -> None:
    key, _ = keys_by_alg["ES256"]
    protected = {
        "alg": "ES384",
        "nonce": nonces.issue(),
        "url": URL,
        "jwk": key.public_key().to_json(),
    }
    body = encode(sign_raw(protected, b"{}", key, jwa.ES256))

    with pytest.raises(problems.BadSignatureAlgorithm):
        verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)


def _header_cases(
    key: JWK, nonce: str
) -> dict[str, tuple[dict[str, Any], type[problems.AcmeProblem]]]:
    jwk = key.public_key().to_json()
    full = {"alg": "RS256", "nonce": nonce, "url": URL}
    return {
        "no url": ({"alg": "RS256", "nonce": nonce, "jwk": jwk}, problems.Malformed),
        "no nonce": ({"alg": "RS256", "url": URL, "jwk": jwk}, problems.Malformed),
        "no key": (full, problems.Malformed),
        "jwk and kid": ({**full, "jwk": jwk, "kid": ACCOUNT_URL}, problems.Malformed),
        "crit": ({**full, "jwk": jwk, "crit": ["b64"]}, problems.Malformed),
        "private jwk": ({**full, "jwk": key.to_json()}, problems.BadPublicKey),
        "jwk not an object": ({**full, "jwk": "key"}, problems.BadPublicKey),
        "jwk of unknown type": ({**full, "jwk": {"kty": "XYZ"}}, problems.BadPublicKey),
        "jwk without modulus": (
            {**full, "jwk": {"kty": "RSA", "e": "AQAB"}},
            problems.BadPublicKey,
        ),
        "empty url": ({**full, "url": "", "jwk": jwk}, problems.Malformed),
        "nonce not a string": ({**full, "nonce": 5, "jwk": jwk}, problems.Malformed),
    }


@pytest.mark.parametrize(
    "case",
    ["no url", "no nonce", "no key", "jwk and kid", "crit", "private jwk", "jwk not an object",
     "jwk of unknown type", "jwk without modulus", "empty url", "nonce not a string"],
)  # fmt: skip
def test_hostile_protected_headers(
    case: str, rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    nonce = nonces.issue()
    protected, expected = _header_cases(key, nonce)[case]
    body = encode(sign_raw(protected, b"{}", key, alg))

    with pytest.raises(expected):
        verify_request(
            body, url=URL, nonces=nonces, source=KeySource.EITHER, lookup=lookup_for({})
        )
    assert nonces.consume(nonce), "a refused request must leave its nonce usable"


def test_a_weak_rsa_key_is_refused(nonces: SignedNonces) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from josepy.jwk import JWKRSA

    weak = JWKRSA(key=rsa.generate_private_key(65537, 1024))
    body = encode(sign({}, weak, jwa.RS256, url=URL, nonce=nonces.issue()))

    with pytest.raises(problems.BadPublicKey, match="2048"):
        verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)


def test_jwk_where_an_account_is_required(
    rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    body = encode(sign({}, key, alg, url=URL, nonce=nonces.issue()))

    with pytest.raises(problems.Malformed, match="kid"):
        verify_request(body, url=URL, nonces=nonces, source=KeySource.KID, lookup=lookup_for({}))


def test_kid_where_a_jwk_is_required(
    rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    body = encode(sign({}, key, alg, url=URL, nonce=nonces.issue(), kid=ACCOUNT_URL))

    with pytest.raises(problems.Malformed, match="jwk"):
        verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)


def _structure_cases(document: dict[str, Any]) -> dict[str, bytes]:
    protected = protected_of(document)
    return {
        "not JSON": b"{not json",
        "not an object": b"[1, 2]",
        "deeply nested": b"[" * 60_000,
        "no signature": encode({k: v for k, v in document.items() if k != "signature"}),
        "unprotected header": encode({**document, "header": {"kid": ACCOUNT_URL}}),
        "general serialization": encode(
            {
                "payload": document["payload"],
                "signatures": [
                    {"protected": document["protected"], "signature": document["signature"]}
                ],
            }
        ),
        "signature not base64url": encode({**document, "signature": document["signature"] + "!"}),
        "padded payload": encode({**document, "payload": document["payload"] + "=="}),
        "protected not JSON": encode({**document, "protected": b64.b64encode(b"{x").decode()}),
        "protected an array": encode({**document, "protected": b64.b64encode(b"[]").decode()}),
        "duplicate member": encode(
            {
                **document,
                "protected": b64.b64encode(
                    b'{"alg":"RS256","alg":"none",' + json.dumps(protected).encode()[1:]
                ).decode(),
            }
        ),
        "payload not an object": encode(with_protected(document, protected) | {"payload": "WzFd"}),
        "payload a number": encode({**document, "payload": 5}),
    }


@pytest.mark.parametrize(
    "case",
    ["not JSON", "not an object", "deeply nested", "no signature", "unprotected header",
     "general serialization", "signature not base64url", "padded payload", "protected not JSON",
     "protected an array", "duplicate member", "payload not an object", "payload a number"],
)  # fmt: skip
def test_malformed_bodies(
    case: str, rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    document = sign({}, key, alg, url=URL, nonce=nonces.issue())

    with pytest.raises(problems.Malformed):
        verify_request(
            _structure_cases(document)[case], url=URL, nonces=nonces, source=KeySource.JWK
        )


def test_a_payload_that_is_not_an_object_is_malformed_once_signed(
    rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    key, alg = rsa_key
    body = encode(sign(b"[1]", key, alg, url=URL, nonce=nonces.issue()))

    with pytest.raises(problems.Malformed, match="payload"):
        verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK)


def test_an_oversized_body_is_refused_before_parsing(nonces: SignedNonces) -> None:
    with pytest.raises(problems.PayloadTooLarge) as caught:
        verify_request(b" " * (MAX_REQUEST_BYTES + 1), url=URL, nonces=nonces)
    assert caught.value.status == 413


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
def test_arbitrary_bytes_only_ever_raise_a_problem(body: bytes) -> None:
    with pytest.raises(problems.AcmeProblem):
        verify_request(body, url=URL, nonces=memory_nonces(), source=KeySource.EITHER)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["alg", "nonce", "url", "jwk", "kid", "crit", "x5c", "typ", "b64"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=20)
        | st.lists(st.text(max_size=5), max_size=3)
        | st.dictionaries(st.sampled_from(["kty", "n", "e", "crv", "x"]), st.text(max_size=8)),
    )
)  # fmt: skip
def test_arbitrary_protected_headers_only_ever_raise_a_problem(protected: dict[str, Any]) -> None:
    document = {
        "protected": b64.b64encode(json.dumps(protected).encode()).decode(),
        "payload": "e30",
        "signature": "AAAA",
    }
    with pytest.raises(problems.AcmeProblem):
        verify_request(encode(document), url=URL, nonces=memory_nonces(), source=KeySource.EITHER,
                       lookup=lookup_for({}))  # fmt: skip


def test_a_request_can_leave_its_nonce_for_the_caller_to_spend(
    rsa_key: tuple[JWK, jwa.JWASignature], nonces: SignedNonces
) -> None:
    """The handlers that change something spend the nonce in their own transaction."""
    key, alg = rsa_key
    nonce = nonces.issue()
    body = encode(sign({}, key, alg, url=URL, nonce=nonce))

    request = verify_request(body, url=URL, nonces=nonces, source=KeySource.JWK, spend=False)

    assert request.nonce == nonce
    assert nonces.consume(nonce) and not nonces.consume(nonce)
    forged = encode(sign({}, key, alg, url=URL, nonce=memory_nonces().issue()))
    with pytest.raises(problems.BadNonce):
        verify_request(forged, url=URL, nonces=nonces, source=KeySource.JWK, spend=False)
