"""CertificateAuthority: the policy of one CA instance (ca-profile 2-4).

Talks to storage and x509util only. INTERFACE STUB: bodies to be written.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from cryptography import x509

from caucase.clock import Clock, utcnow
from caucase.storage import Storage
from caucase.x509util import SigningMode


class CertificateAuthority:
    """One CA instance: its CA certificates, the CSRs and certificates it holds, its CRLs.

    Thread-safe: one object serves every request thread."""

    def __init__(
        self,
        storage: Storage,
        ca_subject: x509.Name,
        ca_key_size: int | None,
        crt_life: float,
        clock: Clock = utcnow,
        ca_life_period: int = 4,
        crl_renew_period: float = 0.33,
        crl_base_url: str | None = None,
        auto_sign_csr_amount: int = 0,
        lock_auto_sign_csr_amount: bool = False,
        ca_extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    ) -> None:
        """crt_life is in days. ca_key_size None disables CA generation (restore)."""
        raise NotImplementedError

    # CSRs
    def append_csr(self, csr_pem: bytes, override_limits: bool = False) -> int:
        """Store a CSR, auto-signing it when the counter allows; return its id."""
        raise NotImplementedError

    def get_csr(self, csr_id: int) -> bytes:
        raise NotImplementedError

    def get_csr_list(self) -> list[tuple[int, bytes]]:
        raise NotImplementedError

    def delete_pending_csr(self, csr_id: int) -> None:
        raise NotImplementedError

    def create_certificate(
        self, csr_id: int, template_csr: bytes | None = None, mode: SigningMode = SigningMode.NO
    ) -> bytes:
        """Sign a pending CSR (optionally with a template CSR's subject/extensions); return its PEM."""
        raise NotImplementedError

    def get_certificate(self, csr_id: int) -> bytes:
        raise NotImplementedError

    # Renewal and revocation
    def renew(self, crt_pem: bytes, renew_csr_pem: bytes) -> bytes:
        """Key-holder renewal: `crt_pem` must verify; new certificate PEM for the CSR's key."""
        raise NotImplementedError

    def revoke_certificate(self, crt_pem: bytes) -> None:
        """Revoke a certificate that verifies (issued here, valid, not yet revoked)."""
        raise NotImplementedError

    def revoke_serial(self, serial: int) -> None:
        """Revoke by serial; BadSerial unless a non-negative int, Found if already revoked."""
        raise NotImplementedError

    def verify_certificate(self, crt: x509.Certificate) -> None:
        """CertificateVerificationError unless issued by a held CA, valid now, not revoked."""
        raise NotImplementedError

    # CA material
    def get_ca_certificate(self) -> bytes:
        """PEM of the oldest still-valid CA certificate (the trust anchor for new clients)."""
        raise NotImplementedError

    def get_ca_certificate_list(self) -> list[x509.Certificate]:
        """Every held CA certificate, oldest first."""
        raise NotImplementedError

    def get_ca_certificate_chain(self) -> list[dict[str, Any]]:
        """ca.crt.json items: one signed envelope per consecutive CA pair."""
        raise NotImplementedError

    def get_crl_dict(self) -> dict[int, bytes]:
        """CRL PEM per CA certificate, keyed by its AKI integer, oldest CA first."""
        raise NotImplementedError

    def iter_valid_certificates(self) -> Iterator[x509.Certificate]:
        """Stored certificates that verify now (backup recipients on the CAU)."""
        raise NotImplementedError
