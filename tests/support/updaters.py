"""caucase-updater processes for end-to-end tests: the console script with its output in
files, its command line, and the key, CSR and certificate files it works on."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caucase.crypto import keys
from tests.support.servers import OUR_BIN, key_pem, make_key_and_csr
from tests.support.wait import poll

UPDATER = OUR_BIN / "caucase-updater"


class UpdaterProcess:
    """The caucase-updater console script, its output in files, stopped by the test."""

    def __init__(
        self, workdir: Path, *args: str, env: dict[str, str] | None = None, name: str = "updater"
    ) -> None:
        self.workdir = workdir
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [str(UPDATER), *args],
                cwd=workdir,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> str:
        """Wait until stdout holds `text` `count` times; the output so far."""
        try:
            return poll(
                lambda: (output := self.stdout()).count(text) >= count and output,
                f"{text!r} {count} times",
                timeout,
                process=self.process,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}; stdout:\n{self.stdout()}\n{self.stderr()}") from None

    def exit_status(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Send `sig`; the exit status, which must come within `timeout` seconds."""
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def stores(server_url: str, mode: str = "service") -> list[str]:
    prefix = "cas" if mode == "service" else "cau"
    return [
        "--ca-url",
        server_url,
        "--cas-ca",
        "cas.crt.pem",
        "--ca",
        f"{prefix}.crt.pem",
        "--crl",
        f"{prefix}.crl.pem",
        "--mode",
        mode,
    ]


def write_key_and_csr(workdir: Path, name: str = "svc") -> tuple[Path, Path]:
    key, csr = make_key_and_csr(name)
    key_path, csr_path = workdir / f"{name}.key", workdir / f"{name}.csr"
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    csr_path.write_bytes(csr)
    return key_path, csr_path


def pair(crt_path: Path, key_path: Path | None = None) -> tuple[x509.Certificate, bytes]:
    """The certificate and the key id of the file(s), asserting they match."""
    data = crt_path.read_bytes() + (key_path.read_bytes() if key_path else b"")
    certificate = x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE") :])
    key = serialization.load_pem_private_key(data, None)
    assert keys.key_id(key.public_key()) == keys.key_id(certificate.public_key())
    return certificate, keys.key_id(key.public_key()).encode()
