"""CORS consent for browser applications (http-api 11): tokens, key store, cookie, page.

The consent cookie maps each origin to an HS256 JWT saying whether the user granted it
the use of their credentials. Only this server can mint or check those tokens, with
secrets persisted in the `--cors-key-store` file, or, when several caucased share a
PostgreSQL database, in that database (a token one node signed verifies on every node).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import tempfile
import threading
import urllib.parse
from collections.abc import Collection, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol

from caucase.clock import Clock, from_timestamp, to_timestamp, utcnow
from caucase.http.request import HTTPError, Request, Response
from caucase.storage.cluster import ClusterState

COOKIE_NAME = "cors"
COOKIE_MAX_AGE = 31536000
SECRET_LIFE = datetime.timedelta(days=365)
SECRET_RENEW_BEFORE = SECRET_LIFE / 2
SECRET_SIZE = 32
_JWT_HEADER = b'{"alg":"HS256","typ":"JWT"}'

logger = logging.getLogger(__name__)


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url; ValueError on anything else."""
    raw = text.encode("ascii")
    if not raw or raw.endswith(b"="):
        raise ValueError("bad base64url")
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from exc


def encode_token(secret: bytes, origin: str, granted: bool) -> str:
    """HS256 JWT with the PyJWT-compatible claims {"p": {"a": granted, "o": origin}}."""
    claims = json.dumps({"p": {"a": granted, "o": origin}}, separators=(",", ":"))
    signing_input = _b64url_encode(_JWT_HEADER) + "." + _b64url_encode(claims.encode("utf-8"))
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64url_encode(mac)


def decode_token(secret_list: list[bytes], token: str, origin: str) -> bool | None:
    """The grant a valid token gives `origin`, or None if no secret verifies it for `origin`."""
    try:
        header_b64, claims_b64, mac_b64 = token.split(".")
        header = json.loads(_b64url_decode(header_b64))
        claims = json.loads(_b64url_decode(claims_b64))
        mac = _b64url_decode(mac_b64)
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return None
    signing_input = (header_b64 + "." + claims_b64).encode("ascii")
    if not any(
        hmac.compare_digest(hmac.new(key, signing_input, hashlib.sha256).digest(), mac)
        for key in secret_list
    ):
        return None
    policy = claims.get("p") if isinstance(claims, dict) else None
    if not isinstance(policy, dict) or policy.get("o") != origin:
        return None
    granted = policy.get("a")
    return granted if isinstance(granted, bool) else None


class KeyStore(Protocol):
    """Where the token secrets are kept."""

    def verification_secrets(self) -> list[bytes]: ...

    def signing_secret(self) -> bytes: ...


def rotated(
    secret_list: list[tuple[int, bytes]], now: datetime.datetime
) -> list[tuple[int, bytes]]:
    """The secrets to hold at `now`: expired ones dropped, a new one added when the newest
    is past half its life (or there is none)."""
    kept = [item for item in secret_list if from_timestamp(item[0]) > now]
    if not kept or from_timestamp(kept[-1][0]) - now < SECRET_RENEW_BEFORE:
        kept.append((to_timestamp(now + SECRET_LIFE), secrets.token_bytes(SECRET_SIZE)))
    return kept


class CorsKeyStore:
    """Token secrets with their expiry, persisted as JSON [[expiry_unix_time, hex], ...].

    An absent, empty or unreadable file starts with no secret (a warning is logged for an
    unreadable one) rather than stopping the server: losing secrets only costs consent."""

    def __init__(self, path: str, clock: Clock = utcnow) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._secret_list = self._load()

    def _load(self) -> list[tuple[int, bytes]]:
        try:
            with open(self._path, "rb") as store:
                content = store.read()
        except FileNotFoundError:
            return []
        if not content.strip():
            return []
        try:
            secret_list = [
                (int(expiry), bytes.fromhex(key)) for expiry, key in json.loads(content)
            ]
        except (ValueError, TypeError, UnicodeError) as exc:
            logger.warning("Ignoring unreadable CORS key store %r: %s", self._path, exc)
            return []
        return sorted(secret_list)

    def _save(self) -> None:
        """Atomic replace of the store file, created 0600 since it holds secrets."""
        text = json.dumps([[expiry, key.hex()] for expiry, key in self._secret_list])
        directory = os.path.dirname(os.path.abspath(self._path))
        descriptor, temp_path = tempfile.mkstemp(dir=directory, prefix=".cors-key-")
        try:
            with os.fdopen(descriptor, "w") as store:
                store.write(text)
            os.replace(temp_path, self._path)
        except BaseException:
            os.unlink(temp_path)
            raise

    def verification_secrets(self) -> list[bytes]:
        """Every held secret, newest first."""
        with self._lock:
            return [key for _, key in reversed(self._secret_list)]

    def signing_secret(self) -> bytes:
        """The newest secret, after dropping expired ones and adding a new one when due."""
        now = self._clock()
        with self._lock:
            kept = rotated(self._secret_list, now)
            changed = kept != self._secret_list
            self._secret_list = kept
            if changed:
                try:
                    self._save()
                except OSError as exc:
                    # Consent still works until restart; only persistence is lost.
                    logger.warning("Cannot save CORS key store %r: %s", self._path, exc)
            return kept[-1][1]


class SharedCorsKeyStore:
    """Token secrets kept in the database that several caucased share, read at each use
    (consent checks are rare), rotated by one node at a time."""

    def __init__(self, cluster: ClusterState, clock: Clock = utcnow) -> None:
        self._cluster = cluster
        self._clock = clock

    def verification_secrets(self) -> list[bytes]:
        """Every held secret, newest first."""
        return [key for _, key in reversed(self._cluster.cors_secrets())]

    def signing_secret(self) -> bytes:
        """The newest secret; one node adds a new one when due, the others then use it."""
        now = self._clock()
        held = self._cluster.cors_secrets()
        if held and rotated(held, now) == held:
            return held[-1][1]
        return self._cluster.update_cors_secrets(lambda current: rotated(current, now))[-1][1]


def read_cookie_map(cookie_header: str | None) -> dict[str, Any] | None:
    """The consent map from a Cookie header: {} when absent, None when it is not JSON.

    JSON that is not an object counts as no cookie (the reference answered 500)."""
    if not cookie_header:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return {}
    morsel = jar.get(COOKIE_NAME)
    if morsel is None:
        return {}
    try:
        value = json.loads(morsel.value)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else {}


def blank_cookie(path: str) -> str:
    """The reference's header clearing an unreadable cookie (http-api 11.2), path aside."""
    expired = "expires=Thu, 1 Jan 1970 00:00:00 GMT"
    return f'{COOKIE_NAME}=""; {expired}; Max-Age={COOKIE_MAX_AGE}; Path={path}'


def make_cookie(cookie_map: dict[str, Any], path: str) -> str:
    """Set-Cookie value holding the map, quoted the way SimpleCookie quotes it."""
    jar: SimpleCookie = SimpleCookie()
    jar[COOKIE_NAME] = json.dumps(cookie_map)
    return f"{COOKIE_NAME}={jar[COOKIE_NAME].coded_value}; Max-Age={COOKIE_MAX_AGE}; Path={path}"


_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>caucase: cross-origin access</title>
</head>
<body>
  <form action="{action}" method="post">
    <input type="hidden" name="return_to" value="{return_to}">
    <input type="hidden" name="origin" value="{origin}">
    <p>The page at <b>{origin}</b> asks to use your caucase credentials to access
    <b>{request_uri}</b>.</p>
    <p>Allow it?</p>
    <button name="grant" value="0">Deny</button>
    <button name="grant" value="1">Allow</button>
    <a href="{return_to}">Go back without deciding</a>
    <p>If you already answered and keep coming back here, your browser may be
    blocking third-party cookies.</p>
  </form>
</body>
</html>
"""


def consent_page(action: str, request_uri: str, origin: str, return_to: str) -> bytes:
    """The consent form, every inserted value HTML-escaped (quotes included)."""
    return _PAGE.format(
        action=html.escape(action),
        request_uri=html.escape(request_uri),
        origin=html.escape(origin),
        return_to=html.escape(return_to),
    ).encode("utf-8")


class CorsPolicy(enum.Enum):
    """How a cross-origin request on a route is treated (http-api 11.2)."""

    ALLOW = "allow"
    ASK = "ask"
    DENY = "deny"


def _allow_headers(origin: str) -> list[tuple[str, str]]:
    return [
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Allow-Origin", origin),
    ]


def response_headers(origin: str) -> list[tuple[str, str]]:
    """Headers of every response to an allowed cross-origin request (http-api 11.2)."""
    return [
        *_allow_headers(origin),
        ("Access-Control-Expose-Headers", "Location, WWW-Authenticate"),
        ("Vary", "Origin"),
    ]


def _http_url(url: str) -> str:
    """A return URL the consent page may link or redirect to: http(s) and no control chars.

    The reference took any value, so a javascript: URL ran in the server's origin."""
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https") or any(
        ord(char) < 0x20 or ord(char) == 0x7F for char in url
    ):
        raise HTTPError(400, b"Invalid return URL")
    return url


class CorsConsent:
    """The consent gate in front of routes, the preflight answer and the /cors pages."""

    def __init__(self, key_store: KeyStore, whitelist: Collection[str]) -> None:
        self._key_store = key_store
        self._whitelist = frozenset(whitelist)

    def gate(self, request: Request, policy: CorsPolicy) -> None:
        """Let a cross-origin request through only with the user's recorded consent.

        On success request.cors_origin is set so the response gets the CORS headers."""
        origin = request.cross_origin
        if origin is None:
            return
        if policy is CorsPolicy.ALLOW or origin in self._whitelist:
            request.cors_origin = origin
            return
        if policy is CorsPolicy.DENY or origin == "null":
            raise HTTPError(403)
        cookie_map = read_cookie_map(request.environ.get("HTTP_COOKIE"))
        if cookie_map is None:
            raise self._consent_needed(request, origin, blank_cookie(request.cookie_path))
        token = cookie_map.get(origin)
        if token is None:
            raise self._consent_needed(request, origin)
        granted = None
        if isinstance(token, str):
            granted = decode_token(self._key_store.verification_secrets(), token, origin)
        if granted is None:
            del cookie_map[origin]
            cookie = make_cookie(cookie_map, request.cookie_path)
            raise self._consent_needed(request, origin, cookie)
        request.cors_origin = origin  # even a refusal must be readable by the application
        if not granted:
            raise HTTPError(403)

    @staticmethod
    def _consent_needed(request: Request, origin: str, set_cookie: str | None = None) -> HTTPError:
        """401 pointing the browser application at the consent page.

        Unlike the reference it carries the CORS headers, so the application can read
        the WWW-Authenticate header it is told to follow."""
        form = urllib.parse.quote_plus(origin)
        template = f"{request.https_base()}/cors?origin={form}{{&return}}"
        url = urllib.parse.quote(template, safe="/")
        headers = [("WWW-Authenticate", "cors url=" + url)]
        if set_cookie is not None:
            headers.append(("Set-Cookie", set_cookie))
        request.cors_origin = origin
        return HTTPError(401, headers=headers)

    @staticmethod
    def preflight(request: Request, allowed_methods: Sequence[str]) -> Response:
        """OPTIONS answer: always 204; CORS headers for a cross-origin caller (http-api 11.5)."""
        origin = request.cross_origin
        if origin is None:
            return Response(204)
        methods = ", ".join([*dict.fromkeys(allowed_methods), "OPTIONS"])
        return Response(
            204,
            [
                *_allow_headers(origin),
                ("Vary", "Origin"),
                ("Access-Control-Allow-Methods", methods),
                ("Access-Control-Allow-Headers", "Content-Type, User-Agent"),
            ],
        )

    @staticmethod
    def form(request: Request) -> Response:
        """GET /cors: the consent page over HTTPS, a redirect to the HTTPS root otherwise."""
        if request.scheme != "https":
            return Response(302, [("Location", request.https_base(root=True))])
        query = request.strict_query(("origin", "return"))
        page = consent_page(
            action=request.script_path + "/cors",
            request_uri=request.uri(),
            origin=query["origin"],
            return_to=_http_url(query["return"]),
        )
        headers = [
            ("Content-Security-Policy", "frame-ancestors 'none'"),
            ("X-Frame-Options", "DENY"),
            ("Content-Type", "text/html"),
        ]
        return Response(200, headers, page)

    def decide(self, request: Request) -> Response:
        """POST /cors: record the user's answer in the cookie, then go back (HTTPS only)."""
        if request.scheme != "https":
            return Response(404)
        if request.content_type != "application/x-www-form-urlencoded":
            return Response(400, body=b"b'Unhandled Content-Type'")
        form = request.strict_form(request.read_body(), ("origin", "return_to", "grant"))
        try:
            granted = bool(int(form["grant"], 10))
        except ValueError:
            raise HTTPError(400) from None
        return_to = _http_url(form["return_to"])
        cookie_map = read_cookie_map(request.environ.get("HTTP_COOKIE")) or {}
        token = encode_token(self._key_store.signing_secret(), form["origin"], granted)
        cookie_map[form["origin"]] = token
        cookie = make_cookie(cookie_map, request.cookie_path)
        return Response(302, [("Location", return_to), ("Set-Cookie", cookie)])
