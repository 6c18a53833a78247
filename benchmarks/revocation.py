"""Revocation throughput by an authenticated user, and CRL generation time by CRL size.

Part 1: C clients revoke serials over HTTPS with a user certificate (each request is a new
TLS handshake, as with the reference client), in rounds alternating the implementations and
the TLS handshake ceilings of a trivial server (RSA-2048 and P-256 server and client keys),
so that the ratios compare figures of one run. Part 2: the revoked table is filled with 2,000,
20,000 and 100,000 entries (directly in SQLite, server stopped), then the first CRL fetch
after a restart, later fetches (cached), and fetches that follow one more revocation
(regeneration of a big CRL while serving) are timed.
Usage: .venv/bin/python benchmarks/revocation.py [-n 400] [-c 8] [--rounds 3]
       [--sizes 2000,20000,100000]
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

from caucase.crypto import keys
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


CEILING_KEYS = {"RSA-2048": keys.KeyType.RSA, "P-256": keys.KeyType.EC_P256}


def revocation_rounds(args: argparse.Namespace) -> None:
    """Revocations/s of each implementation and the TLS ceilings, alternating, per round."""
    rates: dict[str, list[float]] = {}
    for round_index in range(args.rounds):
        for label, key_type in CEILING_KEYS.items():
            rate = tls_ceiling(args.n, args.c, key_type)
            rates.setdefault(f"TLS ceiling {label}", []).append(rate)
            print(f"round {round_index + 1} TLS ceiling, {label}: {rate:.0f} requests/s")
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
            rates.setdefault(name, []).append(rate)
            print(f"round {round_index + 1} {name}: {rate:.1f} revocations/s")
    print(f"\nN={args.n} C={args.c} rounds={args.rounds}, each revocation a new handshake")
    for name, values in rates.items():
        print(f"{name:>22}: {summary(values)} /s")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    if "ours" in medians and "reference" in medians:
        print(f"revocation ratio: {medians['ours'] / medians['reference']:.2f}x the reference")
    for name in ("ours", "reference"):
        if name in medians:
            ceiling = medians["TLS ceiling RSA-2048"]
            print(f"  {name} reach {100 * medians[name] / ceiling:.0f}% of the RSA-2048 ceiling")


def crl_sizes(args: argparse.Namespace, sizes: list[int]) -> None:
    """First, cached and regenerated CRL fetch times with `sizes` revoked entries."""
    for name, command in implementations().items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory() as workdir_name:
            workdir = Path(workdir_name)
            server = wait_ready(start_caucased(command, workdir))
            try:
                user = make_user(server, workdir / "user.pem")
            finally:
                server.stop()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=400, help="revocations to time")
    parser.add_argument("-c", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="2000,20000,100000", help="empty: skip part 2")
    parser.add_argument("--only", choices=("ours", "reference"), help="one implementation")
    args = parser.parse_args()
    if args.rounds:
        revocation_rounds(args)
    sizes = [int(size) for size in args.sizes.split(",") if size]
    if sizes:
        crl_sizes(args, sizes)


if __name__ == "__main__":
    main()
