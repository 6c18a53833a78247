"""atheris target: the caucased WSGI application fed coverage-guided random requests.

Run as a script (libFuzzer options on the command line, e.g. -max_total_time=60). Any
5xx answer, exception, or database change after a non-success answer is a crash.
"""

from __future__ import annotations

import datetime
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from cryptography.hazmat.primitives.asymmetric import rsa

    # Imported here so that atheris instruments them for coverage feedback.
    from caucase.crypto import x509util  # noqa: F401
    from caucase.http import app, bodies, cors, handlers, request, routes  # noqa: F401
    from tests.conftest import FakeClock
    from tests.fuzz.db_state import read_rows
    from tests.support.wsgi_support import Deployment, call, deploy, make_csr

METHODS = ["GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH"]
SUBPATHS = ("", "/crl", "/csr", "/crt", "/crt/ca.crt.pem", "/crt/ca.crt.json", "/crt/revoke")
PATHS = [
    *(f"/{authority}{sub}" for authority in ("cas", "cau") for sub in (*SUBPATHS, "/crt/renew")),
    "/",
    "/cors",
]
CONTENT_TYPES = ["application/json", "application/pkcs10", "application/x-www-form-urlencoded"]
HEADERS = ["Origin", "Host", "Cookie", "Referrer", "User-Agent"]


class Target:
    """One deployment shared by every input; its rows are the state to preserve."""

    def __init__(self, workdir: Path) -> None:
        clock = FakeClock(datetime.datetime.now(datetime.timezone.utc))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.deployment: Deployment = deploy(workdir, clock, key)
        self.csr = make_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.db = workdir / "caucase.sqlite"
        for authority in ("cas", "cau"):  # the lazily built CRLs exist before the first input
            call(self.deployment.app, "GET", f"/{authority}/crl")
            call(self.deployment.app, "GET", f"/{authority}/csr", https=True, cert=self.user_crt)
        self.rows = read_rows(self.db)

    @property
    def user_crt(self) -> bytes:
        return self.deployment.user_crt

    def body(self, fdp: Any) -> bytes | None:
        choice = fdp.ConsumeIntInRange(0, 3)
        if choice == 0:
            return None
        if choice == 1:  # a real CSR with some bytes overwritten
            csr = bytearray(self.csr)
            for _ in range(fdp.ConsumeIntInRange(0, 4)):
                csr[fdp.ConsumeIntInRange(0, len(csr) - 1)] = fdp.ConsumeIntInRange(0, 255)
            return bytes(csr)
        return bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)))

    def one_input(self, data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        method = fdp.PickValueInList(METHODS)
        path = fdp.PickValueInList(PATHS)
        if fdp.ConsumeBool():
            path += "/" + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24)).decode("latin-1")
        headers = {
            name: fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)).decode("latin-1")
            for name in HEADERS
            if fdp.ConsumeBool()
        }
        content_type = fdp.PickValueInList(CONTENT_TYPES) if fdp.ConsumeBool() else None
        https = fdp.ConsumeBool()
        cert = self.user_crt if https and fdp.ConsumeBool() else None
        body = self.body(fdp)
        environ: dict[str, Any] = {}
        if fdp.ConsumeBool():
            environ["CONTENT_LENGTH"] = fdp.ConsumeBytes(6).decode("latin-1")
            environ["wsgi.input"] = io.BytesIO(body or b"")
        reply = call(
            self.deployment.app,
            method,
            path,
            body,
            content_type=content_type,
            https=https,
            cert=cert,
            headers=headers,
            environ=environ,
        )
        if reply.status >= 500:
            raise AssertionError(f"{reply.status} for {method} {path!r}:\n{reply.errors}")
        rows = read_rows(self.db)
        if reply.status >= 300 and rows != self.rows:
            raise AssertionError(f"state changed by a {reply.status} to {method} {path!r}")
        self.rows = rows


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        target = Target(Path(workdir))
        atheris.Setup(sys.argv, target.one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
