"""caucased's HTTP and HTTPS listeners: threaded wsgiref servers (http-api 1, 14, 15).

One thread per connection, taken from a pool of reusable ones (caucase.http.workers)
and never waited for. HTTP/1.1 clients keep their connection for further requests
(persistent connections, HTTP/1.1 replies) after each successful request whose body was
read in full; otherwise the reply is HTTP/1.0 and the connection closes after it, as for
HTTP/1.0 clients and `Connection: close`. On HTTPS the TLS handshake runs in the
connection's own thread with a timeout, so a stalled client never blocks the accept loop,
and the SSL context can be swapped while listening.
"""

from __future__ import annotations

import datetime
import functools
import os
import socket
import socketserver
import ssl
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, Callable, Optional, TextIO
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from cryptography import x509

from caucase import __version__
from caucase.clock import utcnow
from caucase.http.accept import AcceptPacing
from caucase.http.framing import ChunkedReader, ContinueReader, CountingReader
from caucase.http.metrics import Metrics
from caucase.http.workers import WorkerPool, limit_malloc_arenas

CONNECTION_TIMEOUT = 30.0
# How long an idle persistent connection waits for its next request.
KEEPALIVE_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
MAX_LINE = 65536
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\b": "\\b",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
ExcInfo = tuple[type[BaseException], BaseException, Optional[TracebackType]]

_output_lock = threading.Lock()


def escape_log_text(text: str) -> str:
    """Printable ASCII kept, the rest escaped as the access log format wants (http-api 15.1)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text  # the common case, without a loop over every character
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif " " <= char <= "~":
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


@functools.lru_cache(maxsize=4)
def _log_time_of(second: datetime.datetime) -> str:
    return second.strftime(f"%d/{_MONTHS[second.month - 1]}/%Y:%H:%M:%S +0000")


def _log_time(now: datetime.datetime) -> str:
    """The access log's time, formatted once per second (every request logs one)."""
    return _log_time_of(now.replace(microsecond=0))


def write_line(stream: TextIO, line: str) -> None:
    """Whole lines from concurrent threads, flushed at once (logs are read live)."""
    with _output_lock:
        stream.write(line)
        stream.flush()


class LoggingServerHandler(ServerHandler):
    """wsgiref's handler with the caucased error log format (http-api 15.2), replying
    HTTP/1.1 when the connection may serve another request."""

    keep_alive: Callable[[str, Any], bool] | None = None
    kept_alive = False

    def cleanup_headers(self) -> None:
        """Decided here, with the whole reply known, just before the status line is sent."""
        super().cleanup_headers()
        decide = self.keep_alive
        status, headers = str(getattr(self, "status", "")), getattr(self, "headers", {})
        self.kept_alive = decide is not None and decide(status, headers)
        self.http_version = "1.1" if self.kept_alive else "1.0"

    def log_exception(self, exc_info: ExcInfo) -> None:  # type: ignore[override]
        """The application answers its own errors, so what arrives here failed on the
        connection (a client cutting it, a truncated TLS stream): one line, no traceback."""
        now = utcnow().isoformat()
        environ: dict[str, Any] = getattr(self, "environ", {})
        client = environ.get("REMOTE_ADDR", "-")
        head = (
            f"[{now}] [pid {os.getpid()}:tid {threading.get_ident()}] "
            f"[client {client}] {exc_info[1]} \n"
        )
        if isinstance(exc_info[1], OSError):
            write_line(sys.stderr, head)
            return
        write_line(sys.stderr, head + "".join(traceback.format_exception(*exc_info)))


class CaucasedRequestHandler(WSGIRequestHandler):
    """Requests of one connection, access log on stdout, client certificate in the environ."""

    server_version = "caucased " + __version__
    sys_version = "Python/" + sys.version.split()[0]
    timeout = CONNECTION_TIMEOUT
    # Replies leave in one write (status, headers and body), without Nagle delays.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: CaucasedServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.connection_timeout)
        self.user = "-"
        self.client_cert_pem: str | None = None
        if isinstance(self.connection, ssl.SSLSocket):
            der = self.connection.getpeercert(binary_form=True)
            if der:
                self.client_cert_pem = ssl.DER_cert_to_PEM_cert(der)
                self.user = str(x509.load_der_x509_certificate(der).serial_number)

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        if self.server.is_https:
            environ["HTTPS"] = "on"
            environ["wsgi.url_scheme"] = "https"
            if self.client_cert_pem is not None:
                environ["SSL_CLIENT_CERT"] = self.client_cert_pem
        return environ

    def _framing_problem(self) -> str | None:
        """Why this request's end cannot be told for sure, or None (RFC 9112 6.1, 6.3).

        A field line we cannot parse, a folded one, both framings, two lengths, or a
        transfer coding other than chunked alone: a proxy may read any of these
        differently, so such a request is refused and its connection closed."""
        headers = self.headers
        if headers.defects or headers.get_payload():
            return "Malformed header field line"
        if any("\n" in value for value in headers.values()):
            return "Folded header field (RFC 9112 5.2)"
        lengths = headers.get_all("Content-Length") or []
        codings = headers.get_all("Transfer-Encoding") or []
        if lengths and codings:
            return "Both Content-Length and Transfer-Encoding"
        if len(lengths) > 1:
            return "More than one Content-Length"
        # HTTP/1.0 has no transfer codings: its body ends with the connection (RFC 9112 6.1).
        chunked = [coding.strip().lower() for coding in codings] == ["chunked"]
        if codings and self.request_version >= "HTTP/1.1" and not chunked:
            return "Transfer-Encoding other than chunked"
        return None

    def _body_stream(self, environ: dict[str, Any]) -> tuple[Any, Callable[[], bool]]:
        """The body stream for the application, and a test of whether it was read whole."""
        if self.request_version < "HTTP/1.1":
            return self.rfile, lambda: False
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            chunked = ChunkedReader(self.rfile)
            environ["wsgi.input_terminated"] = True
            stream: Any = chunked
            complete = chunked.finished
        else:
            counting = CountingReader(self.rfile)
            stream = counting
            length = str(self.headers.get("Content-Length", "0")).strip()
            # Only a plain decimal length (RFC 9112 6.3) lets the connection go on; the
            # application's own reading (int(), as the reference) may accept more.
            digits = length.isascii() and length.isdigit()
            complete = lambda: digits and counting.count == int(length)  # noqa: E731
        if environ.pop("HTTP_EXPECT", "").lower() == "100-continue":
            stream = ContinueReader(stream, self.wfile)
        return stream, complete

    def handle(self) -> None:
        """Requests in turn while the connection stays persistent."""
        if not self._handle_one():
            return
        self.connection.settimeout(self.server.keepalive_timeout)
        while True:
            try:
                self.wfile.flush()
                self.raw_requestline = self.rfile.readline(MAX_LINE + 1)
            except (OSError, ValueError):
                return  # idle connection timed out or closed by the client: no log
            if not self.raw_requestline:
                return
            self.connection.settimeout(self.server.connection_timeout)
            if not self._handle_one(read=False):
                return
            self.connection.settimeout(self.server.keepalive_timeout)

    def _handle_one(self, read: bool = True) -> bool:
        """wsgiref's request handling with our body stream and error log; True when the
        connection may serve another request."""
        if read:
            self.raw_requestline = self.rfile.readline(MAX_LINE + 1)
        if len(self.raw_requestline) > MAX_LINE:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return False
        if not self.parse_request():
            return False
        problem = self._framing_problem()
        if problem is not None:
            self.send_error(400, explain=problem)
            return False
        environ = self.get_environ()
        stream, body_complete = self._body_stream(environ)
        handler = LoggingServerHandler(
            stream,
            self.wfile,  # type: ignore[arg-type]
            sys.stderr,
            environ,
            multithread=True,
        )
        handler.request_handler = self  # type: ignore[attr-defined]
        wants_close = "close" in self.headers.get("Connection", "").lower()
        if self.request_version == "HTTP/1.1" and not wants_close:

            def keep_alive(status: str, headers: Any) -> bool:
                successful = status[:1] in ("1", "2", "3")
                return successful and "Content-Length" in headers and body_complete()

            handler.keep_alive = keep_alive
        handler.run(self.server.get_app())  # type: ignore[arg-type]
        return handler.kept_alive

    def _prefix(self) -> str:
        return f"{self.client_address[0]} - {self.user} [{_log_time(utcnow())}]"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        headers = getattr(self, "headers", None) or {}
        referrer = escape_log_text(headers.get("Referrer", "-"))
        agent = escape_log_text(headers.get("User-Agent", "-"))
        code = getattr(code, "value", code)
        line = escape_log_text(getattr(self, "requestline", ""))
        write_line(sys.stdout, f'{self._prefix()} "{line}" {code} {size} "{referrer}" "{agent}"\n')

    def log_message(self, format: str, *args: Any) -> None:
        write_line(sys.stdout, f"{self._prefix()} {escape_log_text(format % args)}\n")


class CaucasedServer(socketserver.ThreadingMixIn, WSGIServer):
    """Plain-HTTP listener: one daemon thread per connection, no join on close."""

    daemon_threads = True
    block_on_close = False
    is_https = False
    # socketserver's default backlog of 5 drops SYNs under a burst of connections (each
    # dropped one costs its client a 1 s retransmission).
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        connection_timeout: float = CONNECTION_TIMEOUT,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
    ) -> None:
        self.address_family = family
        self.connection_timeout = connection_timeout
        self.keepalive_timeout = keepalive_timeout
        self.workers = WorkerPool(f"connection {address[:2]}")
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        self.accept_pacing = AcceptPacing(f"{host}:{address[1]}", self.log_line)
        # Counts open connections and failed handshakes when set (--metrics-netloc).
        self.metrics: Metrics | None = None
        super().__init__(address, CaucasedRequestHandler, bind_and_activate=False)

    def get_request(self) -> tuple[Any, Any]:
        """accept(), paced while the process is short of descriptors (caucase.http.accept)."""
        try:
            accepted = super().get_request()
        except OSError as error:
            self.accept_pacing.failed(error)
            raise
        self.accept_pacing.accepted()
        return accepted

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a pooled thread (ThreadingMixIn would start one)."""
        self.workers.submit(lambda: self._serve_counted(request, client_address))

    def _serve_counted(self, request: Any, client_address: Any) -> None:
        metrics = self.metrics
        if metrics is None:
            self.process_request_thread(request, client_address)
            return
        scheme = "https" if self.is_https else "http"
        metrics.connection_opened(scheme)
        try:
            self.process_request_thread(request, client_address)
        finally:
            metrics.connection_closed(scheme)

    def server_close(self) -> None:
        super().server_close()
        self.workers.close()

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup of HTTPServer; IPv6 sockets are v6-only."""
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken or stalled connection is one log line, not a traceback."""
        self.log_line(f"[client {client_address[0]}] {sys.exc_info()[1]!r}")

    @staticmethod
    def log_line(message: str) -> None:
        write_line(sys.stderr, f"[{utcnow().isoformat()}] {message}\n")

    def listen(self) -> None:
        """Bind and start listening (OSError when the address is unusable)."""
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise


class CaucasedTLSServer(CaucasedServer):
    """HTTPS listener; `ssl_context` may be replaced at any time (new connections use it)."""

    is_https = True

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        context: ssl.SSLContext,
        connection_timeout: float = CONNECTION_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(address, family, connection_timeout)
        self.ssl_context = context
        self.handshake_timeout = handshake_timeout

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake in the connection thread, bounded in time; failures just drop it."""
        request.settimeout(self.handshake_timeout)
        try:
            tls = self.ssl_context.wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
        except OSError:
            return
        try:
            tls.do_handshake()
        except (OSError, ValueError):
            tls.close()
            if self.metrics is not None:
                self.metrics.tls_handshake_failed()
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            self.shutdown_request(tls)


def start_serving(servers: list[CaucasedServer], app: Callable[..., Any]) -> None:
    """Run each listener's accept loop in its own daemon thread."""
    limit_malloc_arenas()
    for server in servers:
        server.set_app(app)
        thread = threading.Thread(
            target=server.serve_forever, name=f"listener {server.server_address}", daemon=True
        )
        thread.start()


def stop_serving(servers: list[CaucasedServer]) -> None:
    """Stop every accept loop (in parallel) and close the listening sockets."""
    stoppers = [threading.Thread(target=server.shutdown) for server in servers]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()
    for server in servers:
        server.server_close()


__all__ = [
    "CaucasedServer",
    "CaucasedTLSServer",
    "escape_log_text",
    "start_serving",
    "stop_serving",
    "write_line",
]
