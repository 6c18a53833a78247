"""Raw-socket HTTP exchanges for the hostile-input tests.

http.client cannot send lying lengths, broken chunking, bare half-closes or non-ASCII
bytes, so requests are written byte by byte here and the answer is read back as sent.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import RunningServer, client_context

ANSWER_TIMEOUT = 30.0
# Framings that end the body with a half-close rather than a length or a last chunk.
TRUNCATING = ("long", "none", "raw-chunked", "raw")


@dataclass(frozen=True)
class Case:
    """One hostile request: the raw head is built from these, the body sent as given."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    framing: str = "length"  # length, none, short, long, chunked, raw-chunked, raw
    version: str = "HTTP/1.1"
    chunks: tuple[bytes, ...] = ()


@dataclass
class Answer:
    status: int | None
    raw: bytes
    error: str = ""


def _connect(server: RunningServer, scheme: str, user: Path) -> socket.socket:
    if scheme == "http":
        return socket.create_connection((server.host, server.http_port), timeout=ANSWER_TIMEOUT)
    context = client_context(user if scheme == "https+cert" else None)
    raw = socket.create_connection((server.host, server.https_port), timeout=ANSWER_TIMEOUT)
    return context.wrap_socket(raw)


def _head(case: Case, server: RunningServer) -> bytes:
    lines = [f"{case.method} {case.path} {case.version}"]
    names = {name.lower() for name, _ in case.headers}
    if "host" not in names:
        lines.append(f"Host: {server.netloc}")
    lines += [f"{name}: {value}" for name, value in case.headers]
    if case.framing == "length":
        lines.append(f"Content-Length: {len(case.body)}")
    elif case.framing == "short":
        lines.append(f"Content-Length: {max(len(case.body) // 2, 1)}")
    elif case.framing == "long":
        lines.append(f"Content-Length: {len(case.body) + 100}")
    elif case.framing in ("chunked", "raw-chunked"):
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _body_bytes(case: Case) -> bytes:
    if case.framing == "chunked":
        return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in case.chunks) + (
            b"0\r\n\r\n"
        )
    if case.framing == "raw-chunked":
        return b"".join(case.chunks)
    return case.body


def _early_answer(sock: socket.socket) -> bytes | None:
    """What the server already answered, without waiting; None while it is silent.

    A non-blocking read rather than select(): TLS 1.3 session tickets make a TLS socket
    readable without any application data."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    except OSError:
        return b""
    finally:
        sock.settimeout(ANSWER_TIMEOUT)


def _send_body(sock: socket.socket, body: bytes) -> bytes:
    """Send in pieces; stop as soon as the server answers or refuses more data, and return
    what it answered so far. An interim `100 Continue` is no answer: it asks for the body
    (a server quick enough sends it before the body's first piece leaves)."""
    answered = b""
    for offset in range(0, len(body), 256 * 1024):
        early = _early_answer(sock)
        if early is not None:
            answered += early
            if not _only_continue(answered):
                return answered
        try:
            sock.sendall(body[offset : offset + 256 * 1024])
        except OSError:
            return answered
    return answered


def _only_continue(data: bytes) -> bool:
    """Whether `data` is one whole `100 Continue` interim response and nothing else."""
    return data.startswith((b"HTTP/1.0 100 ", b"HTTP/1.1 100 ")) and data.endswith(b"\r\n\r\n")


def _read_answer(sock: socket.socket, data: bytearray) -> tuple[bytes, str]:
    """One reply: up to its Content-Length when it has one (the connection may stay open
    for another request), else until the server closes."""
    while True:
        end = data.find(b"\r\n\r\n")
        if data.startswith(b"HTTP/1.0 100 ") and end >= 0:
            del data[: end + 4]  # the interim 100 Continue
            continue
        if data.startswith(b"HTTP/1.") and end >= 0:
            head = bytes(data[:end]).lower()
            if b"\r\ncontent-length:" in head:
                length = int(head.split(b"\r\ncontent-length:", 1)[1].split(b"\r\n", 1)[0])
                if len(data) >= end + 4 + length:
                    return bytes(data), ""
        try:
            piece = sock.recv(65536)
        except (OSError, ssl.SSLError) as error:
            return bytes(data), repr(error)
        if not piece:
            return bytes(data), ""
        data += piece


def _status(raw: bytes) -> int | None:
    """The status of an HTTP/1.x reply, or of the HTTP/0.9-form error page."""
    if raw.startswith(b"HTTP/1."):
        return int(raw.split(b" ", 2)[1])
    if raw.startswith(b"<!DOCTYPE HTML>") and b"Error code: " in raw:
        return int(raw.split(b"Error code: ", 1)[1][:3])
    return None


KEEP_ALIVE_REQUEST = b"GET /cas/crt/ca.crt.json HTTP/1.1\r\nHost: x\r\n\r\n"


def exchange(
    server: RunningServer, user: Path, scheme: str, case: Case, persistent: bool = False
) -> Answer:
    """Send one case on a fresh connection and read the whole answer; when `persistent`,
    the case is the second request of a connection kept alive after a good first one."""
    try:
        sock = _connect(server, scheme, user)
    except OSError as error:
        return Answer(None, b"", f"connect: {error!r}")
    with sock:
        try:
            if persistent:
                sock.sendall(KEEP_ALIVE_REQUEST)
                first, _ = _read_answer(sock, bytearray())
                if not first.startswith(b"HTTP/1.1 200 "):
                    return Answer(None, first, "first request not kept alive")
            sock.sendall(_head(case, server))
        except OSError as error:
            return Answer(None, b"", f"send head: {error!r}")
        early = _send_body(sock, _body_bytes(case))
        if case.framing in TRUNCATING:
            with contextlib.suppress(OSError):  # the body ends: raw half-close, TLS kept
                socket.socket.shutdown(sock, socket.SHUT_WR)
        raw, read_error = _read_answer(sock, bytearray(early))
    status = _status(raw)
    if status is None and case.version == "HTTP/0.9" and raw:
        status = 200  # answered in HTTP/0.9 form: the body alone
    return Answer(status, raw, read_error)
