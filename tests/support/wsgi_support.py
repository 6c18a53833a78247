"""Calling the WSGI application in-process with real environs, CAs and keys (no mocks)."""

from __future__ import annotations

import datetime
import io
import json
import wsgiref.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.ca import CertificateAuthority
from caucase.crypto.envelope import sign_envelope
from caucase.http.app import Application
from caucase.storage import Storage
from tests.conftest import FakeClock
from tests.support import ca_helpers
from tests.support.ca_helpers import make_csr, name, pem

CAU_SUBJECT = name("Caucase CAU at test")
HOST = "127.0.0.1:18640"
HTTPS_HOST = "127.0.0.1:18641"


def foreign_certificate(key: rsa.RSAPrivateKey, now: datetime.datetime) -> bytes:
    """A certificate no caucase CA issued, naming the test CAU as its issuer."""
    return pem(ca_helpers.self_signed(key, "intruder", issuer=CAU_SUBJECT, now=now, days=30))


@dataclass
class Reply:
    """What the application answered."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    errors: str = ""

    def header(self, header_name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == header_name.lower()]
        assert len(values) <= 1, f"{header_name} repeated"
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class ExplodingInput(io.BytesIO):
    """A request body stream that must not be read."""

    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("body read although it should have been refused first")


def call(
    app: Application,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    content_type: str | None = None,
    https: bool = False,
    cert: bytes | None = None,
    headers: dict[str, str] | None = None,
    environ: dict[str, Any] | None = None,
) -> Reply:
    """One request through the WSGI interface, as wsgiref's server would build it."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "HTTP_HOST": HTTPS_HOST if https else HOST,
        "SERVER_PORT": "18641" if https else "18640",
        "wsgi.url_scheme": "https" if https else "http",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.errors": io.StringIO(),
    }
    if "?" in path:
        env["PATH_INFO"], env["QUERY_STRING"] = path.split("?", 1)
    if body is not None:
        env["wsgi.input"] = io.BytesIO(body)
        env["CONTENT_LENGTH"] = str(len(body))
    if content_type is not None:
        env["CONTENT_TYPE"] = content_type
    if cert is not None:
        env["SSL_CLIENT_CERT"] = cert.decode()
    for key, value in (headers or {}).items():
        env["HTTP_" + key.upper().replace("-", "_")] = value
    env.update(environ or {})
    wsgiref.util.setup_testing_defaults(env)
    captured: dict[str, Any] = {}

    def start_response(status: str, header_list: list[tuple[str, str]]) -> None:
        captured["status"] = status
        captured["headers"] = header_list

    chunks = app(env, start_response)
    payload = b"".join(chunks)
    code, reason = captured["status"].split(" ", 1)
    return Reply(int(code), reason, captured["headers"], payload, env["wsgi.errors"].getvalue())


@dataclass
class Deployment:
    """Both authorities on one SQLite file, the application, and a user certificate."""

    cau: CertificateAuthority
    cas: CertificateAuthority
    app: Application
    user_key: rsa.RSAPrivateKey
    user_crt: bytes
    tmp_path: Path
    clock: FakeClock
    extra: dict[str, Any] = field(default_factory=dict)

    def restart_app(self, **kw: Any) -> Application:
        kw.setdefault("cors_key_store", str(self.tmp_path / "cors.key"))
        return Application(self.cau, self.cas, clock=self.clock, **kw)


def deploy(
    tmp_path: Path,
    clock: FakeClock,
    user_key: rsa.RSAPrivateKey,
    *,
    max_csr: int = 50,
    cors_whitelist: tuple[str, ...] = (),
) -> Deployment:
    """A fresh caucased state: the first CAU CSR is auto-approved as the user certificate."""
    db = str(tmp_path / "caucase.sqlite")
    cau = CertificateAuthority(
        Storage(db, "cau", crt_keep_time=93, crt_read_keep_time=93, enforce_unique_key_id=True),
        CAU_SUBJECT,
        2048,
        93,
        clock=clock,
        auto_sign_csr_amount=1,
    )
    cas = CertificateAuthority(
        Storage(db, "cas", max_csr_amount=max_csr),
        name("Caucase CAS at test"),
        2048,
        93,
        clock=clock,
        crl_base_url="http://test/cas/crl",
    )
    user_crt = cau.get_certificate(cau.append_csr(make_csr(user_key, "admin")))
    app = Application(cau, cas, str(tmp_path / "cors.key"), cors_whitelist, clock=clock)
    return Deployment(cau, cas, app, user_key, user_crt, tmp_path, clock)


def signed_body(key: Any, payload: dict[str, Any], digest: str = "sha256") -> bytes:
    return json.dumps(sign_envelope(key, json.dumps(payload), digest)).encode()
