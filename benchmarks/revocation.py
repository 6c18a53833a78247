"""Revocation throughput by an authenticated user, and CRL generation time by CRL size.

Part 1: C clients revoke serials over HTTPS with a user certificate (each request is a new
TLS handshake, as with the reference client). Part 2: the revoked table is filled with 2,000,
20,000 and 100,000 entries (directly in SQLite, server stopped), then the first CRL fetch
after a restart, later fetches (cached), and fetches that follow one more revocation
(regeneration of a big CRL while serving) are timed. Finally the TLS ceiling is measured.
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
    tls_ceiling,
    wait_ready,
)

from tests.support.servers import RunningServer, make_user, start_caucased


def revoke(server: RunningServer, user: Path, serial: int) -> None:
    connection = Connection("127.0.0.1", server.https_port, client_tls_context(user))
    body = json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None})
    status, _, _ = connection.request(
        "PUT", "/cas/crt/revoke", body.encode(), {"Content-Type": "application/json"}
    )
    connection.close()
    assert status == 204, status


def fetch_after_revocation(server: RunningServer, user: Path, serial: int) -> float:
    """Seconds for the CRL fetch that follows one more revocation (a regeneration)."""
    revoke(server, user, serial)
    connection = Connection("127.0.0.1", server.http_port)
    started = time.perf_counter()
    status, _, body = connection.request("GET", "/cas/crl")
    elapsed = time.perf_counter() - started
    connection.close()
    assert status == 200 and b"X509 CRL" in body, status
    return elapsed


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
    rates: dict[str, float] = {}
    for name, command in implementations().items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory() as workdir_name:
            workdir = Path(workdir_name)
            server = wait_ready(start_caucased(command, workdir))
            try:
                user = make_user(server, workdir / "user.pem")
                rate = revocations_per_second(server, user, args.n, args.c)
            finally:
                server.stop()
            rates[name] = rate
            print(f"{name}: {rate:.1f} revocations/s (N={args.n}, C={args.c})")
            for size in sizes:
                fill_revocations(workdir / "caucase.sqlite", size)
                server = wait_ready(start_caucased(command, workdir, http_port=server.http_port))
                try:
                    first, later = crl_fetch_times(server)
                    regenerations = [
                        fetch_after_revocation(server, user, 10**30 + size + index)
                        for index in range(3)
                    ]
                finally:
                    server.stop()
                print(
                    f"{name}: {size:>6} revoked: first CRL fetch {first * 1000:.1f} ms, "
                    f"cached {statistics.median(later) * 1000:.2f} ms "
                    f"(all cached: {summary([value * 1000 for value in later])} ms), "
                    f"after one more revocation {statistics.median(regenerations) * 1000:.1f} ms"
                )
    ceiling = tls_ceiling(args.n, args.c)
    if len(rates) == 2:
        print(f"revocation ratio: {rates['ours'] / rates['reference']:.2f}x the reference")
    print(f"TLS ceiling (new RSA-2048 mutual handshake per request): {ceiling:.0f} requests/s")
    for name, rate in rates.items():
        print(f"  {name} reach {100 * rate / ceiling:.0f}% of that ceiling")


if __name__ == "__main__":
    main()
