"""Authentication reads the revoked set directly: a revocation never makes the next
authenticated request wait for CRLs to be signed (issue 10)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from caucase.ca import CertificateAuthority
from caucase.exceptions import CertificateVerificationError
from caucase.storage import Storage
from tests.conftest import FakeClock
from tests.support.ca_helpers import CA_SUBJECT, CRT_LIFE, generate_keys, make_csr, signed


class CrlReadCountingStorage(Storage):
    """Counts the reads a CRL (re)generation makes; nothing else is changed."""

    crl_reads = 0

    def get_revoked(self, now: int) -> list[tuple[int, int]]:
        self.crl_reads += 1
        return super().get_revoked(now)

    def get_crl_state(self) -> tuple[int, int | None]:
        self.crl_reads += 1
        return super().get_crl_state()


def test_authentication_after_revocations_builds_no_crl(tmp_path: Path, clock: FakeClock) -> None:
    storage = CrlReadCountingStorage(str(tmp_path / "db.sqlite"), "cau")
    ca = CertificateAuthority(storage, CA_SUBJECT, 2048, CRT_LIFE, clock=clock)
    user_key, other_key = generate_keys(2)
    user = signed(ca, make_csr(user_key))
    other = signed(ca, make_csr(other_key))
    ca.get_crl_bundle()
    storage.crl_reads = 0
    for serial in range(1000, 1010):
        ca.revoke_serial(serial)
        ca.verify_certificate(user)
    ca.revoke_certificate(other.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CertificateVerificationError, match="certificate revoked"):
        ca.verify_certificate(other)
    ca.verify_certificate(user)
    assert storage.crl_reads == 0
    ca.get_crl_bundle()  # the CRL itself is still rebuilt when asked for
    assert storage.crl_reads > 0
    storage.close()
