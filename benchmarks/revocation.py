"""Revocation throughput by an authenticated user, and CRL generation time by CRL size.

Part 1: C clients revoke serials over HTTPS with a user certificate (each request is a new
TLS handshake, as with the reference client). Part 2: the revoked table is filled with 2,000,
20,000 and 100,000 entries (directly in SQLite, server stopped), then the first CRL fetch
(regeneration) and later fetches (cached) are timed.
Usage: .venv/bin/python benchmarks/revocation.py [-n 400] [-c 8] [--sizes 2000,20000,100000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from common import (
    Connection,
    client_tls_context,
    implementations,
    run_parallel,
    summary,
)

from tests.servers import RunningServer, make_user, start_caucased


def revocations_per_second(
    server: RunningServer, user: Path, count: int, concurrency: int
) -> float:
    context = client_tls_context(user)
    headers = {"Content-Type": "application/json"}

    def worker(_index: int, serial: object) -> None:
        connection = Connection("127.0.0.1", server.https_port, context)
        body = json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None})
        status, _, _ = connection.request("PUT", "/cas/crt/revoke", body.encode(), headers)
        connection.close()
        assert status == 204, status

    return count / run_parallel(range(1, count + 1), worker, concurrency)


def fill_revocations(db: Path, size: int) -> None:
    """Replace the CAS revocations with `size` entries that expire in a year."""
    now = int(time.time())
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM casrevoked")
        connection.executemany(
            "INSERT INTO casrevoked (serial, revocation_date, expiration_date) VALUES (?, ?, ?)",
            ((str(10**20 + index), now, now + 365 * 86400) for index in range(size)),
        )


def crl_fetch_times(server: RunningServer, repeat: int = 20) -> tuple[float, list[float]]:
    """(first fetch seconds, later fetch seconds)."""
    times = []
    for _ in range(repeat + 1):
        connection = Connection("127.0.0.1", server.http_port)
        started = time.perf_counter()
        status, _, body = connection.request("GET", "/cas/crl")
        times.append(time.perf_counter() - started)
        connection.close()
        assert status == 200 and b"X509 CRL" in body, status
    return times[0], times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=400, help="revocations to time")
    parser.add_argument("-c", type=int, default=8, help="concurrent clients")
    parser.add_argument("--sizes", default="2000,20000,100000")
    parser.add_argument("--only", choices=("ours", "reference"), help="one implementation")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    for name, command in implementations().items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory() as workdir_name:
            workdir = Path(workdir_name)
            server = start_caucased(command, workdir)
            try:
                user = make_user(server, workdir / "user.pem")
                rate = revocations_per_second(server, user, args.n, args.c)
            finally:
                server.stop()
            print(f"{name}: {rate:.1f} revocations/s (N={args.n}, C={args.c})")
            for size in sizes:
                fill_revocations(workdir / "caucase.sqlite", size)
                server = start_caucased(command, workdir, http_port=server.http_port)
                try:
                    first, later = crl_fetch_times(server)
                finally:
                    server.stop()
                print(
                    f"{name}: {size:>6} revoked: first CRL fetch {first * 1000:.1f} ms, "
                    f"cached {statistics.median(later) * 1000:.2f} ms "
                    f"(all cached: {summary([value * 1000 for value in later])} ms)"
                )


if __name__ == "__main__":
    main()
