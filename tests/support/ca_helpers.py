"""Keys, CSRs and certificates for tests (built with cryptography alone, independent of the
code under test), a CertificateAuthority factory, CRL accessors."""

from __future__ import annotations

import datetime
from typing import Any, Callable, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from caucase.ca import CertificateAuthority
from caucase.crypto import x509util
from caucase.storage import Storage
from tests.conftest import FakeClock

CA_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Caucase CAS at test")])
CRT_LIFE = 93.0

MakeCA = Callable[..., CertificateAuthority]
PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]


def generate_keys(count: int) -> list[rsa.RSAPrivateKey]:
    """Leaf keys for a whole module: CSR keys need not be fresh per test."""
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(count)]


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_csr(key: rsa.RSAPrivateKey, common_name: str = "user", *, san: str = "") -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(common_name))
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def self_signed(
    key: PrivateKey,
    common_name: str = "self-signed",
    *,
    issuer: x509.Name | None = None,
    now: datetime.datetime | None = None,
    days: float = 1,
) -> x509.Certificate:
    """A certificate no caucase CA issued: signed by its own key, naming itself (or
    `issuer`) as issuer, valid from a day before `now` until `days` after it."""
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    subject = name(common_name)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - datetime.timedelta(days=1))
        .not_valid_after(moment + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def ca_factory(db_path: str, clock: FakeClock) -> MakeCA:
    """Build CA instances over one database; each call after the first is a daemon restart."""

    def factory(
        *, max_csr_amount: int = 50, ca_key_size: int | None = 2048, **kw: Any
    ) -> CertificateAuthority:
        storage = Storage(db_path, "cas", max_csr_amount=max_csr_amount)
        kw.setdefault("crt_life", CRT_LIFE)
        return CertificateAuthority(storage, CA_SUBJECT, ca_key_size, clock=clock, **kw)

    return factory


def pem(crt: x509.Certificate) -> bytes:
    return crt.public_bytes(serialization.Encoding.PEM)


def signed(ca: CertificateAuthority, csr_pem: bytes) -> x509.Certificate:
    """Submit and sign a CSR, as an operator approving it would."""
    return x509util.load_certificate(ca.create_certificate(ca.append_csr(csr_pem)))


def crl_list(ca: CertificateAuthority) -> list[x509.CertificateRevocationList]:
    return [x509util.load_crl(crl_pem) for crl_pem in ca.get_crl_dict().values()]


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
