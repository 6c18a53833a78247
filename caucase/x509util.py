"""Pure functions over `cryptography` objects for the caucase certificate profile.

No I/O and no clock: every time is a parameter. INTERFACE STUB: bodies to be written.
"""

from __future__ import annotations

import datetime
import enum
from typing import Any, Iterable, Mapping, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    PrivateKeyTypes,
)

DIGEST_LIST = ("sha256", "sha384", "sha512")
BACKDATE = datetime.timedelta(seconds=10)
CAUCASE_OID_TOP = "1.3.6.1.4.1.37476.9000.70.0"
AUTO_SIGNED_OID = CAUCASE_OID_TOP + ".0"
LEGACY_OID_TOP = "2.25.285541874270823339875695650038637483517"
LEGACY_AUTO_SIGNED_OID = LEGACY_OID_TOP + ".0"
AUTO_SIGNED_TEXT = "Auto-signed caucase certificate"

CAPrivateKey = rsa.RSAPrivateKey
Template = Union[x509.CertificateSigningRequest, x509.Certificate]


class SigningMode(enum.Enum):
    """How CertificatePolicies are treated when issuing (ca-profile 1.7)."""

    NO = "no"
    YES = "yes"
    PASSTHROUGH = "passthrough"


def load_certificate(pem: bytes) -> x509.Certificate:
    """Exactly one PEM certificate; ValueError otherwise."""
    raise NotImplementedError


def load_certificate_request(pem: bytes) -> x509.CertificateSigningRequest:
    """Exactly one PEM CSR whose self-signature verifies; NotACertificateSigningRequest otherwise."""
    raise NotImplementedError


def load_crl(pem: bytes) -> x509.CertificateRevocationList:
    """Exactly one PEM CRL; ValueError otherwise."""
    raise NotImplementedError


def load_private_key(pem: bytes, password: bytes | None = None) -> PrivateKeyTypes:
    """One PEM private key; ValueError otherwise."""
    raise NotImplementedError


def dump_certificate(crt: x509.Certificate) -> bytes:
    raise NotImplementedError


def dump_certificate_request(csr: x509.CertificateSigningRequest) -> bytes:
    raise NotImplementedError


def dump_crl(crl: x509.CertificateRevocationList) -> bytes:
    raise NotImplementedError


def dump_private_key(key: PrivateKeyTypes, password: bytes | None = None) -> bytes:
    """Traditional OpenSSL PEM ("BEGIN RSA PRIVATE KEY"), encrypted with the best available cipher when a password is given."""
    raise NotImplementedError


def generate_private_key(key_len: int) -> rsa.RSAPrivateKey:
    """RSA, public exponent 65537."""
    raise NotImplementedError


def key_id(public_key: Any) -> str:
    """Lowercase hex SHA-1 of the key (RFC 5280 method 1, same as the SKI caucase writes)."""
    raise NotImplementedError


def authority_key_id_int(document: Union[x509.Certificate, x509.CertificateRevocationList]) -> int:
    """AuthorityKeyIdentifier keyIdentifier as a big-endian integer; ValueError if absent."""
    raise NotImplementedError


def random_serial() -> int:
    """20 random bytes, big-endian, shifted right one bit: positive, at most 159 bits."""
    raise NotImplementedError


def name_constraints_for_host(host: str) -> x509.Extension[x509.NameConstraints]:
    """Critical NameConstraints for the HTTPS CA (ca-profile 1.4)."""
    raise NotImplementedError


def make_ca_certificate(
    key: rsa.RSAPrivateKey,
    subject: x509.Name,
    now: datetime.datetime,
    life: datetime.timedelta,
    extra_extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> x509.Certificate:
    """First-generation self-signed CA certificate (ca-profile 1.3)."""
    raise NotImplementedError


def renew_ca_certificate(
    previous: x509.Certificate,
    key: rsa.RSAPrivateKey,
    now: datetime.datetime,
    life: datetime.timedelta,
) -> x509.Certificate:
    """Next-generation CA certificate copying subject and extensions of `previous` (ca-profile 1.5)."""
    raise NotImplementedError


def issue_certificate(
    ca_key: rsa.RSAPrivateKey,
    ca_crt: x509.Certificate,
    public_key: CertificateIssuerPublicKeyTypes,
    template: Template,
    mode: SigningMode,
    now: datetime.datetime,
    life: datetime.timedelta,
    crl_base_url: str | None,
) -> x509.Certificate:
    """Leaf certificate for `public_key` with subject/extensions from `template` (ca-profile 1.6-1.8)."""
    raise NotImplementedError


def make_crl(
    ca_key: rsa.RSAPrivateKey,
    ca_crt: x509.Certificate,
    revoked: Iterable[tuple[int, datetime.datetime]],
    number: int,
    this_update: datetime.datetime,
    next_update: datetime.datetime,
) -> x509.CertificateRevocationList:
    """v2 CRL with CRLNumber and the CA's AKI (ca-profile 2.1)."""
    raise NotImplementedError


def make_server_csr(key: rsa.RSAPrivateKey, host: str) -> x509.CertificateSigningRequest:
    """caucased's own HTTPS CSR: empty subject, KU digitalSignature, SAN ip or dns (ca-profile 1.10)."""
    raise NotImplementedError


def make_renewal_csr(key: rsa.RSAPrivateKey, subject: x509.Name) -> x509.CertificateSigningRequest:
    """CSR for a renewal: the old subject, no extensions, SHA-256."""
    raise NotImplementedError


def is_auto_signed(crt: x509.Certificate) -> bool:
    """Whether the certificate carries the auto-signed policy (or its legacy OID)."""
    raise NotImplementedError


def is_valid_ca(crt: x509.Certificate, now: datetime.datetime) -> bool:
    """Self-signed (signature verifies with its own key) and within its validity at `now`."""
    raise NotImplementedError


def verify_certificate(
    crt: x509.Certificate,
    ca_list: Sequence[x509.Certificate],
    revoked_serials: Any,
    now: datetime.datetime,
) -> None:
    """Raise CertificateVerificationError unless `crt` is issued by one of `ca_list`,
    within validity at `now`, and its serial is not in `revoked_serials` (a container of int)."""
    raise NotImplementedError


def sign_envelope(key: PrivateKeyTypes, payload: str, digest: str = "sha256") -> dict[str, Any]:
    """{"payload", "digest", "signature"}: RSA-PSS, MGF1 same hash, max salt, over payload+digest+" "."""
    raise NotImplementedError


def verify_envelope(envelope: Mapping[str, Any], public_key: Any) -> None:
    """Raise BadEnvelope unless the envelope signature verifies (any PSS salt length)."""
    raise NotImplementedError
