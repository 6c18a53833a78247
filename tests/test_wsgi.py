"""The WSGI application: routes, statuses, headers, authentication, bodies, HAL.

In-process calls with real environs, real CertificateAuthority objects on SQLite files in
tmp_path and a FakeClock."""

from __future__ import annotations

import email.utils
import json
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.crypto import x509util
from tests.conftest import FakeClock
from tests.support.ca_helpers import generate_keys
from tests.support.wsgi_support import (
    Deployment,
    ExplodingInput,
    call,
    deploy,
    foreign_certificate,
    make_csr,
)

JSON = "application/json"
PKCS10 = "application/pkcs10"

# Captured from the reference caucased 0.9.17 (GET /cas over HTTP, Host 127.0.0.1:28640).
REFERENCE_CAS_HAL = (
    '{"_links": {"self": {"href": "/cas"}, "home": {"href": "/"}, '
    '"getCertificateRevocationListList": {"title": "Retrieve latest certificate revocation list'
    ' for all valid authorities.", "href": "/cas/crl"}, "getCertificateRevocationList": '
    '{"title": "Retrieve latest certificate revocation list for given decimal representation '
    'of the authority identifier.", "templated": true, "href": "/cas/crl/{+authority_key_id}"},'
    ' "getPendingCertificateRequestList": {"title": "List pending certificate signing '
    'requests.", "href": "https://127.0.0.1:28641/cas/csr"}, "getCertificateSigningRequest": '
    '{"title": "Retrieve a pending certificate signing request.", "templated": true, "href": '
    '"/cas/csr/{+csr_id}"}, "getCertificate": {"title": "Retrieve a signed certificate.", '
    '"templated": true, "href": "/cas/crt/{+csr_id}"}, "getCACertificate": {"title": '
    '"Retrieve current CA certificate.", "href": "/cas/crt/ca.crt.pem"}, '
    '"getCACertificateChain": {"title": "Retrieve current CA certificate trust chain.", '
    '"href": "/cas/crt/ca.crt.json"}}, "_actions": {"createCertificateSigningRequest": '
    '{"title": "Request a new certificate signature.", "href": "/cas/csr", "method": "PUT"}, '
    '"deletePendingCertificateRequest": {"title": "Reject a pending certificate signing '
    'request.", "templated": true, "href": "https://127.0.0.1:28641/cas/csr/{+csr_id}", '
    '"method": "DELETE"}, "createCertificate": {"title": "Accept pending certificate signing '
    'request", "templated": true, "href": "https://127.0.0.1:28641/cas/crt/{+crt_id}", '
    '"method": "PUT"}, "revokeCertificate": {"title": "Revoke a certificate", "href": '
    '"/cas/crt/revoke", "method": "PUT"}, "renewCertificate": {"title": "Renew a certificate",'
    ' "href": "/cas/crt/renew", "method": "PUT"}}}'
)


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    """Leaf keys made once: request keys need not be fresh per test."""
    return generate_keys(5)


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock, keys: list[rsa.RSAPrivateKey]) -> Deployment:
    return deploy(tmp_path, clock, keys[0], max_csr=3)


def submit(dep: Deployment, csr: bytes, authority: str = "cas") -> int:
    reply = call(dep.app, "PUT", f"/{authority}/csr", csr, content_type=PKCS10)
    assert reply.status == 201, reply.body
    return int(reply.header("Location") or "")


def service_crt(dep: Deployment, key: rsa.RSAPrivateKey) -> bytes:
    csr_id = dep.cas.append_csr(make_csr(key, "service"))
    return dep.cas.create_certificate(csr_id)


def user(dep: Deployment) -> dict[str, object]:
    return {"https": True, "cert": dep.user_crt}


# Common headers and HAL


def test_every_response_has_date_and_content_length(dep: Deployment) -> None:
    for method, path in (
        ("GET", "/"),
        ("GET", "/nowhere/x"),
        ("POST", "/cas"),
        ("GET", "/cas/csr"),
    ):
        reply = call(dep.app, method, path)
        assert reply.header("Date") == email.utils.formatdate(dep.clock().timestamp(), usegmt=True)
        assert reply.header("Content-Length") == str(len(reply.body))


def test_root_hal_is_the_reference_document_then_the_https_ca_and_health(
    dep: Deployment,
) -> None:
    reply = call(dep.app, "GET", "/")
    assert (reply.status, reply.header("Content-Type")) == (200, "application/hal+json")
    assert reply.body.startswith(
        b'{"_links": {"self": {"href": "/"}, "getCASHAL": {"title": "cas", "href": "/cas"}, '
        b'"getCAUHAL": {"title": "cau", "href": "/cau"}, '
    )
    assert list(reply.json()["_links"]) == ["self", "getCASHAL", "getCAUHAL",
                                            "getHTTPSCACertificate", "getHealth"]  # fmt: skip
    assert reply.json()["_links"]["getHealth"]["href"] == "/health"
    assert reply.json()["_links"]["getHTTPSCACertificate"]["href"] == "/https-ca.crt.pem"
    assert call(dep.app, "GET", "/extra").status == 404


def test_authority_hal_over_http_starts_with_the_reference_document(dep: Deployment) -> None:
    """The reference's links and actions come first, unchanged and in order; ours follow
    (the ACME directory an HTTPS link: ACME is served over HTTPS only)."""
    reply = call(dep.app, "GET", "/cas/", headers={"Host": "127.0.0.1:28640"})
    assert reply.status == 200
    ours, reference = reply.json(), json.loads(REFERENCE_CAS_HAL)
    for section in ("_links", "_actions"):
        shared = list(ours[section].items())[: len(reference[section])]
        assert shared == list(reference[section].items())
    assert sorted(list(ours["_links"])[len(reference["_links"]) :]) == [
        "getACMEDirectory",
        "getCertificateInventory",
        "getRenewalInfo",
        "getRenewalInfoExplanation",
    ]
    assert list(ours["_actions"])[len(reference["_actions"]) :] == ["renewEarly"]
    acme = ours["_links"]["getACMEDirectory"]
    assert acme["href"] == "https://127.0.0.1:28641/cas/acme/directory"
    inventory = ours["_links"]["getCertificateInventory"]
    assert inventory["templated"] is True
    assert inventory["href"] == (
        "https://127.0.0.1:28641/cas/inventory"
        "{?limit,cursor,expiring_within,subject,status,serial}"
    )


def test_cau_hal_offers_the_acme_credential_routes_over_https(dep: Deployment) -> None:
    reply = call(dep.app, "GET", "/cau", headers={"Host": "127.0.0.1:28640"})
    links, actions = reply.json()["_links"], reply.json()["_actions"]
    assert links["getACMEExternalAccountBindingList"]["href"] == (
        "https://127.0.0.1:28641/cau/acme/eab"
    )
    assert actions["createACMEExternalAccountBinding"]["method"] == "PUT"
    assert actions["revokeACMEExternalAccountBinding"]["href"] == (
        "https://127.0.0.1:28641/cau/acme/eab/revoke"
    )
    assert "getACMEDirectory" not in links


def test_authority_hal_over_https_is_relative_and_follows_script_name(dep: Deployment) -> None:
    reply = call(dep.app, "GET", "/cau", https=True, environ={"SCRIPT_NAME": "/x"})
    links, actions = reply.json()["_links"], reply.json()["_actions"]
    assert links["self"] == {"href": "/x/cau"}
    assert links["home"] == {"href": "/x"}
    assert links["getPendingCertificateRequestList"]["href"] == "/x/cau/csr"
    assert actions["createCertificate"] == {
        "title": "Accept pending certificate signing request",
        "templated": True,
        "href": "/x/cau/crt/{+crt_id}",
        "method": "PUT",
    }


@pytest.mark.parametrize(
    ("host", "https_netloc"),
    [
        ("ca.example.com", "ca.example.com"),
        ("CA.Example:80", "ca.example"),
        ("[::1]:5000", "[::1]:5001"),
    ],
)
def test_absolute_hrefs_derive_the_https_port(
    dep: Deployment, host: str, https_netloc: str
) -> None:
    reply = call(dep.app, "GET", "/cas", headers={"Host": host})
    href = reply.json()["_links"]["getPendingCertificateRequestList"]["href"]
    assert href == f"https://{https_netloc}/cas/csr"


def test_host_with_non_numeric_port_is_a_400(dep: Deployment) -> None:
    assert call(dep.app, "GET", "/cas", headers={"Host": "example:abc"}).status == 400


# Routing: 405, 404, OPTIONS


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/foo/bar", "GET, OPTIONS"),
        ("HEAD", "/", "GET, OPTIONS"),
        ("PUT", "/cau", "GET, OPTIONS"),
        ("DELETE", "/cas/crl", "GET, OPTIONS"),
        ("POST", "/cau/crt/123", "GET, PUT, OPTIONS"),
        ("POST", "/cas/csr", "GET, PUT, DELETE, OPTIONS"),
        ("GET", "/cas/crt/renew", "PUT, OPTIONS"),
        ("GET", "/cau/crt/revoke", "PUT, OPTIONS"),
        ("PUT", "/cas/crt/ca.crt.pem", "GET, OPTIONS"),
        ("DELETE", "/cors", "GET, POST, OPTIONS"),
    ],
)
def test_unhandled_method_gives_405_with_allow(
    dep: Deployment, method: str, path: str, allow: str
) -> None:
    reply = call(dep.app, method, path)
    assert (reply.status, reply.reason) == (405, "Method Not Allowed")
    assert reply.header("Allow") == allow
    assert reply.body == repr(allow.split(", ")).encode()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/foo/bar"),
        ("GET", "/cas/crt"),
        ("PUT", "/cas/csr/123"),
        ("DELETE", "/cas/csr"),
        ("GET", "/cas/crl/1/2"),
        ("GET", "/cas/csr/1/2"),
        ("GET", "/cas/crt/ca.crt.pem/x"),
    ],
)
def test_wrong_subpath_arity_gives_empty_404(dep: Deployment, method: str, path: str) -> None:
    reply = call(dep.app, method, path)
    assert (reply.status, reply.body) == (404, b"")


def test_options_is_204_everywhere_without_cors_headers(dep: Deployment) -> None:
    for path in ("/", "/cas/csr", "/no/such/thing", "/cas/crt/1/2"):
        reply = call(dep.app, "OPTIONS", path)
        assert (reply.status, reply.body) == (204, b"")
        assert not [key for key, _ in reply.headers if key.startswith("Access-Control")]


def test_empty_segments_are_dropped(dep: Deployment) -> None:
    reply = call(dep.app, "GET", "//cas//crt/ca.crt.pem/")
    assert reply.status == 200
    assert reply.body == dep.cas.get_ca_certificate()


# Ids


@pytest.mark.parametrize("segment", ["abc", "0x10", "1.5", "\u0661\u0662x"])
def test_non_integer_id_is_400_invalid_integer(dep: Deployment, segment: str) -> None:
    for path in (f"/cas/csr/{segment}", f"/cas/crt/{segment}"):
        reply = call(dep.app, "GET", path)
        assert (reply.status, reply.body) == (400, b"b'Invalid integer'")


@pytest.mark.parametrize("segment", ["-1", str(2**63), str(2**80)])
def test_out_of_range_id_is_404(dep: Deployment, segment: str) -> None:
    assert call(dep.app, "GET", f"/cas/csr/{segment}").status == 404
    assert call(dep.app, "GET", f"/cas/crt/{segment}").status == 404
    assert call(dep.app, "DELETE", f"/cas/csr/{segment}", **user(dep)).status == 404


def test_ids_use_python_int_syntax(dep: Deployment, keys: list[rsa.RSAPrivateKey]) -> None:
    csr = make_csr(keys[1])
    csr_id = submit(dep, csr)
    digits = str(csr_id)
    for segment in (f"+{digits}", f" {digits} ", f"{digits[0]}_{digits[1:]}", f"00{digits}"):
        reply = call(dep.app, "GET", f"/cas/csr/{segment}")
        assert (reply.status, reply.body) == (200, csr)


# CSR submission and reading


def test_csr_submission_and_retrieval(dep: Deployment, keys: list[rsa.RSAPrivateKey]) -> None:
    csr = make_csr(keys[1])
    reply = call(dep.app, "PUT", "/cas/csr", csr)
    assert (reply.status, reply.reason, reply.body) == (201, "Created", b"")
    location = reply.header("Location") or ""
    assert re.fullmatch(r"[0-9]+", location)
    assert call(dep.app, "PUT", "/cas/csr", csr).header("Location") == location
    got = call(dep.app, "GET", f"/cas/csr/{location}")
    assert (got.status, got.header("Content-Type"), got.body) == (200, PKCS10, csr)
    assert call(dep.app, "GET", f"/cas/crt/{location}").status == 404


@pytest.mark.parametrize("kind", ["garbage", "bad-signature"])
def test_invalid_csr_is_400_and_not_stored(
    dep: Deployment, keys: list[rsa.RSAPrivateKey], kind: str
) -> None:
    body = b"not a csr"
    if kind == "bad-signature":
        der = bytearray(
            x509.load_pem_x509_csr(make_csr(keys[1])).public_bytes(serialization.Encoding.DER)
        )
        der[-5] ^= 0xFF
        body = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    reply = call(dep.app, "PUT", "/cas/csr", body)
    assert (reply.status, reply.body) == (400, b"b'Not a valid certificate signing request'")
    assert dep.cas.get_csr_list() == []


def test_pending_quota_gives_507(dep: Deployment, keys: list[rsa.RSAPrivateKey]) -> None:
    for number in range(3):
        submit(dep, make_csr(keys[1], f"s{number}"))
    reply = call(dep.app, "PUT", "/cas/csr", make_csr(keys[1], "one too many"))
    assert (reply.status, reply.reason) == (507, "Insufficient Storage")
    assert len(dep.cas.get_csr_list()) == 3


def test_cau_key_reuse_is_400(dep: Deployment) -> None:
    reply = call(dep.app, "PUT", "/cau/csr", make_csr(dep.user_key, "again"))
    assert reply.status == 400
    assert [csr_id for csr_id, _ in dep.cau.get_csr_list()] == []


# Authentication


def test_pending_list_needs_a_valid_user_certificate(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    csr = make_csr(keys[1])
    csr_id = submit(dep, csr)
    reply = call(dep.app, "GET", "/cas/csr", **user(dep))
    assert (reply.status, reply.header("Cache-Control")) == (200, "private")
    assert reply.header("Content-Type") == JSON
    assert reply.json() == [{"id": str(csr_id), "csr": csr.decode()}]


def test_authentication_failures_are_401_transport_with_a_reason(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    """The reference's status and header, and a body saying what to do (its body is empty;
    its clients read the status only)."""
    cas_crt = service_crt(dep, keys[1])
    not_ours = b"Client certificate not issued by this CAU"
    attempts = {
        "plain HTTP, even with a cert": (
            {"cert": dep.user_crt},
            b"Authentication needs a client certificate, over HTTPS",
        ),
        "HTTPS without cert": ({"https": True}, b"No client certificate presented"),
        "CAS certificate": ({"https": True, "cert": cas_crt}, not_ours),
        "self-signed": (
            {"https": True, "cert": foreign_certificate(keys[2], dep.clock())},
            not_ours,
        ),
        "garbage": (
            {"https": True, "cert": b"-----BEGIN CERTIFICATE-----\nxx\n"},
            b"Client certificate cannot be verified",
        ),
    }
    for label, (kwargs, reason) in attempts.items():
        reply = call(dep.app, "GET", "/cas/csr", **kwargs)  # type: ignore[arg-type]
        assert (reply.status, reply.header("WWW-Authenticate")) == (401, "transport"), label
        assert reply.body == reason and reply.header("Cache-Control") is None, label
        assert reply.header("Content-Type") is None, label


def test_expired_user_is_401(dep: Deployment) -> None:
    dep.clock.advance(days=94)
    reply = call(dep.app, "GET", "/cau/csr", **user(dep))
    assert (reply.status, reply.body) == (401, b"Client certificate expired")


def test_revoked_user_is_401_on_both_authorities(dep: Deployment) -> None:
    dep.cau.revoke_certificate(dep.user_crt)
    for authority in ("cau", "cas"):
        reply = call(dep.app, "GET", f"/{authority}/csr", **user(dep))
        assert (reply.status, reply.body) == (401, b"Client certificate revoked")


def test_delete_checks_id_then_credentials(dep: Deployment, keys: list[rsa.RSAPrivateKey]) -> None:
    csr_id = submit(dep, make_csr(keys[1]))
    assert call(dep.app, "DELETE", "/cas/csr/abc").status == 400
    assert call(dep.app, "DELETE", f"/cas/csr/{csr_id}").status == 401
    reply = call(dep.app, "DELETE", f"/cas/csr/{csr_id}", **user(dep))
    assert (reply.status, reply.header("Cache-Control")) == (204, "private")
    assert call(dep.app, "DELETE", f"/cas/csr/{csr_id}", **user(dep)).status == 404
    assert call(dep.app, "GET", f"/cas/csr/{csr_id}").status == 404


# Signing


def test_sign_pending_csr(dep: Deployment, keys: list[rsa.RSAPrivateKey]) -> None:
    csr_id = submit(dep, make_csr(keys[1]))
    assert call(dep.app, "PUT", f"/cas/crt/{csr_id}", b"").status == 401
    reply = call(dep.app, "PUT", f"/cas/crt/{csr_id}", b"", **user(dep))
    assert (reply.status, reply.header("Cache-Control"), reply.body) == (204, "private", b"")
    assert call(dep.app, "PUT", f"/cas/crt/{csr_id}", b"", **user(dep)).status == 404
    got = call(dep.app, "GET", f"/cas/crt/{csr_id}")
    assert (got.status, got.header("Content-Type")) == (200, "application/pkix-cert")
    crt = x509util.load_certificate(got.body)
    assert crt.public_key() == keys[1].public_key()


def test_sign_with_template_takes_its_subject(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    csr_id = submit(dep, make_csr(keys[1], "asked"))
    template = make_csr(keys[2], "decided")
    reply = call(dep.app, "PUT", f"/cas/crt/{csr_id}", template, content_type=PKCS10, **user(dep))
    assert reply.status == 204
    crt = x509util.load_certificate(dep.cas.get_certificate(csr_id))
    assert crt.subject.rfc4514_string() == "CN=decided"
    assert crt.public_key() == keys[1].public_key()


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"x", None, b"b'Bad Content-Type'"),
        (b"x", "application/pkcs10; charset=utf-8", b"b'Bad Content-Type'"),
        (b"garbage", PKCS10, b"Invalid template CSR"),
    ],
)
def test_bad_template_is_reported_before_credentials(
    dep: Deployment,
    keys: list[rsa.RSAPrivateKey],
    body: bytes,
    content_type: str | None,
    expected: bytes,
) -> None:
    csr_id = submit(dep, make_csr(keys[1]))
    reply = call(dep.app, "PUT", f"/cas/crt/{csr_id}", body, content_type=content_type)
    assert (reply.status, reply.body) == (400, expected)
    assert call(dep.app, "GET", f"/cas/crt/{csr_id}").status == 404


# CA material and CRLs


def test_ca_certificate_and_chain(dep: Deployment) -> None:
    pem = call(dep.app, "GET", "/cau/crt/ca.crt.pem")
    assert (pem.status, pem.header("Content-Type")) == (200, "application/x-x509-ca-cert")
    assert pem.body == dep.cau.get_ca_certificate()
    chain = call(dep.app, "GET", "/cau/crt/ca.crt.json")
    assert (chain.status, chain.header("Content-Type"), chain.body) == (200, JSON, b"[]")


def test_crl_routes(dep: Deployment) -> None:
    bundle = call(dep.app, "GET", "/cas/crl")
    assert (bundle.status, bundle.header("Content-Type")) == (200, "application/pkix-crl")
    ((aki, crl_pem),) = dep.cas.get_crl_dict().items()
    assert bundle.body == crl_pem
    for segment in (str(aki), f"+{aki}", f"000{aki}"):
        one = call(dep.app, "GET", f"/cas/crl/{segment}")
        assert (one.status, one.body) == (200, crl_pem)
    assert call(dep.app, "GET", "/cas/crl/abc").status == 404
    assert call(dep.app, "GET", f"/cas/crl/{aki + 1}").status == 404


# Request bodies (http-api 14.1)


def test_body_limits(dep: Deployment, keys: list[rsa.RSAPrivateKey]) -> None:
    over = call(
        dep.app,
        "PUT",
        "/cas/csr",
        environ={"CONTENT_LENGTH": "10485761", "wsgi.input": ExplodingInput()},
    )
    assert (over.status, over.reason) == (413, "Request Entity Too Large")
    assert over.body == b"b'Content-Length limit exceeded'"
    bad = call(
        dep.app,
        "PUT",
        "/cas/csr",
        environ={"CONTENT_LENGTH": "12a", "wsgi.input": ExplodingInput()},
    )
    assert (bad.status, bad.body) == (400, b"b'Invalid Content-Length'")
    assert call(dep.app, "PUT", "/cas/csr", environ={"CONTENT_LENGTH": "-1"}).status == 400
    missing = call(dep.app, "PUT", "/cas/csr", environ={"wsgi.input": ExplodingInput()})
    assert (missing.status, missing.reason) == (411, "Length Required")
    short = call(dep.app, "PUT", "/cas/csr", b"abc", environ={"CONTENT_LENGTH": "10"})
    assert short.status == 400
    assert dep.cas.get_csr_list() == []


def test_terminated_input_without_length_is_read_to_its_end(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    import io

    csr = make_csr(keys[1])
    reply = call(
        dep.app,
        "PUT",
        "/cas/csr",
        environ={"wsgi.input": io.BytesIO(csr), "wsgi.input_terminated": True},
    )
    assert reply.status == 201
    assert dep.cas.get_csr(int(reply.header("Location") or "")) == csr


def test_exactly_content_length_bytes_are_read(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    csr = make_csr(keys[1])
    reply = call(
        dep.app,
        "PUT",
        "/cas/csr",
        csr + b"trailing junk",
        environ={"CONTENT_LENGTH": str(len(csr))},
    )
    assert reply.status == 201


# Unexpected failures


def test_unexpected_error_is_500_and_logged(dep: Deployment) -> None:
    environ = {"CONTENT_LENGTH": "5"}
    reply = call(dep.app, "PUT", "/cas/csr", environ=environ | {"wsgi.input": None})
    assert (reply.status, reply.body) == (500, b"")
    head = reply.errors.splitlines()[0]
    assert re.fullmatch(
        r"\[2026-11-27T12:00:00\+00:00\] \[pid \d+:tid \d+\] \[client 127\.0\.0\.1\] .* ", head
    ), head
    assert "Traceback" in reply.errors


def test_the_https_ca_is_published_when_there_is_one(dep: Deployment) -> None:
    assert call(dep.app, "GET", "/https-ca.crt.pem").status == 404
    app = dep.restart_app(https_ca=dep.cas)

    reply = call(app, "GET", "/https-ca.crt.pem")

    assert (reply.status, reply.header("Content-Type")) == (200, "application/x-pem-file")
    assert reply.body == dep.cas.get_ca_certificate()
    assert call(dep.app, "GET", "/cas/acme/directory", https=True).status == 404
