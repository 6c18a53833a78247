"""Issuance throughput of our caucased against the reference, and the machine's ceilings.

Each round starts a fresh server with auto-approval, submits N pre-generated CSRs to the CAS and
fetches each certificate, with C concurrent clients; rounds alternate the implementations and a
trivial threaded wsgiref server (its own process), so that every ratio compares figures of one
run. By default each request opens a new connection, as the reference's tools and most scripts
do (--new-connections); --keep-alive measures persistent connections instead, and --both
measures both modes in every round. --operability compares our caucased without and
with --metrics-netloc and --audit-log (scraped every second meanwhile, as Prometheus
would), alternating within each round (issue 13's target: at most 10% slower).
Usage: .venv/bin/python benchmarks/issuance.py [-n 400] [-c 8] [--rounds 3] [--both]
       .venv/bin/python benchmarks/issuance.py --operability [-n 400] [-c 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import statistics
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    Connection,
    cpu_seconds,
    implementations,
    make_csrs,
    requests_per_second,
    run_parallel,
    running,
    summary,
    tls_ceiling,
    trivial_server,
)

from tests.support.servers import OUR_BIN, RunningServer, free_port

NEW = "new connections"
KEEP_ALIVE = "keep-alive"


# How many times a refused request (the reference answers 500 when its SQLite database is
# locked by another of its threads) is sent again before the run fails.
RETRIES = 10


def issue_all(
    http_port: int,
    csrs: list[bytes],
    concurrency: int,
    keep_alive: bool,
    refused: list[str] | None = None,
) -> float:
    """Certificates per second for submitting and fetching every CSR; with `keep_alive` each
    client keeps its connection, otherwise every request opens its own. A request answered
    500 is sent again (up to RETRIES times), its status appended to `refused`."""
    connections = [Connection("127.0.0.1", http_port) for _ in range(concurrency)]
    headers = {"Content-Type": "application/pkcs10"}

    def send(
        index: int, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, Any, bytes]:
        for _ in range(RETRIES):
            connection = connections[index]
            status, response, data = connection.request(
                method, path, body, headers if body else None
            )
            if not keep_alive:
                connection.close()
            if status != 500:
                return status, response, data
            if refused is not None:
                refused.append(f"{method} {path.rsplit('/', 1)[0]}: {status}")
        raise AssertionError(f"{method} {path}: refused {RETRIES} times")

    def worker(index: int, csr: object) -> None:
        status, response, _ = send(index, "PUT", "/cas/csr", csr)  # type: ignore[arg-type]
        assert status == 201, status
        status, _, body = send(index, "GET", "/cas/crt/" + response.headers["Location"])
        assert status == 200 and body.startswith(b"-----BEGIN CERTIFICATE"), status

    elapsed = run_parallel(csrs, worker, concurrency)
    for connection in connections:
        connection.close()
    return len(csrs) / elapsed


def trivial_issuances(count: int, concurrency: int) -> float:
    """The issuance ceiling of a trivial wsgiref server: half its rate of requests, each on
    a new connection."""
    with trivial_server() as port:
        return requests_per_second(port, count * 2, concurrency, None) / 2


@contextlib.contextmanager
def scraped(port: int) -> Iterator[list[int]]:
    """Scrape /metrics every second until the block ends; yields the scrape count."""
    done = threading.Event()
    count = [0]

    def scrape() -> None:
        while not done.wait(1.0):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", "/metrics")
                assert connection.getresponse().read()
                count[0] += 1
            finally:
                connection.close()

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        yield count
    finally:
        done.set()
        thread.join()


def operability(args: argparse.Namespace, csrs: list[bytes]) -> None:
    """Our issuance rate without, then with, metrics and the audit log, in every round,
    and caucased's CPU time per certificate either way."""
    command = [str(OUR_BIN / "caucased")]
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    auto_approve = ["--service-auto-approve-count", str(args.n + 1)]

    def measure(mode: str, server: RunningServer) -> None:
        before = cpu_seconds(server)
        rates[mode].append(issue_all(server.http_port, csrs, args.c, False))
        cpu[mode].append(1000 * (cpu_seconds(server) - before) / len(csrs))

    for round_index in range(args.rounds):
        # Alternate which goes first, so that neither always meets a warmer machine.
        for mode in ("off", "on") if round_index % 2 == 0 else ("on", "off"):
            if mode == "off":
                with running(command, auto_approve) as server:
                    measure(mode, server)
                continue
            with tempfile.TemporaryDirectory() as logs:
                port = free_port()
                audit = Path(logs) / "audit.log"
                extra = [*auto_approve, "--metrics-netloc", f"127.0.0.1:{port}"]
                extra += ["--audit-log", str(audit)]
                with running(command, extra) as server, scraped(port) as scrapes:
                    measure(mode, server)
                lines = len(audit.read_bytes().splitlines())
        print(
            f"round {round_index + 1}: off {rates['off'][-1]:.1f}, on {rates['on'][-1]:.1f} "
            f"certificates/s; caucased CPU off {cpu['off'][-1]:.2f}, on {cpu['on'][-1]:.2f} "
            f"ms per certificate ({scrapes[0]} scrapes, {lines} audit lines)"
        )
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    print(f"\nN={args.n} C={args.c} rounds={args.rounds}")
    print(f"metrics and audit log off: {summary(rates['off'])} certificates/s")
    print(f"metrics and audit log on:  {summary(rates['on'])} certificates/s")
    print(f"caucased CPU off: {summary(cpu['off'])} ms per certificate")
    print(f"caucased CPU on:  {summary(cpu['on'])} ms per certificate")
    print(f"on / off: {on / off:.3f} ({100 * (1 - on / off):+.1f}% slower), "
          f"CPU {cpu_on / cpu_off:.3f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=400, help="CSRs per round")
    parser.add_argument("-c", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("ours", "reference"), help="one implementation")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--new-connections", dest="modes", action="store_const", const=[NEW])
    mode.add_argument("--keep-alive", dest="modes", action="store_const", const=[KEEP_ALIVE])
    mode.add_argument("--both", dest="modes", action="store_const", const=[NEW, KEEP_ALIVE])
    parser.add_argument("--no-tls-ceiling", action="store_true", help="skip the HTTPS ceiling")
    parser.add_argument(
        "--operability", action="store_true", help="ours without vs with metrics and audit log"
    )
    args = parser.parse_args()
    modes = args.modes or [NEW]
    csrs = make_csrs(args.n)
    if args.operability:
        operability(args, csrs)
        return
    rates: dict[tuple[str, str], list[float]] = {}
    ceiling: list[float] = []
    for round_index in range(args.rounds):
        ceiling.append(trivial_issuances(args.n, args.c))
        print(f"round {round_index + 1} trivial server: {ceiling[-1]:.1f} issuances/s")
        for name, command in implementations().items():
            if args.only and name != args.only:
                continue
            for mode_name in modes:
                auto_approve = ["--service-auto-approve-count", str(args.n + 1)]
                refused: list[str] = []
                with running(command, auto_approve) as server:
                    rate = issue_all(
                        server.http_port, csrs, args.c, mode_name == KEEP_ALIVE, refused
                    )
                rates.setdefault((name, mode_name), []).append(rate)
                retried = f" ({len(refused)} requests refused, sent again)" if refused else ""
                print(
                    f"round {round_index + 1} {name}, {mode_name}: {rate:.1f} certificates/s"
                    + retried
                )
    report(args, modes, rates, ceiling)


def report(
    args: argparse.Namespace,
    modes: list[str],
    rates: dict[tuple[str, str], list[float]],
    ceiling: list[float],
) -> None:
    print(f"\nN={args.n} C={args.c} rounds={args.rounds}")
    ceiling_median = statistics.median(ceiling)
    print(
        f"trivial wsgiref server, new connections: {summary(ceiling)} issuances/s "
        "(two requests each)"
    )
    for mode_name in modes:
        medians = {
            name: statistics.median(values)
            for (name, mode), values in rates.items()
            if mode == mode_name
        }
        for name in medians:
            print(f"{name:>10}, {mode_name}: {summary(rates[name, mode_name])} certificates/s")
        if len(medians) == 2:
            ratio = medians["ours"] / medians["reference"]
            print(f"{'':>10}  ratio, {mode_name}: {ratio:.2f}x the reference")
        for name, median in medians.items():
            print(
                f"{'':>10}  {name}, {mode_name}: "
                f"{100 * median / ceiling_median:.0f}% of the trivial-server ceiling"
            )
    if not args.no_tls_ceiling:
        https_rate = tls_ceiling(args.n, args.c)
        print(f"HTTPS ceiling (new RSA-2048 mutual handshake per request): {https_rate:.0f}/s")


if __name__ == "__main__":
    main()
