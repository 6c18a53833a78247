"""An ACME client made of certbot's own ``acme`` library, against a running caucased:
register with EAB, order pre-authorized names, finalize, download, revoke. For tests that
need ACME state in a real database, and for benchmarks/acme.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import josepy
from acme import client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.servers import RunningServer, request


def mint_eab(server: RunningServer, user: Path, *patterns: str) -> tuple[str, str]:
    """A credential from the CAU route (what `caucase --new-acme-eab` calls)."""
    status, _, body = request(
        server, "PUT", "/cau/acme/eab", json.dumps({"scope": list(patterns)}).encode(),
        {"Content-Type": "application/json"}, https=True, cert_file=user,
    )  # fmt: skip
    assert status == 201, (status, body)
    document = json.loads(body)
    return document["kid"], document["hmac_key"]


def https_ca_bundle(server: RunningServer, path: Path) -> Path:
    """caucased's published HTTPS CA, the one file ACME clients trust."""
    status, _, pem = request(server, "GET", "/https-ca.crt.pem")
    assert status == 200, status
    path.write_bytes(pem)
    return path


def directory_url(server: RunningServer) -> str:
    return f"https://{server.host}:{server.https_port}/cas/acme/directory"


def make_csr(*names: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


@dataclass
class LibraryClient:
    acme: client.ClientV2

    @classmethod
    def register(cls, url: str, ca_bundle: Path, credential: tuple[str, str]) -> LibraryClient:
        key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        net = client.ClientNetwork(key, alg=josepy.ES256, verify_ssl=str(ca_bundle),
                                   user_agent="caucase-tests")  # fmt: skip
        directory = client.ClientV2.get_directory(url, net)
        acme = client.ClientV2(directory, net)
        kid, hmac_key = credential
        binding = messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(), kid=kid, hmac_key=hmac_key, directory=directory
        )
        acme.net.account = acme.new_account(
            messages.NewRegistration.from_data(external_account_binding=binding)
        )
        return cls(acme)

    def issue(self, *names: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
        """New order for pre-authorized names, finalize, download: (key, PEM chain). The
        order is valid on finalize's answer: no polling (the library's own loop sleeps)."""
        key, csr = make_csr(*names)
        order = self.acme.new_order(csr)
        order = self.acme.begin_finalization(order)
        assert order.body.status == messages.STATUS_VALID, order.body.status
        chain = self.acme._post_as_get(order.body.certificate).text
        return key, chain

    def revoke(self, chain: str, reason: int) -> None:
        leaf = x509.load_pem_x509_certificates(chain.encode())[0]
        self.acme.revoke(leaf, reason)
