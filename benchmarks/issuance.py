"""Issuance throughput of our caucased against the reference, and the machine's ceilings.

Each round starts a fresh server with auto-approval, submits N pre-generated CSRs to the CAS and
fetches each certificate, with C concurrent clients; rounds alternate the implementations.
Usage: .venv/bin/python benchmarks/issuance.py [-n 400] [-c 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics

from common import (
    Connection,
    implementations,
    make_csrs,
    requests_per_second,
    run_parallel,
    running,
    summary,
    tls_ceiling,
    trivial_server,
)


def issue_all(http_port: int, csrs: list[bytes], concurrency: int) -> float:
    """Certificates per second for submitting and fetching every CSR."""
    connections = [Connection("127.0.0.1", http_port) for _ in range(concurrency)]

    def worker(index: int, csr: object) -> None:
        connection = connections[index]
        status, response, _ = connection.request(
            "PUT",
            "/cas/csr",
            csr,
            {"Content-Type": "application/pkcs10"},  # type: ignore[arg-type]
        )
        assert status == 201, status
        status, _, body = connection.request("GET", "/cas/crt/" + response.headers["Location"])
        assert status == 200 and body.startswith(b"-----BEGIN CERTIFICATE"), status

    elapsed = run_parallel(csrs, worker, concurrency)
    for connection in connections:
        connection.close()
    return len(csrs) / elapsed


def ceilings(count: int, concurrency: int) -> tuple[float, float]:
    """Trivial HTTP requests/s, and HTTPS requests/s with a new RSA-2048 mutual handshake each."""
    with trivial_server() as port:
        http_rate = requests_per_second(port, count * 2, concurrency, None)
    return http_rate, tls_ceiling(count, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=400, help="CSRs per round")
    parser.add_argument("-c", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("ours", "reference"), help="one implementation")
    args = parser.parse_args()
    csrs = make_csrs(args.n)
    rates: dict[str, list[float]] = {}
    for round_index in range(args.rounds):
        for name, command in implementations().items():
            if args.only and name != args.only:
                continue
            with running(command, ["--service-auto-approve-count", str(args.n + 1)]) as server:
                rate = issue_all(server.http_port, csrs, args.c)
            rates.setdefault(name, []).append(rate)
            print(f"round {round_index + 1} {name}: {rate:.1f} certificates/s")
    http_rate, https_rate = ceilings(args.n, args.c)
    print(f"\nN={args.n} C={args.c} rounds={args.rounds}")
    for name, values in rates.items():
        print(f"{name:>10}: {summary(values)} certificates/s")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    if len(medians) == 2:
        print(f"     ratio: {medians['ours'] / medians['reference']:.2f}x the reference")
    print(f"HTTP ceiling: {http_rate:.0f} trivial requests/s -> {http_rate / 2:.0f} issuances/s")
    for name, median in medians.items():
        print(f"  {name} reach {100 * median / (http_rate / 2):.0f}% of that ceiling")
    print(
        f"HTTPS ceiling (new RSA-2048 mutual handshake per request): {https_rate:.0f} requests/s"
    )


if __name__ == "__main__":
    main()
