"""CORS consent (http-api 11): gate, preflight, consent page, decision cookie, key store."""

from __future__ import annotations

import json
import logging
import os
import stat
import urllib.parse
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.http import cors
from tests.conftest import FakeClock
from tests.support.wsgi_support import Deployment, Reply, call, deploy

APP_ORIGIN = "https://app.example"
FORM = "application/x-www-form-urlencoded"
# Observed on the reference with Host 127.0.0.1:18640 (http-api 11.2).
REFERENCE_CORS_URL = (
    "cors url=https%3A//127.0.0.1%3A18641/cors%3Forigin%3Dhttps%253A%252F%252Fapp.example"
    "%7B%26return%7D"
)
ALLOWED_HEADERS = [
    ("Access-Control-Allow-Credentials", "true"),
    ("Access-Control-Allow-Origin", APP_ORIGIN),
    ("Access-Control-Expose-Headers", "Location, WWW-Authenticate"),
    ("Vary", "Origin"),
]


@pytest.fixture(scope="module")
def user_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock, user_key: rsa.RSAPrivateKey) -> Deployment:
    return deploy(tmp_path, clock, user_key, cors_whitelist=("https://trusted.example",))


def cors_headers(reply: Reply) -> list[tuple[str, str]]:
    return [
        (key, value) for key, value in reply.headers if key.startswith("Access-") or key == "Vary"
    ]


def decide(
    dep: Deployment, granted: bool, cookie: str | None = None, origin: str = APP_ORIGIN
) -> Reply:
    form = urllib.parse.urlencode(
        {"origin": origin, "return_to": "https://app.example/back", "grant": int(granted)}
    )
    headers = {"Cookie": cookie} if cookie else {}
    return call(
        dep.app, "POST", "/cors", form.encode(), content_type=FORM, https=True, headers=headers
    )


def cookie_header(reply: Reply) -> str:
    """The Cookie header a browser would send back after this Set-Cookie."""
    jar: SimpleCookie = SimpleCookie()
    jar.load(reply.header("Set-Cookie") or "")
    return f"cors={jar['cors'].coded_value}"


def read_ca(dep: Deployment, cookie: str | None = None, origin: str = APP_ORIGIN) -> Reply:
    headers = {"Origin": origin}
    if cookie is not None:
        headers["Cookie"] = cookie
    return call(dep.app, "GET", "/cas/crt/ca.crt.pem", headers=headers)


# The gate


def test_cross_origin_without_consent_gets_401_with_the_consent_url(dep: Deployment) -> None:
    reply = read_ca(dep)
    assert (reply.status, reply.body) == (401, b"")
    assert reply.header("WWW-Authenticate") == REFERENCE_CORS_URL
    assert reply.header("Set-Cookie") is None
    # Unlike the reference, readable by the browser application that must follow it.
    assert cors_headers(reply) == ALLOWED_HEADERS


def test_origin_equal_to_own_scheme_is_not_cross_origin(dep: Deployment) -> None:
    assert read_ca(dep, origin="http:").status == 200
    assert (
        call(
            dep.app, "GET", "/cas/crt/ca.crt.pem", https=True, headers={"Origin": "https:"}
        ).status
        == 200
    )


def test_null_origin_is_forbidden(dep: Deployment) -> None:
    reply = read_ca(dep, origin="null")
    assert (reply.status, cors_headers(reply)) == (403, [])


def test_hal_is_always_allowed(dep: Deployment) -> None:
    for path in ("/", "/cas", "/cau/"):
        reply = call(dep.app, "GET", path, headers={"Origin": APP_ORIGIN})
        assert reply.status == 200
        assert cors_headers(reply) == ALLOWED_HEADERS


def test_whitelisted_origin_is_allowed_even_on_post_cors(dep: Deployment) -> None:
    reply = read_ca(dep, origin="https://trusted.example")
    assert reply.status == 200
    assert ("Access-Control-Allow-Origin", "https://trusted.example") in reply.headers
    posted = decide(dep, True, origin="x")
    assert posted.status == 302
    whitelisted = call(
        dep.app,
        "POST",
        "/cors",
        b"origin=a&return_to=https%3A%2F%2Fa%2F&grant=1",
        content_type=FORM,
        https=True,
        headers={"Origin": "https://trusted.example"},
    )
    assert whitelisted.status == 302


def test_post_cors_is_denied_to_other_origins(dep: Deployment) -> None:
    reply = call(
        dep.app,
        "POST",
        "/cors",
        b"",
        content_type=FORM,
        https=True,
        headers={"Origin": APP_ORIGIN},
    )
    assert reply.status == 403


def test_405_comes_before_cors_and_has_no_cors_headers(dep: Deployment) -> None:
    reply = call(dep.app, "POST", "/cas/crl", headers={"Origin": APP_ORIGIN})
    assert (reply.status, cors_headers(reply)) == (405, [])


# Preflight


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/cas/csr", "GET, PUT, DELETE, OPTIONS"),
        ("/cors", "GET, OPTIONS"),
        ("/cau/crt/renew", "PUT, OPTIONS"),
        ("/nowhere/at/all", "GET, OPTIONS"),
    ],
)
@pytest.mark.parametrize("origin", [APP_ORIGIN, "null"])
def test_preflight_headers(dep: Deployment, path: str, methods: str, origin: str) -> None:
    reply = call(dep.app, "OPTIONS", path, headers={"Origin": origin})
    assert (reply.status, reply.body) == (204, b"")
    assert cors_headers(reply) == [
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Allow-Origin", origin),
        ("Vary", "Origin"),
        ("Access-Control-Allow-Methods", methods),
        ("Access-Control-Allow-Headers", "Content-Type, User-Agent"),
    ]


# Consent page


def test_consent_page_over_http_redirects_to_the_https_root(dep: Deployment) -> None:
    reply = call(dep.app, "GET", "/cors?origin=x&return=y")
    assert (reply.status, reply.header("Location")) == (302, "https://127.0.0.1:18641/")
    reply = call(dep.app, "GET", "/cors", environ={"SCRIPT_NAME": "/ca"})
    assert reply.header("Location") == "https://127.0.0.1:18641/ca"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "origin=a",
        "return=https%3A%2F%2Fa",
        "origin=&return=https%3A%2F%2Fa",
        "origin=a&origin=b&return=https%3A%2F%2Fa",
        "origin=a&return=javascript%3Aalert(1)",
        "&&",
    ],
)
def test_consent_page_rejects_bad_queries(dep: Deployment, query: str) -> None:
    reply = call(dep.app, "GET", "/cors?" + query, https=True)
    assert reply.status == 400


def test_consent_page_escapes_and_posts_to_cors(dep: Deployment) -> None:
    origin = 'https://evil.example"><script>'
    query = urllib.parse.urlencode({"origin": origin, "return": "https://app.example/?a=1&b=2"})
    reply = call(dep.app, "GET", "/cors?" + query, https=True, environ={"SCRIPT_NAME": "/ca"})
    assert reply.status == 200
    assert reply.header("Content-Type") == "text/html"
    assert reply.header("Content-Security-Policy") == "frame-ancestors 'none'"
    assert reply.header("X-Frame-Options") == "DENY"
    page = reply.body.decode("utf-8")
    assert '<meta charset="utf-8">' in page
    assert 'action="/ca/cors"' in page
    assert "<script>" not in page
    assert 'value="https://evil.example&quot;&gt;&lt;script&gt;"' in page
    assert 'href="https://app.example/?a=1&amp;b=2"' in page
    assert 'name="grant" value="0"' in page and 'name="grant" value="1"' in page


# Decision and cookie


def test_grant_then_access_with_the_cookie(dep: Deployment) -> None:
    posted = decide(dep, True)
    assert (posted.status, posted.header("Location")) == (302, "https://app.example/back")
    set_cookie = posted.header("Set-Cookie") or ""
    assert set_cookie.endswith("; Max-Age=31536000; Path=/")
    token = json.loads(SimpleCookie(set_cookie)["cors"].value)[APP_ORIGIN]
    assert token.startswith(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJwIjp7ImEiOnRydWUsIm8iOiJodHRwczovL2FwcC5leGFtcGxlIn19."
    )
    reply = read_ca(dep, cookie_header(posted))
    assert (reply.status, reply.body) == (200, dep.cas.get_ca_certificate())
    assert cors_headers(reply) == ALLOWED_HEADERS
    missing = call(
        dep.app,
        "GET",
        "/cas/crt/1",
        headers={"Origin": APP_ORIGIN, "Cookie": cookie_header(posted)},
    )
    assert (missing.status, cors_headers(missing)) == (404, ALLOWED_HEADERS)


def test_deny_gives_403_readable_by_the_application(dep: Deployment) -> None:
    reply = read_ca(dep, cookie_header(decide(dep, False)))
    assert (reply.status, cors_headers(reply)) == (403, ALLOWED_HEADERS)


def test_consent_form_posted_by_a_browser_from_our_own_origin_is_accepted(
    dep: Deployment,
) -> None:
    body = b"origin=a&return_to=https%3A%2F%2Fa%2F&grant=1"
    own = call(
        dep.app,
        "POST",
        "/cors",
        body,
        content_type=FORM,
        https=True,
        headers={"Origin": "https://127.0.0.1:18641"},
    )
    assert (own.status, cors_headers(own)) == (302, [])
    same_host_other_scheme = call(
        dep.app,
        "POST",
        "/cors",
        body,
        content_type=FORM,
        https=True,
        headers={"Origin": "http://127.0.0.1:18641"},
    )
    assert same_host_other_scheme.status == 403


def test_new_decision_keeps_other_origins(dep: Deployment) -> None:
    first = decide(dep, True)
    second = decide(dep, False, cookie_header(first), origin="https://other.example")
    cookie = cookie_header(second)
    assert read_ca(dep, cookie).status == 200
    assert read_ca(dep, cookie, origin="https://other.example").status == 403


def test_token_for_another_origin_or_tampered_is_dropped(dep: Deployment) -> None:
    granted = json.loads(SimpleCookie(decide(dep, True).header("Set-Cookie") or "")["cors"].value)
    forged = {"https://attacker.example": granted[APP_ORIGIN], "https://keep.example": "x"}
    jar: SimpleCookie = SimpleCookie()
    jar["cors"] = json.dumps(forged)
    reply = read_ca(dep, f"cors={jar['cors'].coded_value}", origin="https://attacker.example")
    assert reply.status == 401
    remaining = json.loads(SimpleCookie(reply.header("Set-Cookie") or "")["cors"].value)
    assert remaining == {"https://keep.example": "x"}
    tampered = granted[APP_ORIGIN][:-2] + "AA"
    jar["cors"] = json.dumps({APP_ORIGIN: tampered})
    reply = read_ca(dep, f"cors={jar['cors'].coded_value}")
    assert reply.status == 401
    assert reply.header("Set-Cookie") == 'cors="{}"; Max-Age=31536000; Path=/'


@pytest.mark.parametrize("cookie", ["cors=notjson", "cors=" + "[" * 5000 + "]" * 5000])
def test_unreadable_cookie_is_blanked(dep: Deployment, cookie: str) -> None:
    reply = read_ca(dep, cookie)
    assert reply.status == 401
    assert reply.header("Set-Cookie") == (
        'cors=""; expires=Thu, 1 Jan 1970 00:00:00 GMT; Max-Age=31536000; Path=/'
    )


@pytest.mark.parametrize(
    "cookie",
    ["cors=[1]", 'cors="\\"text\\""', "cors=1", "other=1", "garbage=\x01"],
)
def test_non_object_cookie_counts_as_no_cookie(dep: Deployment, cookie: str) -> None:
    reply = read_ca(dep, cookie)
    assert (reply.status, reply.header("Set-Cookie")) == (401, None)
    assert reply.header("WWW-Authenticate") == REFERENCE_CORS_URL


@pytest.mark.parametrize(
    ("body", "content_type", "https"),
    [
        (b"origin=a&return_to=https%3A%2F%2Fa&grant=1", FORM, False),
        (b"origin=a&return_to=https%3A%2F%2Fa&grant=1", FORM + "; charset=utf-8", True),
        (b"origin=a&return_to=https%3A%2F%2Fa", FORM, True),
        (b"origin=a&return_to=https%3A%2F%2Fa&grant=yes", FORM, True),
        (b"origin=a&origin=b&return_to=https%3A%2F%2Fa&grant=1", FORM, True),
        (b"origin=a&return_to=javascript%3Ax&grant=1", FORM, True),
        (b"origin=a&return_to=https%3A%2F%2Fa%0d%0aX%3A1&grant=1", FORM, True),
        ("origin=é&return_to=https%3A%2F%2Fa&grant=1".encode(), FORM, True),
        (b"&&", FORM, True),
    ],
)
def test_bad_decisions_are_refused(
    dep: Deployment, body: bytes, content_type: str, https: bool
) -> None:
    reply = call(dep.app, "POST", "/cors", body, content_type=content_type, https=https)
    assert reply.status == (400 if https else 404)
    assert reply.header("Set-Cookie") is None
    assert not (dep.tmp_path / "cors.key").exists()


# Key store


def test_key_store_round_trips_across_restarts(dep: Deployment) -> None:
    cookie = cookie_header(decide(dep, True))
    store = dep.tmp_path / "cors.key"
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    (entry,) = json.loads(store.read_text())
    assert entry[0] == int(dep.clock().timestamp()) + 365 * 86400
    assert len(bytes.fromhex(entry[1])) == 32
    dep.app = dep.restart_app()
    assert read_ca(dep, cookie).status == 200


@pytest.mark.parametrize(
    "content", ["", "  \n", "{not json", '{"a": 1}', "[[1, 2]]", '[["x", "zz"]]']
)
def test_empty_or_invalid_key_store_is_tolerated(
    dep: Deployment, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = dep.tmp_path / "cors.key"
    store.write_text(content)
    with caplog.at_level(logging.WARNING, logger="caucase.http.cors"):
        dep.app = dep.restart_app()
    assert bool(caplog.records) == bool(content.strip())
    assert read_ca(dep, cookie_header(decide(dep, True))).status == 200
    assert len(json.loads(store.read_text())) == 1


def test_secrets_rotate_with_the_clock(dep: Deployment) -> None:
    store_path = str(dep.tmp_path / "cors.key")
    store = cors.CorsKeyStore(store_path, dep.clock)
    first = store.signing_secret()
    dep.clock.advance(days=100)
    assert store.signing_secret() == first
    dep.clock.advance(days=90)
    second = store.signing_secret()
    assert second != first
    assert len(json.loads(Path(store_path).read_text())) == 2
    old_token = cors.encode_token(first, APP_ORIGIN, True)
    assert cors.decode_token(store.verification_secrets(), old_token, APP_ORIGIN) is True
    dep.clock.advance(days=180)  # the first secret has expired, the second is still young
    assert store.signing_secret() == second
    assert store.verification_secrets() == [second]
    assert cors.decode_token(store.verification_secrets(), old_token, APP_ORIGIN) is None


def test_unwritable_key_store_keeps_consent_working(
    dep: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    dep.app = dep.restart_app(cors_key_store=str(dep.tmp_path / "missing-dir" / "cors.key"))
    with caplog.at_level(logging.WARNING, logger="caucase.http.cors"):
        posted = decide(dep, True)
    assert posted.status == 302
    assert "Cannot save CORS key store" in caplog.text
    assert read_ca(dep, cookie_header(posted)).status == 200
