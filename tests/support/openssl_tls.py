"""A certificate checked the way a TLS deployment would: served by ``openssl s_server``,
its chain verified by ``openssl s_client`` and ``openssl verify`` against a CA file and a
CRL (with ``-crl_check``), the name checked too."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.servers import free_port


def leaf_file(chain: Path, workdir: Path) -> Path:
    """The first certificate of a chain file, in a file of its own."""
    end = b"-----END CERTIFICATE-----"
    leaf = workdir / f"{chain.stem}.leaf.pem"
    leaf.write_bytes(chain.read_bytes().split(end)[0] + end + b"\n")
    return leaf


def openssl_verify(
    chain: Path, ca: Path, crl: Path, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """``openssl verify -crl_check`` of the chain's leaf."""
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), "-CRLfile", str(crl), "-crl_check",
         str(leaf_file(chain, workdir))],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def served_verification(chain: Path, key: Path, ca: Path, crl: Path, name: str) -> str:
    """What ``openssl s_client`` says of the chain served by ``openssl s_server``: its
    ``Verify return code`` line."""
    port = free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(chain),
         "-key", str(key), "-cert_chain", str(chain), "-www"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        said: list[str] = []
        while "ACCEPT\n" not in said:  # s_server says ACCEPT once it listens
            said.append(server.stdout.readline())
            assert said[-1], said
        client = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca),
             "-CRL", str(crl), "-crl_check", "-verify_hostname", name, "-servername", name],
            input="", capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)
    codes = [row.strip() for row in client.stdout.splitlines() if "Verify return code" in row]
    return codes[-1] if codes else client.stdout + client.stderr
