"""caucased's ACME front door in-process: the real application, CAs, storage and ACME
service on one SQLite file (tmp_path), and an account's client that signs its requests
with certbot's own ``acme`` library (tests.support.acme_jws), as certbot would send them.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from josepy import b64, jwa
from josepy.jwk import JWK

from caucase.acme.service import AcmeService, AcmeSettings
from caucase.ca import CertificateAuthority
from caucase.http.app import Application
from caucase.storage import Database, Storage
from caucase.storage.acme_schema import ACME_TABLES
from tests.conftest import FakeClock
from tests.support.acme_jws import account_key, encode, sign
from tests.support.ca_helpers import generate_keys, make_csr, name
from tests.support.wsgi_support import HTTPS_HOST, Reply, call

BASE = f"https://{HTTPS_HOST}/cas/acme"
DIRECTORY = f"{BASE}/directory"
JOSE = "application/jose+json"
PROBLEM = "application/problem+json"


def path_of(url: str) -> str:
    assert url.startswith(f"https://{HTTPS_HOST}/"), url
    return url[len(f"https://{HTTPS_HOST}") :]


@dataclass
class AcmeDeployment:
    """CAU, CAS and ACME sharing one database owner, and a CAU user certificate."""

    database: Database
    cau: CertificateAuthority
    cas: CertificateAuthority
    acme: AcmeService
    app: Application
    user_crt: bytes
    db_path: Path
    clock: FakeClock

    def close(self) -> None:
        self.acme.close()
        self.database.close()

    def mint(self, *patterns: str) -> tuple[str, str]:
        """A credential minted through the CAU route, as `caucase --new-acme-eab` does."""
        body = json.dumps({"scope": list(patterns)}).encode()
        reply = call(self.app, "PUT", "/cau/acme/eab", body, content_type="application/json",
                     https=True, cert=self.user_crt)  # fmt: skip
        assert reply.status == 201, (reply.status, reply.body)
        document = reply.json()
        return document["kid"], document["hmac_key"]

    def state(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the ACME tables but the used nonces, and of the CAS tables: what a
        refused request must leave unchanged."""
        tables = [t for t in ACME_TABLES if t != "cas_acme_nonce"]
        tables += ["cascrt", "casrevoked", "cas_revocation_reason"]
        connection = sqlite3.connect(self.db_path)
        try:
            return {t: sorted(connection.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
        finally:
            connection.close()


def deploy_acme(
    tmp_path: Path, clock: FakeClock, settings: AcmeSettings | None = None
) -> AcmeDeployment:
    db_path = tmp_path / "caucase.sqlite"
    database = Database(str(db_path))
    cau = CertificateAuthority(
        Storage(database, "cau", enforce_unique_key_id=True), name("Caucase CAU at test"),
        2048, 93, clock=clock, auto_sign_csr_amount=1,
    )  # fmt: skip
    cas = CertificateAuthority(
        Storage(database, "cas"), name("Caucase CAS at test"), 2048, 93, clock=clock,
        crl_base_url="http://test/cas/crl",
    )  # fmt: skip
    (user_key,) = generate_keys(1)
    user_crt = cau.get_certificate(cau.append_csr(make_csr(user_key, "admin")))
    acme = AcmeService(database, cas, settings or AcmeSettings(), clock)
    app = Application(cau, cas, str(tmp_path / "cors.key"), clock=clock, acme=acme)
    return AcmeDeployment(database, cau, cas, acme, app, user_crt, db_path, clock)


def csr_for(*names: str, key: Any = None, common_name: str | None = None) -> tuple[Any, str]:
    """A key and the base64url DER CSR of a finalize request naming `names` in its SAN."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    general = []
    for value in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            general.append(x509.DNSName(value))
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName(general), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, b64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


@dataclass
class Agent:
    """One ACME client: its key, its account URL once registered, its last nonce."""

    dep: AcmeDeployment
    alg_name: str = "ES256"
    key: JWK = field(init=False)
    alg: jwa.JWASignature = field(init=False)
    kid: str | None = None

    def __post_init__(self) -> None:
        self.key, self.alg = account_key(self.alg_name)

    def nonce(self) -> str:
        reply = call(self.dep.app, "HEAD", "/cas/acme/new-nonce", https=True)
        assert reply.status == 200, reply.status
        nonce = reply.header("Replay-Nonce")
        assert nonce
        return nonce

    def signed(self, url: str, payload: dict[str, Any] | None, *, use_jwk: bool = False,
               nonce: str | None = None) -> bytes:  # fmt: skip
        kid = None if use_jwk else self.kid
        return encode(sign(payload, self.key, self.alg, url=url, nonce=nonce or self.nonce(),
                           kid=kid))  # fmt: skip

    def post(self, url: str, payload: dict[str, Any] | None = None, *, use_jwk: bool = False,
             body: bytes | None = None, content_type: str = JOSE) -> Reply:  # fmt: skip
        data = body if body is not None else self.signed(url, payload, use_jwk=use_jwk)
        return call(self.dep.app, "POST", path_of(url), data, content_type=content_type,
                    https=True)  # fmt: skip

    def eab(self, kid: str, hmac_key: str, url: str = f"{BASE}/new-account") -> dict[str, Any]:
        protected = {"alg": "HS256", "kid": kid, "url": url}
        protected_b64 = b64.b64encode(json.dumps(protected).encode())
        payload_b64 = b64.b64encode(json.dumps(self.key.public_key().to_json()).encode())
        mac = jwa.HS256.sign(b64.b64decode(hmac_key), protected_b64 + b"." + payload_b64)
        return {"protected": protected_b64.decode(), "payload": payload_b64.decode(),
                "signature": b64.b64encode(mac).decode()}  # fmt: skip

    def register(self, credential: tuple[str, str] | None = None, **payload: Any) -> Reply:
        document: dict[str, Any] = {"termsOfServiceAgreed": True, **payload}
        if credential is not None:
            document["externalAccountBinding"] = self.eab(*credential)
        reply = self.post(f"{BASE}/new-account", document, use_jwk=True)
        if reply.status in (200, 201):
            self.kid = reply.header("Location")
        return reply

    def order(self, *names: str) -> Reply:
        identifiers = [{"type": "dns", "value": value} for value in names]
        return self.post(f"{BASE}/new-order", {"identifiers": identifiers})

    def finalize(self, order: dict[str, Any], *names: str, key: Any = None) -> tuple[Any, Reply]:
        csr_key, csr = csr_for(*names, key=key)
        return csr_key, self.post(order["finalize"], {"csr": csr})

    def issue(self, *names: str) -> tuple[Any, bytes]:
        """Order, finalize and download: (certificate key, PEM chain)."""
        order = self.order(*names)
        assert order.status == 201, order.body
        key, finalized = self.finalize(order.json(), *names)
        assert finalized.status == 200, finalized.body
        chain = self.post(finalized.json()["certificate"], None)
        assert chain.status == 200, chain.body
        return key, chain.body
