"""Request body framing of caucased's listeners: `100 Continue`, chunked bodies read as
RFC 9112 7.1 says (the whole trailer section, bounded), and the count of body bytes the
application read (a connection is kept only when the body was read whole).
"""

from __future__ import annotations

import re
from typing import Any

# Bounds of the chunked framing: one chunk-size or trailer line, and the trailer fields.
MAX_CHUNK_LINE = 8192
MAX_TRAILER_FIELDS = 100
# RFC 9110 5.6.2 token, 5.6.4 quoted-string; RFC 9112 7.1.1 chunk-ext, 5 field-line.
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_EXT_VALUE = rb"(?:" + _TOKEN + rb"|" + _QUOTED + rb")"
_CHUNK_EXT = rb"[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*" + _EXT_VALUE + rb")?"
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:" + _CHUNK_EXT + rb")*\r\n")
_FIELD_LINE = re.compile(_TOKEN + rb":[\t !-~\x80-\xff]*\r\n")


class ContinueReader:
    """Request body stream sending `100 Continue` before the first read (http-api 14.2)."""

    def __init__(self, stream: Any, wfile: Any) -> None:
        self._stream = stream
        self._wfile: Any = wfile

    def _announce(self) -> None:
        if self._wfile is not None:
            self._wfile.write(b"HTTP/1.0 100 Continue\r\n\r\n")
            self._wfile.flush()
            self._wfile = None

    def read(self, size: int = -1) -> bytes:
        self._announce()
        data: bytes = self._stream.read(size)
        return data

    def readline(self, size: int = -1) -> bytes:
        self._announce()
        line: bytes = self._stream.readline(size)
        return line


class ChunkedReader:
    """Decoded `Transfer-Encoding: chunked` body (RFC 9112 7.1, http-api 14.3).

    Strict: chunk-size lines and trailer fields are matched against the RFC grammar with
    CRLF line ends, sizes have at most 16 hex digits, and the trailer section is read in
    full up to its empty line, so that what follows the body is the next request and
    nothing else (a proxy reading the framing otherwise could smuggle one past us).
    Anything else raises ValueError: the request is answered 400 and the connection closed."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._left = 0
        self._done = False

    def _line(self) -> bytes:
        line: bytes = self._stream.readline(MAX_CHUNK_LINE + 1)
        if len(line) > MAX_CHUNK_LINE:
            raise ValueError("chunk-size or trailer line too long")
        if not line.endswith(b"\r\n"):
            raise ValueError("chunked body truncated or not CRLF-terminated")
        return line

    def _next_chunk(self) -> None:
        match = _CHUNK_SIZE_LINE.fullmatch(self._line())
        if match is None:
            raise ValueError("invalid chunk-size line")
        self._left = int(match.group(1), 16)
        if self._left == 0:
            self._read_trailer_section()
            self._done = True

    def _read_trailer_section(self) -> None:
        """Trailer fields are read and discarded: caucase uses none (RFC 9112 7.1.2)."""
        for _ in range(MAX_TRAILER_FIELDS + 1):
            line = self._line()
            if line == b"\r\n":
                return
            if _FIELD_LINE.fullmatch(line) is None:
                raise ValueError("invalid trailer field")
        raise ValueError("too many trailer fields")

    def finished(self) -> bool:
        """Whether the whole body, up to the end of its trailer section, was read."""
        return self._done

    def _end_chunk(self) -> None:
        if self._stream.read(2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")

    def read(self, size: int = -1) -> bytes:
        parts = []
        while not self._done and size != 0:
            if self._left == 0:
                self._next_chunk()
                continue
            wanted = self._left if size < 0 else min(size, self._left)
            data: bytes = self._stream.read(wanted)
            if not data:
                raise ValueError("body truncated inside a chunk")
            parts.append(data)
            self._left -= len(data)
            size = size - len(data) if size > 0 else size
            if self._left == 0:
                self._end_chunk()
        return b"".join(parts)

    def readline(self, size: int = -1) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n") and (size < 0 or len(line) < size):
            char = self.read(1)
            if not char:
                break
            line += char
        return bytes(line)


class CountingReader:
    """Request body stream remembering how many bytes the application read."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size)
        self.count += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        line: bytes = self._stream.readline(size)
        self.count += len(line)
        return line
