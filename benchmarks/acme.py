"""ACME issuance against caucased's own /cas/csr issuance, in the same run.

Each round starts a fresh caucased (auto-approval on, for /cas/csr), registers C ACME
accounts whose credential pre-authorizes every name, then times N issuances each way
with C concurrent clients: an ACME one is new order, finalize and certificate download
with certbot's ``acme`` library (over HTTPS, kept alive, every request JWS-signed and its
nonce consumed); a /cas/csr one is PUT /cas/csr and GET /cas/crt/<id> (plain HTTP, kept
alive). CSRs (P-256, one key each; the CA signs with its own RSA key either way) are made
before timing. Besides the rates, caucased's CPU time per certificate is reported: the
client side (the acme library above all) shares the machine. Target: an ACME issuance
costs no more than 3 times a plain one.
Usage: .venv/bin/python benchmarks/acme.py [-n 200] [-c 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# This script has the acme library's name: its directory must not be on the path when
# that library is imported (benchmarks.common is reached from the repository root).
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [
    str(ROOT),
    *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"),
]

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from benchmarks.common import Connection, run_parallel, summary  # noqa: E402
from tests.support.acme_library import (  # noqa: E402
    LibraryClient,
    directory_url,
    https_ca_bundle,
    mint_eab,
)
from tests.support.servers import OUR_BIN, RunningServer, make_user, start_caucased  # noqa: E402


def make_csrs(count: int, prefix: str) -> list[bytes]:
    csrs = []
    for index in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"{prefix}-{index}.bench.test"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .sign(key, hashes.SHA256())
        )
        csrs.append(csr.public_bytes(serialization.Encoding.PEM))
    return csrs


@dataclass(frozen=True)
class Measure:
    rate: float
    """Issuances per second."""
    server_cpu: float
    """caucased's CPU time per issuance, in milliseconds."""


def cpu_seconds(server: RunningServer) -> float:
    """User and system CPU time the caucased process used so far."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(server: RunningServer, jobs: list[bytes], worker: Any, concurrency: int) -> Measure:
    cpu = cpu_seconds(server)
    elapsed = run_parallel(jobs, worker, concurrency)
    return Measure(len(jobs) / elapsed, 1000 * (cpu_seconds(server) - cpu) / len(jobs))


def acme_issuance(
    server: RunningServer, workdir: Path, csrs: list[bytes], concurrency: int
) -> Measure:
    """ACME orders completed, each with its own key: new order (and its authorization),
    finalize, certificate download."""
    user = make_user(server, workdir / "user.pem")
    bundle = https_ca_bundle(server, workdir / "https-ca.pem")
    clients = [
        LibraryClient.register(directory_url(server), bundle, mint_eab(server, user, "*"))
        for _ in range(concurrency)
    ]

    def worker(index: int, csr: object) -> None:
        acme = clients[index].acme
        order = acme.begin_finalization(acme.new_order(csr))  # type: ignore[arg-type]
        chain = acme._post_as_get(order.body.certificate).text
        assert chain.count("BEGIN CERTIFICATE") == 2

    return measured(server, csrs, worker, concurrency)


def csr_issuance(server: RunningServer, csrs: list[bytes], concurrency: int) -> Measure:
    """/cas/csr issuances: submit, then fetch."""
    connections = [Connection("127.0.0.1", server.http_port) for _ in range(concurrency)]

    def worker(index: int, csr: object) -> None:
        connection = connections[index]
        headers = {"Content-Type": "application/pkcs10"}
        status, response, _ = connection.request("PUT", "/cas/csr", csr, headers)  # type: ignore[arg-type]
        assert status == 201, status
        status, _, body = connection.request("GET", "/cas/crt/" + response.headers["Location"])
        assert status == 200 and body.startswith(b"-----BEGIN CERTIFICATE"), status

    measure = measured(server, csrs, worker, concurrency)
    for connection in connections:
        connection.close()
    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200, help="issuances of each kind per round")
    parser.add_argument("-c", type=int, default=4, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    acme_csrs, plain_csrs = make_csrs(args.n, "acme"), make_csrs(args.n, "plain")
    print(f"generated {2 * args.n} CSRs in {time.perf_counter() - started:.1f} s")
    results: dict[str, list[Measure]] = {"ACME": [], "/cas/csr": []}
    for round_index in range(args.rounds):
        with tempfile.TemporaryDirectory() as directory:
            workdir = Path(directory)
            server = start_caucased([OUR_BIN / "caucased"], workdir,
                                    ["--service-auto-approve-count", str(args.n + 1)])  # fmt: skip
            try:
                results["ACME"].append(acme_issuance(server, workdir, acme_csrs, args.c))
                results["/cas/csr"].append(csr_issuance(server, plain_csrs, args.c))
            finally:
                server.stop()
        print(f"round {round_index + 1}: " + ", ".join(
            f"{name} {found[-1].rate:.1f}/s ({found[-1].server_cpu:.1f} ms CPU)"
            for name, found in results.items()
        ))  # fmt: skip
    print(f"\nN={args.n} C={args.c} rounds={args.rounds}")
    for name, found in results.items():
        print(f"{name:>10}: {summary([m.rate for m in found])} certificates/s, caucased CPU "
              f"{summary([m.server_cpu for m in found])} ms per certificate")  # fmt: skip
    acme, plain = (results[name] for name in ("ACME", "/cas/csr"))
    rate_ratio = statistics.median(m.rate for m in plain) / statistics.median(m.rate for m in acme)
    cpu_ratio = statistics.median(m.server_cpu for m in acme) / statistics.median(
        m.server_cpu for m in plain
    )
    print(f"      cost: an ACME issuance takes {rate_ratio:.2f}x the time of a /cas/csr one and "
          f"{cpu_ratio:.2f}x caucased's CPU (target: <= 3x)")  # fmt: skip


if __name__ == "__main__":
    main()
