"""Memory of one long-running caucased under revocation churn, beside the reference.

For a given time, each implementation in turn serves rounds of: B auto-approved issuances
(each request on a new connection), B revocations of those serials by an authenticated user
over HTTPS (a new TLS handshake each), then one CRL fetch, with C concurrent clients. Its RSS
is printed against the number of revocations; at the end a fresh process is started on the
final database and its RSS after serving the CRL is printed too, so that what a long-running
process keeps beyond a fresh one shows. --prefill N stores N more revocations (directly in
SQLite, server stopped) before the soak, to reach a big CRL in a short run; RSS per revoked
entry is then counted from the RSS of the server on its empty database.
Usage: .venv/bin/python benchmarks/soak.py [--duration 360] [-c 8] [--batch 200] [--prefill 0]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
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


def issue(
    server: RunningServer, csrs: list[bytes], concurrency: int, errors: list[str]
) -> list[int]:
    """Serials of the certificates issued for `csrs`, each request on a new connection; a
    refused request (the reference answers 500 when its database is locked) is counted in
    `errors` and its CSR skipped."""
    serials: list[int] = []

    def worker(_index: int, csr: object) -> None:
        connection = Connection("127.0.0.1", server.http_port)
        headers = {"Content-Type": "application/pkcs10"}
        status, response, _ = connection.request("PUT", "/cas/csr", csr, headers)  # type: ignore[arg-type]
        connection.close()
        if status != 201:
            errors.append(f"PUT /cas/csr: {status}")
            return
        status, _, body = connection.request("GET", "/cas/crt/" + response.headers["Location"])
        connection.close()
        if status != 200:
            errors.append(f"GET /cas/crt: {status}")
            return
        serials.append(x509.load_pem_x509_certificate(body).serial_number)

    run_parallel(csrs, worker, concurrency)
    return serials


def revoke(
    server: RunningServer, user: Path, serials: list[int], concurrency: int, errors: list[str]
) -> int:
    """Revoke `serials` as an authenticated user; the number revoked (failures in `errors`)."""
    context = client_tls_context(user)
    headers = {"Content-Type": "application/json"}
    done: list[int] = []

    def worker(_index: int, serial: object) -> None:
        connection = Connection("127.0.0.1", server.https_port, context)
        body = json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None})
        status, _, _ = connection.request("PUT", "/cas/crt/revoke", body.encode(), headers)
        connection.close()
        if status == 204:
            done.append(1)
        else:
            errors.append(f"PUT /cas/crt/revoke: {status}")

    run_parallel(serials, worker, concurrency)
    return len(done)


def fetch_crl(server: RunningServer) -> float:
    """Milliseconds for GET /cas/crl."""
    connection = Connection("127.0.0.1", server.http_port)
    started = time.perf_counter()
    status, _, body = connection.request("GET", "/cas/crl")
    elapsed = time.perf_counter() - started
    connection.close()
    assert status == 200 and b"X509 CRL" in body, status
    return elapsed * 1000


def prefill(db: Path, count: int) -> None:
    """`count` revocations that stay stored for a year, as if revoked one by one."""
    now = int(time.time())
    with sqlite3.connect(db) as connection:
        connection.executemany(
            "INSERT INTO casrevoked (serial, revocation_date, expiration_date) VALUES (?, ?, ?)",
            ((str(10**20 + index), now, now + 365 * 86400) for index in range(count)),
        )
        connection.execute(
            "UPDATE cascounter SET value = value + ? WHERE name = 'crl_number'", (count,)
        )


@dataclass
class Soak:
    name: str
    keys: list[rsa.RSAPrivateKey]
    prefilled: int = 0
    empty_rss: float = 0.0
    start_rss: float = 0.0
    samples: list[tuple[float, int, float, float]] = field(default_factory=list)
    fresh_rss: float = 0.0
    fresh_crl_ms: float = 0.0
    fresh_start_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def revocations(self) -> int:
        """Revocations stored: prefilled, then made by the soak."""
        return self.samples[-1][1] if self.samples else self.prefilled

    @property
    def final_rss(self) -> float:
        return self.samples[-1][2] if self.samples else self.start_rss


def start(command: list[str], workdir: Path, port: int | None = None) -> RunningServer:
    """A caucased on `workdir`'s database, once it has served its first CRL."""
    server = wait_ready(start_caucased(command, workdir, AUTO_APPROVE, http_port=port))
    fetch_crl(server)
    return server


def churn(server: RunningServer, user: Path, args: argparse.Namespace, result: Soak) -> None:
    """Rounds of issuances, revocations and a CRL fetch until the duration is over."""
    keys = result.keys
    started = time.monotonic()
    rounds = 0
    revoked = result.prefilled
    while time.monotonic() - started < args.duration:
        base = rounds * args.batch
        csrs = [csr_for(keys[i % KEY_COUNT], f"soak-{base + i}") for i in range(args.batch)]
        revoked += revoke(
            server, user, issue(server, csrs, args.c, result.errors), args.c, result.errors
        )
        crl_ms = fetch_crl(server)
        rounds += 1
        sample = (time.monotonic() - started, revoked, rss_mib(server), crl_ms)
        result.samples.append(sample)
        if rounds % args.every == 0:
            print(
                f"{result.name}: {sample[0]:6.0f} s {sample[1]:>7} revoked  "
                f"RSS {sample[2]:6.1f} MiB  CRL fetch {crl_ms:7.1f} ms",
                flush=True,
            )


def soak(
    name: str, command: list[str], args: argparse.Namespace, keys: list[rsa.RSAPrivateKey]
) -> Soak:
    result = Soak(name, keys)
    with tempfile.TemporaryDirectory() as workdir_name:
        workdir = Path(workdir_name)
        server = start(command, workdir)
        try:
            user = make_user(server, workdir / "user.pem")
            result.empty_rss = rss_mib(server)
            if args.prefill:
                server.stop()
                prefill(workdir / "caucase.sqlite", args.prefill)
                result.prefilled = args.prefill
                server = start(command, workdir, server.http_port)
            result.start_rss = rss_mib(server)
            print(
                f"{name}: RSS {result.empty_rss:.1f} MiB on the empty database, "
                f"{result.start_rss:.1f} MiB at start with {result.prefilled} revoked"
            )
            churn(server, user, args, result)
        finally:
            server.stop()
        started = time.perf_counter()
        server = wait_ready(
            start_caucased(command, workdir, AUTO_APPROVE, http_port=server.http_port)
        )
        try:
            result.fresh_crl_ms = fetch_crl(server)
            result.fresh_rss = rss_mib(server)
            result.fresh_start_s = time.perf_counter() - started
        finally:
            server.stop()
    return result


def report(results: list[Soak]) -> None:
    print()
    for result in results:
        grown = result.final_rss - result.empty_rss
        per_entry = 1024 * grown / result.revocations if result.revocations else 0.0
        crl_times = [sample[3] for sample in result.samples]
        print(
            f"{result.name:>10}: {result.revocations} revoked ({result.prefilled} prefilled), "
            f"RSS {result.empty_rss:.1f} MiB empty, {result.start_rss:.1f} at start, "
            f"{result.final_rss:.1f} at the end ({per_entry:.2f} KiB per revoked entry); "
            f"fresh process on the final database {result.fresh_rss:.1f} MiB after its first "
            f"CRL ({result.fresh_crl_ms:.0f} ms, {result.fresh_start_s:.1f} s after its start): "
            f"long-running / fresh = "
            f"{result.final_rss / result.fresh_rss:.2f}"
        )
        if result.errors:
            kinds = sorted(set(result.errors))
            print(f"{'':>10}  {len(result.errors)} requests refused: {', '.join(kinds)}")
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
    parser.add_argument("--prefill", type=int, default=0, help="revocations stored first")
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
