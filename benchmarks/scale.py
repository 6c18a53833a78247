"""Issuance rate and peak memory of caucased with many certificates already stored.

The CAS certificate table is filled (server stopped) with 0, 10,000 and 100,000 signed rows of
realistic size, then N CSRs are issued with C clients and the server's peak RSS is read.
Usage: .venv/bin/python benchmarks/scale.py [-n 400] [-c 8] [--sizes 0,10000,100000]
"""

from __future__ import annotations

import argparse
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

from common import implementations, make_csrs, wait_ready
from issuance import issue_all

from tests.support.servers import RunningServer, start_caucased

AUTO_APPROVE = ["--service-auto-approve-count", "1000000000"]


def fill_certificates(db: Path, size: int) -> None:
    """Add `size` signed rows, cloned from one real row, that stay stored for a year."""
    expiration = int(time.time()) + 365 * 86400
    with sqlite3.connect(db) as connection:
        csr, crt = connection.execute(
            "SELECT csr, crt FROM cascrt WHERE crt IS NOT NULL LIMIT 1"
        ).fetchone()
        connection.executemany(
            "INSERT INTO cascrt (id, key_id, expiration_date, csr, crt) VALUES (?, ?, ?, ?, ?)",
            (
                (secrets.randbits(63), secrets.token_hex(20).encode(), expiration, csr, crt)
                for _ in range(size)
            ),
        )


def peak_rss_mib(server: RunningServer) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=400, help="CSRs issued per measure")
    parser.add_argument("-c", type=int, default=8, help="concurrent clients")
    parser.add_argument("--sizes", default="0,10000,100000")
    parser.add_argument("--only", choices=("ours", "reference"), help="one implementation")
    args = parser.parse_args()
    csrs = make_csrs(args.n + 1)
    seed, csrs = csrs[0], csrs[1:]
    for name, command in implementations().items():
        if args.only and name != args.only:
            continue
        for size in (int(size) for size in args.sizes.split(",")):
            with tempfile.TemporaryDirectory() as workdir_name:
                workdir = Path(workdir_name)
                server = wait_ready(start_caucased(command, workdir, AUTO_APPROVE))
                issue_all(server.http_port, [seed], 1, keep_alive=True)
                server.stop()
                fill_certificates(workdir / "caucase.sqlite", size)
                server = wait_ready(
                    start_caucased(command, workdir, AUTO_APPROVE, http_port=server.http_port)
                )
                try:
                    rate = issue_all(server.http_port, csrs, args.c, keep_alive=True)
                    rss = peak_rss_mib(server)
                except AssertionError as error:
                    errors = [line for line in server.stderr().splitlines() if "Error" in line]
                    print(f"{name}: {size:>6} stored: failed (HTTP {error}): {errors[-1:]}")
                    continue
                finally:
                    server.stop()
            print(f"{name}: {size:>6} stored: {rate:.1f} certificates/s, peak RSS {rss:.1f} MiB")


if __name__ == "__main__":
    main()
