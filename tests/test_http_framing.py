"""Request framing on persistent connections (issue 10): every request is answered once.

A front proxy and caucased must agree on where each request ends, or bytes one of them
takes for a body the other takes for a request (request smuggling). So chunked bodies are
parsed as RFC 9112 7.1 says, trailer section included, and a request whose framing is
ambiguous or not fully understood is answered 400 and its connection closed.

The real listener and application run in-process; requests are written on raw sockets,
pipelined on one connection, and every answer on it is read back until the server closes.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.http.server import CaucasedServer, start_serving, stop_serving
from tests.conftest import FakeClock
from tests.support.servers import make_key_and_csr
from tests.support.wsgi_support import deploy

ANSWER_TIMEOUT = 30.0
CA_CRT = b"GET /cas/crt/ca.crt.pem HTTP/1.1\r\nHost: x\r\n\r\n"
# The last request of a pipeline asks to close, so that reading ends when the server closes.
LAST = b"GET /cas/crt/ca.crt.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
SMUGGLED = b"DELETE /cas/csr/1 HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp_path = tmp_path_factory.mktemp("framing")
    clock = FakeClock(datetime.datetime.now(datetime.timezone.utc))
    user_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = deploy(tmp_path, clock, user_key).app
    server = CaucasedServer(("127.0.0.1", 0), socket.AF_INET, keepalive_timeout=ANSWER_TIMEOUT)
    server.listen()
    start_serving([server], app)
    try:
        yield ("127.0.0.1", server.server_port)
    finally:
        stop_serving([server])


def _answers(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each final reply in `data`, in order (100 Continue skipped)."""
    answers = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, f"truncated reply: {data[:200]!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if status != 100:
            answers.append((status, rest[:length]))
        data = rest[length:]
    return answers


def converse(listener: tuple[str, int], data: bytes) -> list[tuple[int, bytes]]:
    """Send `data` at once on one connection; every reply until the server closes it."""
    with socket.create_connection(listener, timeout=ANSWER_TIMEOUT) as sock:
        sock.sendall(data)
        received = bytearray()
        while piece := sock.recv(65536):
            received += piece
    return _answers(bytes(received))


def chunked_put(body: bytes, tail: bytes = b"0\r\n\r\n", headers: bytes = b"") -> bytes:
    """PUT /cas/csr with `body` in two chunks, then `tail` (last chunk and trailers)."""
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
    head = b"PUT /cas/csr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + headers
    return head + b"\r\n" + chunks + tail


@pytest.fixture
def csr() -> bytes:
    return make_key_and_csr("framing")[1]


def test_several_trailer_fields_are_all_consumed(listener: tuple[str, int], csr: bytes) -> None:
    tail = b"0\r\nX-First: 1\r\nX-Second: 2\r\nX-Third: 3\r\n\r\n"
    answers = converse(listener, chunked_put(csr, tail) + LAST)
    assert [status for status, _ in answers] == [201, 200]
    assert answers[1][1] == b"[]"


def test_a_trailer_shaped_like_a_request_is_not_served(
    listener: tuple[str, int], csr: bytes
) -> None:
    tail = b"0\r\nX-First: 1\r\n" + SMUGGLED + LAST
    answers = converse(listener, chunked_put(csr, tail))
    assert [status for status, _ in answers] == [400]
    assert answers[0][1] == b"Invalid chunked encoding"


def test_requests_pipelined_after_a_chunked_one_are_each_answered_once(
    listener: tuple[str, int], csr: bytes
) -> None:
    extension = b'0;name=value;quoted="a \\" b"\r\n\r\n'
    answers = converse(listener, chunked_put(csr, extension) + CA_CRT + CA_CRT + LAST)
    assert [status for status, _ in answers] == [201, 200, 200, 200]
    assert answers[1][1].startswith(b"-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
        b"Content-Length: 0\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: xchunked\r\n",
        b"Transfer-Encoding : chunked\r\n",
        b"Transfer-Encoding:\r\n",
        b"X-Folded: a\r\n b\r\n",
        b"Not a field line\r\n",
    ],
)
def test_ambiguous_framing_is_refused_and_the_connection_closed(
    listener: tuple[str, int], framing: bytes
) -> None:
    request = b"GET /cas/crt/ca.crt.pem HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n"
    answers = converse(listener, request + b"0\r\n\r\n" + SMUGGLED + LAST)
    assert [status for status, _ in answers] == [400]


@pytest.mark.parametrize(
    "tail",
    [
        b"0x0\r\n\r\n",
        b"+0\r\n\r\n",
        b" 0\r\n\r\n",
        b"0 \r\n\r\n",
        b"0;\r\n\r\n",
        b'0;a="unterminated\r\n\r\n',
        b"0\n\r\n",
        b"0\r\n\n",
        b"00000000000000000\r\n\r\n",
        b"0;" + b"x" * 9000 + b"\r\n\r\n",
        b"0\r\n" + b"X-Long: " + b"v" * 9000 + b"\r\n\r\n",
        b"0\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
        b"0\r\nX-Bad Name: 1\r\n\r\n",
        b"0\r\n folded: 1\r\n\r\n",
    ],
)
def test_malformed_chunked_framing_is_refused_and_the_connection_closed(
    listener: tuple[str, int], csr: bytes, tail: bytes
) -> None:
    answers = converse(listener, chunked_put(csr, tail) + SMUGGLED + LAST)
    assert answers == [(400, b"Invalid chunked encoding")]


def test_bare_lf_after_chunk_data_is_refused(listener: tuple[str, int]) -> None:
    request = b"PUT /cas/csr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    answers = converse(listener, request + b"3\r\nabc\n0\r\n\r\n" + LAST)
    assert answers == [(400, b"Invalid chunked encoding")]


@pytest.mark.parametrize("length", [b"+0", b" 0x0", b"\xb2", b"1_0", b""])
def test_a_length_that_is_not_plain_digits_ends_the_connection(
    listener: tuple[str, int], length: bytes
) -> None:
    """Read as the reference does (Python's int()), but never followed by another request."""
    request = b"GET /cas/crt/ca.crt.pem HTTP/1.1\r\nHost: x\r\nContent-Length: " + length
    answers = converse(listener, request + b"\r\n\r\n" + LAST)
    assert len(answers) == 1 and answers[0][0] in (200, 400)


def test_http_1_0_transfer_encoding_is_not_decoded_and_ends_the_connection(
    listener: tuple[str, int], csr: bytes
) -> None:
    """RFC 9112 6.1: HTTP/1.0 has no transfer codings; such a message closes the connection."""
    request = chunked_put(csr).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    answers = converse(listener, request + LAST)
    assert len(answers) == 1 and answers[0][0] in (400, 411)
