"""A minimal threaded wsgiref server answering "ok": the ceiling of any wsgiref-based server.

Run as its own process (as caucased is), so that it does not share the benchmark client's
interpreter lock. Prints its port on stdout once listening, then serves until terminated.
Usage: python benchmarks/trivial_server.py [--cert PEM --client-ca PEM]
"""

from __future__ import annotations

import argparse
import ssl
import sys
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128


def _app(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cert", help="key and certificate PEM: serve HTTPS")
    parser.add_argument("--client-ca", help="ask for client certificates issued by this")
    args = parser.parse_args()
    server = make_server("127.0.0.1", 0, _app, _ThreadingWSGIServer, _QuietHandler)
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert)
        if args.client_ca:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(args.client_ca)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
