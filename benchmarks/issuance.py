"""Issuance throughput of our caucased against the reference, and the machine's ceilings.

Each round starts a fresh server with auto-approval, submits N pre-generated CSRs to the CAS and
fetches each certificate, with C concurrent clients; rounds alternate the implementations.
Usage: .venv/bin/python benchmarks/issuance.py [-n 400] [-c 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime
import ssl
import statistics
import tempfile
from pathlib import Path

from common import (
    Connection,
    implementations,
    make_csrs,
    requests_per_second,
    run_parallel,
    running,
    summary,
    trivial_server,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


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


def self_signed(directory: Path, name: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        + crt.public_bytes(serialization.Encoding.PEM)
    )
    return path


def ceilings(count: int, concurrency: int) -> tuple[float, float]:
    """Trivial HTTP requests/s, and HTTPS requests/s with a new RSA-2048 mutual handshake each."""
    with trivial_server() as port:
        http_rate = requests_per_second(port, count * 2, concurrency, None)
    with tempfile.TemporaryDirectory() as workdir:
        server_pem = self_signed(Path(workdir), "server")
        client_pem = self_signed(Path(workdir), "client")
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(str(server_pem))
        server_context.verify_mode = ssl.CERT_OPTIONAL
        server_context.load_verify_locations(str(client_pem))
        client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_context.check_hostname = False
        client_context.verify_mode = ssl.CERT_NONE
        client_context.load_cert_chain(str(client_pem))
        with trivial_server(server_context) as port:
            https_rate = requests_per_second(port, count, concurrency, client_context)
    return http_rate, https_rate


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
