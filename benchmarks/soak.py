"""Memory of one long-running caucased under revocation churn, beside the reference.

For a given time, each implementation in turn serves rounds of: B auto-approved issuances
(each request on a new connection), B revocations of those serials by an authenticated user
over HTTPS (a new TLS handshake each), then one CRL fetch, with C concurrent clients. Its RSS
is printed against the number of revocations; at the end a fresh process is started on the
final database and its RSS after serving the CRL is printed too, so that what a long-running
process keeps beyond a fresh one shows.
Usage: .venv/bin/python benchmarks/soak.py [--duration 360] [-c 8] [--batch 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    Connection,
    client_tls_context,
    implementations,
    run_parallel,
    wait_ready,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.servers import RunningServer, make_user, start_caucased

AUTO_APPROVE = ["--service-auto-approve-count", "1000000000"]
# Distinct CSRs are signed with a few keys: generating an RSA key per CSR would make the
# client, not the server, the bottleneck (CAS key ids need not be unique).
KEY_COUNT = 8


def rss_mib(server: RunningServer) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def csr_for(key: rsa.RSAPrivateKey, common_name: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def issue(server: RunningServer, csrs: list[bytes], concurrency: int) -> list[int]:
    """Serials of the certificates issued for `csrs`, each request on a new connection."""
    serials: list[int] = []

    def worker(_index: int, csr: object) -> None:
        connection = Connection("127.0.0.1", server.http_port)
        headers = {"Content-Type": "application/pkcs10"}
        status, response, _ = connection.request("PUT", "/cas/csr", csr, headers)  # type: ignore[arg-type]
        connection.close()
        assert status == 201, status
        status, _, body = connection.request("GET", "/cas/crt/" + response.headers["Location"])
        connection.close()
        assert status == 200, status
        serials.append(x509.load_pem_x509_certificate(body).serial_number)

    run_parallel(csrs, worker, concurrency)
    return serials


def revoke(server: RunningServer, user: Path, serials: list[int], concurrency: int) -> None:
    context = client_tls_context(user)
    headers = {"Content-Type": "application/json"}

    def worker(_index: int, serial: object) -> None:
        connection = Connection("127.0.0.1", server.https_port, context)
        body = json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None})
        status, _, _ = connection.request("PUT", "/cas/crt/revoke", body.encode(), headers)
        connection.close()
        assert status == 204, status

    run_parallel(serials, worker, concurrency)


def fetch_crl(server: RunningServer) -> float:
    """Milliseconds for GET /cas/crl."""
    connection = Connection("127.0.0.1", server.http_port)
    started = time.perf_counter()
    status, _, body = connection.request("GET", "/cas/crl")
    elapsed = time.perf_counter() - started
    connection.close()
    assert status == 200 and b"X509 CRL" in body, status
    return elapsed * 1000


@dataclass
class Soak:
    name: str
    start_rss: float = 0.0
    samples: list[tuple[float, int, float, float]] = field(default_factory=list)
    fresh_rss: float = 0.0
    fresh_crl_ms: float = 0.0

    @property
    def revocations(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    @property
    def final_rss(self) -> float:
        return self.samples[-1][2] if self.samples else self.start_rss


def soak(
    name: str, command: list[str], args: argparse.Namespace, keys: list[rsa.RSAPrivateKey]
) -> Soak:
    result = Soak(name)
    with tempfile.TemporaryDirectory() as workdir_name:
        workdir = Path(workdir_name)
        server = wait_ready(start_caucased(command, workdir, AUTO_APPROVE))
        try:
            user = make_user(server, workdir / "user.pem")
            result.start_rss = rss_mib(server)
            print(f"{name}: RSS {result.start_rss:.1f} MiB at start")
            started = time.monotonic()
            rounds = 0
            while time.monotonic() - started < args.duration:
                base = rounds * args.batch
                csrs = [
                    csr_for(keys[i % KEY_COUNT], f"soak-{base + i}") for i in range(args.batch)
                ]
                revoke(server, user, issue(server, csrs, args.c), args.c)
                crl_ms = fetch_crl(server)
                rounds += 1
                sample = (time.monotonic() - started, rounds * args.batch, rss_mib(server), crl_ms)
                result.samples.append(sample)
                if rounds % args.every == 0:
                    print(
                        f"{name}: {sample[0]:6.0f} s {sample[1]:>7} revoked  "
                        f"RSS {sample[2]:6.1f} MiB  CRL fetch {crl_ms:7.1f} ms",
                        flush=True,
                    )
        finally:
            server.stop()
        server = wait_ready(
            start_caucased(command, workdir, AUTO_APPROVE, http_port=server.http_port)
        )
        try:
            result.fresh_crl_ms = fetch_crl(server)
            result.fresh_rss = rss_mib(server)
        finally:
            server.stop()
    return result


def report(results: list[Soak]) -> None:
    print()
    for result in results:
        grown = result.final_rss - result.start_rss
        per_entry = 1024 * grown / result.revocations if result.revocations else 0.0
        crl_times = [sample[3] for sample in result.samples]
        print(
            f"{result.name:>10}: {result.revocations} revocations, RSS {result.start_rss:.1f} -> "
            f"{result.final_rss:.1f} MiB ({per_entry:.2f} KiB per revoked entry); fresh process "
            f"on the final database {result.fresh_rss:.1f} MiB after its first CRL "
            f"({result.fresh_crl_ms:.0f} ms): long-running / fresh = "
            f"{result.final_rss / result.fresh_rss:.2f}"
        )
        if crl_times:
            print(
                f"{'':>10}  CRL fetch after each round: first {crl_times[0]:.1f} ms, "
                f"last {crl_times[-1]:.1f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=360, help="seconds per implementation")
    parser.add_argument("-c", type=int, default=8, help="concurrent clients")
    parser.add_argument("--batch", type=int, default=200, help="issuances, then revocations")
    parser.add_argument("--every", type=int, default=5, help="print every this many rounds")
    parser.add_argument("--only", choices=("ours", "reference"), help="one implementation")
    args = parser.parse_args()
    keys = [
        rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(KEY_COUNT)
    ]
    results = [
        soak(name, command, args, keys)
        for name, command in implementations().items()
        if not args.only or name == args.only
    ]
    report(results)


if __name__ == "__main__":
    main()
