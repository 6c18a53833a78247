"""What the WSGI application reads from a request and how it answers (http-api 2, 12, 14.1).

Kept apart from the routing so that handlers and the CORS consent share one view of
the request: its path, body, scheme, and the HTTPS URL derived from it.
"""

from __future__ import annotations

import urllib.parse
import wsgiref.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from caucase.ports import https_port_for

MAX_BODY_SIZE = 10 * 1024 * 1024
_READ_CHUNK = 65536


@dataclass
class Response:
    """Status, handler headers and body; Date, Content-Length and CORS are added on send."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class HTTPError(Exception):
    """Ends a request early with the given response (error statuses, redirects)."""

    def __init__(
        self, status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(status)
        self.response = Response(status, list(headers), body)


def unauthorized(reason: bytes) -> HTTPError:
    """401 for a missing, unverifiable or revoked client certificate (http-api 4).

    The reference sends an empty body and its clients read only the status; ours says why,
    for the person reading the error."""
    return HTTPError(401, reason, [("WWW-Authenticate", "transport")])


def quote(text: str) -> str:
    """Percent-quote a path, keeping "/" (the reference's URL quoting)."""
    return urllib.parse.quote(text, safe="/")


class Request:
    """A read-only view of one WSGI environ plus what dispatch learns about it."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method: str = environ.get("REQUEST_METHOD", "GET")
        self.scheme: str = environ.get("wsgi.url_scheme", "http")
        self.segments = [part for part in environ.get("PATH_INFO", "").split("/") if part]
        self.script_path = quote(environ.get("SCRIPT_NAME", ""))
        # Missing Content-Type reads as text/plain; comparisons are exact (http-api 14.1).
        self.content_type: str = environ.get("CONTENT_TYPE") or "text/plain"
        self.authority: str | None = None
        self.authenticated = False
        self.user: x509.Certificate | None = None
        self.cors_origin: str | None = None
        # The route template answering it, for the metrics (never the path sent).
        self.route = "unmatched"

    @property
    def cookie_path(self) -> str:
        return self.script_path or "/"

    @property
    def cross_origin(self) -> str | None:
        """The Origin header when it counts as cross-origin (http-api 11.1), else None.

        The reference took only "http:"/"https:" as its own origin. We also recognise the
        request's real origin: browsers send it with every form POST, so without this the
        consent page could never record an answer."""
        origin = self.environ.get("HTTP_ORIGIN")
        if origin is None or origin == self.scheme + ":":
            return None
        if str(origin).lower() == f"{self.scheme}://{self._host_header()}".lower():
            return None
        return str(origin)

    def self_href(self) -> str:
        """HAL self link: quoted SCRIPT_NAME + PATH_INFO, trailing "/" stripped."""
        path = self.environ.get("SCRIPT_NAME", "") + self.environ.get("PATH_INFO", "")
        return quote(path).rstrip("/") or "/"

    def uri(self) -> str:
        return wsgiref.util.request_uri(self.environ)

    def https_base(self, root: bool = False) -> str:
        """The HTTPS URL of the application for this request (http-api 12.2).

        Over HTTP the port is the HTTP one plus one (443 implied for 80); a Host whose
        port is not a number gives 400 (the reference failed with 500)."""
        path = (self.script_path or "/") if root else self.script_path
        if self.scheme == "https":
            return "https://" + self._host_header() + path
        try:
            parsed = urllib.parse.urlsplit("//" + self._host_header())
            host, port = parsed.hostname, parsed.port
        except ValueError:
            raise HTTPError(400, b"Invalid Host") from None
        if not host:
            raise HTTPError(400, b"Invalid Host")
        if ":" in host:
            host = f"[{host}]"
        if port is not None and https_port_for(port) != 443:
            host = f"{host}:{https_port_for(port)}"
        return "https://" + host + path

    def _host_header(self) -> str:
        host = self.environ.get("HTTP_HOST")
        if host:
            return str(host)
        return f"{self.environ.get('SERVER_NAME', 'localhost')}:{self.environ.get('SERVER_PORT')}"

    def https_url(self) -> str:
        """The HTTPS URL of this request, without its query: what an ACME client signs."""
        return self.https_base() + quote(self.environ.get("PATH_INFO", ""))

    def read_body(self, limit: int = MAX_BODY_SIZE) -> bytes:
        """Exactly Content-Length bytes, at most `limit`: 10 MiB by default (http-api 14.1).

        Without Content-Length the body is read to its end only when the server says the
        stream is terminated (wsgi.input_terminated, e.g. after de-chunking); otherwise
        411, where the reference would block reading until the client half-closes."""
        raw_length = str(self.environ.get("CONTENT_LENGTH") or "").strip()
        stream = self.environ["wsgi.input"]
        if not raw_length:
            if not self.environ.get("wsgi.input_terminated"):
                raise HTTPError(411, b"Content-Length required")
            body = _read_at_most(stream, limit + 1)
            if len(body) > limit:
                raise HTTPError(413, b"b'Content-Length limit exceeded'")
            return body
        try:
            length = int(raw_length, 10)
        except ValueError:
            raise HTTPError(400, b"b'Invalid Content-Length'") from None
        if length < 0:
            raise HTTPError(400, b"b'Invalid Content-Length'")
        if length > limit:
            raise HTTPError(413, b"b'Content-Length limit exceeded'")
        body = _read_at_most(stream, length)
        if len(body) != length:
            raise HTTPError(400, b"Incomplete body")
        return body

    def strict_query(self, names: Sequence[str]) -> dict[str, str]:
        """The query string's single non-empty value for each name; 400 otherwise."""
        return _strict_fields(str(self.environ.get("QUERY_STRING", "")), names)

    @staticmethod
    def strict_form(body: bytes, names: Sequence[str]) -> dict[str, str]:
        """An ASCII urlencoded form with one non-empty value for each name; 400 otherwise."""
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            raise HTTPError(400) from None
        return _strict_fields(text, names)


def _strict_fields(text: str, names: Sequence[str]) -> dict[str, str]:
    try:
        parsed = urllib.parse.parse_qs(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise HTTPError(400) from None
    result = {}
    for name in names:
        values = parsed.get(name, [])
        if len(values) != 1 or not values[0]:
            raise HTTPError(400)
        result[name] = values[0]
    return result


def _read_at_most(stream: Any, size: int) -> bytes:
    """Read until `size` bytes or end of stream: one read() may return less.

    Bad chunked framing (ValueError from the server's decoder) and a client that stops
    sending until the socket times out are the client's fault: 400, not 500."""
    chunk_list = []
    remaining = size
    while remaining > 0:
        try:
            chunk = stream.read(min(remaining, _READ_CHUNK))
        except ValueError:
            raise HTTPError(400, b"Invalid chunked encoding") from None
        except OSError:
            raise HTTPError(400, b"Incomplete body") from None
        if not chunk:
            break
        chunk_list.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunk_list)
