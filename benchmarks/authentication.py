"""Authenticated request cost by the number of revoked user certificates.

For 0 and 100,000 CAU revocations (written directly in SQLite, server stopped): the rate of
authenticated GET /cau/csr requests by C clients over HTTPS (a new TLS handshake each, as
with the reference client), then the time of the first authenticated request that follows
one more revocation (the reference re-signs its CRLs there, since it authenticates against
them). Ours and the reference in the same run; the TLS ceiling closes the report.
Usage: .venv/bin/python benchmarks/authentication.py [-n 300] [-c 8] [--sizes 0,100000]
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
    tls_ceiling,
    wait_ready,
)

from tests.support.servers import RunningServer, make_user, start_caucased


def fill_user_revocations(db: Path, size: int) -> None:
    """Replace the CAU revocations with `size` entries (none of them the user's)."""
    now = int(time.time())
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM caurevoked")
        connection.executemany(
            "INSERT INTO caurevoked (serial, revocation_date, expiration_date) VALUES (?, ?, ?)",
            ((str(10**20 + index), now, now + 365 * 86400) for index in range(size)),
        )
    connection.close()


def authenticated_get(server: RunningServer, user: Path) -> float:
    """Seconds for one authenticated GET /cau/csr on a new connection."""
    connection = Connection("127.0.0.1", server.https_port, client_tls_context(user))
    started = time.perf_counter()
    status, _, _ = connection.request("GET", "/cau/csr")
    elapsed = time.perf_counter() - started
    connection.close()
    assert status == 200, status
    return elapsed


def authenticated_rate(server: RunningServer, user: Path, count: int, concurrency: int) -> float:
    context = client_tls_context(user)

    def worker(_index: int, _job: object) -> None:
        connection = Connection("127.0.0.1", server.https_port, context)
        status, _, _ = connection.request("GET", "/cau/csr")
        connection.close()
        assert status == 200, status

    return count / run_parallel(range(count), worker, concurrency)


def revoke_user_serial(server: RunningServer, user: Path, serial: int) -> None:
    connection = Connection("127.0.0.1", server.https_port, client_tls_context(user))
    body = json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None})
    status, _, _ = connection.request(
        "PUT", "/cau/crt/revoke", body.encode(), {"Content-Type": "application/json"}
    )
    connection.close()
    assert status == 204, status


def measure(
    name: str, command: list[str], sizes: list[int], count: int, concurrency: int, after: int
) -> dict[int, float]:
    rates = {}
    with tempfile.TemporaryDirectory() as workdir_name:
        workdir = Path(workdir_name)
        server = wait_ready(start_caucased(command, workdir))
        try:
            user = make_user(server, workdir / "user.pem")
        finally:
            server.stop()
        for size in sizes:
            fill_user_revocations(workdir / "caucase.sqlite", size)
            server = wait_ready(start_caucased(command, workdir, http_port=server.http_port))
            try:
                first = authenticated_get(server, user)
                rates[size] = authenticated_rate(server, user, count, concurrency)
                following = []
                for index in range(after):
                    revoke_user_serial(server, user, 10**30 + size + index)
                    following.append(authenticated_get(server, user))
            finally:
                server.stop()
            print(
                f"{name}: {size:>6} revoked: {rates[size]:.1f} authenticated requests/s "
                f"(N={count}, C={concurrency}); first request {first * 1000:.1f} ms; "
                f"request right after a revocation {statistics.median(following) * 1000:.1f} ms "
                f"(median of {after})"
            )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=300, help="authenticated requests to time")
    parser.add_argument("-c", type=int, default=8, help="concurrent clients")
    parser.add_argument("--sizes", default="0,100000", help="revoked user certificates")
    parser.add_argument("--after", type=int, default=3, help="revocations, each then timed")
    parser.add_argument("--only", choices=("ours", "reference"), help="one implementation")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    results = {}
    for name, command in implementations().items():
        if args.only is None or name == args.only:
            results[name] = measure(name, command, sizes, args.n, args.c, args.after)
    for name, rates in results.items():
        if len(sizes) > 1 and rates[sizes[0]]:
            ratio = rates[sizes[-1]] / rates[sizes[0]]
            print(f"{name}: rate at {sizes[-1]} revoked is {ratio:.2f}x the rate at {sizes[0]}")
    print(
        f"TLS ceiling (new RSA-2048 mutual handshake per request): "
        f"{tls_ceiling(args.n, args.c):.0f} requests/s"
    )


if __name__ == "__main__":
    main()
