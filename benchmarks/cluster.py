"""Issuance throughput on each storage engine, in one run: SQLite with one caucased,
PostgreSQL with one caucased, and PostgreSQL with three caucased behind nginx (a TCP load
balancer, tests/support/cluster.py).

Each round starts fresh servers (a new database) with auto-approval, submits N pre-generated
CSRs to the CAS and fetches each certificate, with C concurrent clients; rounds alternate the
deployments. PostgreSQL runs as the tests run it (tests/support/postgres.py), fsync on.
Targets: one PostgreSQL node at least 70% of SQLite, three nodes at least as fast as one.
Usage: .venv/bin/python benchmarks/cluster.py [-n 300] [-c 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import OUR_BIN, make_csrs, summary
from issuance import issue_all

from tests.support.cluster import start_cluster
from tests.support.postgres import PostgresServer, running_server
from tests.support.servers import start_caucased

CAUCASED = [str(OUR_BIN / "caucased")]


@contextmanager
def sqlite_node(_: PostgresServer, args: list[str]) -> Iterator[int]:
    with tempfile.TemporaryDirectory() as workdir:
        server = start_caucased(CAUCASED, Path(workdir), args)
        try:
            yield server.http_port
        finally:
            server.stop()


@contextmanager
def postgresql_node(postgres: PostgresServer, args: list[str]) -> Iterator[int]:
    url = postgres.new_database()
    with tempfile.TemporaryDirectory() as workdir:
        server = start_caucased(CAUCASED, Path(workdir), args, db=url)
        try:
            yield server.http_port
        finally:
            server.stop()
            postgres.drop_database(url)


@contextmanager
def postgresql_cluster(postgres: PostgresServer, args: list[str]) -> Iterator[int]:
    url = postgres.new_database()
    with tempfile.TemporaryDirectory() as workdir:
        cluster = start_cluster(Path(workdir), url, 3, args)
        try:
            yield cluster.balancer.http_port
        finally:
            cluster.stop()
            postgres.drop_database(url)


DEPLOYMENTS = {
    "SQLite, 1 node": sqlite_node,
    "PostgreSQL, 1 node": postgresql_node,
    "PostgreSQL, 3 nodes": postgresql_cluster,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=300, help="CSRs per round")
    parser.add_argument("-c", type=int, default=12, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    csrs = make_csrs(args.n)
    server_args = ["--service-auto-approve-count", str(args.n + 1)]
    rates: dict[str, list[float]] = {}
    with running_server() as postgres:
        for round_index in range(args.rounds):
            for name, deployment in DEPLOYMENTS.items():
                with deployment(postgres, server_args) as port:
                    rate = issue_all(port, csrs, args.c, keep_alive=False)
                rates.setdefault(name, []).append(rate)
                print(f"round {round_index + 1} {name}: {rate:.1f} certificates/s")
    print(f"\nN={args.n} C={args.c} rounds={args.rounds}")
    for name, values in rates.items():
        print(f"{name:>20}: {summary(values)} certificates/s")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    sqlite, one, three = (medians[name] for name in DEPLOYMENTS)
    print(f"PostgreSQL 1 node / SQLite: {one / sqlite:.2f} (target >= 0.70)")
    print(f"PostgreSQL 3 nodes / 1 node: {three / one:.2f} (target >= 1.00)")


if __name__ == "__main__":
    main()
