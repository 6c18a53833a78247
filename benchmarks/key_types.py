"""Issuance and revocation over TLS with RSA-2048 and with ECDSA P-256 CA and server keys,
side by side in one run against the reference, and the TLS handshake ceiling of each key type.

Each configuration starts a fresh caucased: the same pre-generated CSRs are submitted to the
CAS and fetched (C concurrent clients), then a user whose key has the CA's type revokes N
serials over HTTPS, each request on a new connection (a new mutual TLS handshake, as with the
reference client). The ceilings are trivial HTTPS requests on a wsgiref server, server and
client keys of one type.
Usage: .venv/bin/python benchmarks/key_types.py [-n 200] [-c 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import implementations, make_csrs, tls_ceiling, wait_ready
from cryptography import x509
from issuance import issue_all
from revocation import revocations_per_second

from caucase.crypto import keys, x509util
from tests.support.servers import RunningServer, request, start_caucased
from tests.support.wsgi_support import name


def make_user(server: RunningServer, path: Path, key_type: keys.KeyType) -> Path:
    """An auto-approved user credential whose key has `key_type`."""
    key = keys.generate(keys.KeySpec(key_type))
    builder = x509.CertificateSigningRequestBuilder().subject_name(name("user"))
    csr = x509util.dump_certificate_request(builder.sign(key, keys.signature_hash(key)))
    status, headers, _ = request(
        server, "PUT", "/cau/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201, status
    status, _, crt = request(server, "GET", "/cau/crt/" + headers["Location"])
    assert status == 200, status
    path.write_bytes(keys.dump_private_key(key) + crt)
    path.chmod(0o600)
    return path


def measure(
    command: list[str], key_type: keys.KeyType | None, csrs: list[bytes], concurrency: int
) -> tuple[float, float]:
    """(certificates/s, revocations/s) of one caucased; `key_type` None: no --key-type."""
    args = ["--service-auto-approve-count", str(len(csrs) + 1)]
    if key_type is not None:
        args += ["--key-type", key_type.value]
    with tempfile.TemporaryDirectory() as workdir_name:
        workdir = Path(workdir_name)
        server = wait_ready(start_caucased(command, workdir, args))
        try:
            issued = issue_all(server.http_port, csrs, concurrency, keep_alive=True)
            user = make_user(server, workdir / "user.pem", key_type or keys.KeyType.RSA)
            revoked = revocations_per_second(server, user, len(csrs), concurrency)
        finally:
            server.stop()
    return issued, revoked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200, help="CSRs and revocations per server")
    parser.add_argument("-c", type=int, default=4, help="concurrent clients")
    args = parser.parse_args()
    csrs = make_csrs(args.n)
    found = implementations()
    configurations: list[tuple[str, list[str], keys.KeyType | None]] = []
    if "reference" in found:
        configurations.append(("reference (RSA-2048)", found["reference"], None))
    configurations += [
        ("ours RSA-2048", found["ours"], keys.KeyType.RSA),
        ("ours ECDSA P-256", found["ours"], keys.KeyType.EC_P256),
    ]
    results = {}
    for label, command, key_type in configurations:
        results[label] = measure(command, key_type, csrs, args.c)
        print(f"{label}: {results[label][0]:.1f} certificates/s, {results[label][1]:.1f} "
              "revocations/s over TLS")  # fmt: skip
    print(f"\nN={args.n} C={args.c}")
    print(f"{'server':>22} | certificates/s | revocations/s (new TLS handshake each)")
    for label, (issued, revoked) in results.items():
        print(f"{label:>22} | {issued:>14.1f} | {revoked:.1f}")
    print("TLS handshake ceiling, trivial server, server and client keys of one type:")
    for key_type in keys.KeyType:
        rate = tls_ceiling(args.n, args.c, key_type)
        print(f"{keys.KeySpec(key_type)!s:>22} | {rate:.0f} requests/s")


if __name__ == "__main__":
    main()
