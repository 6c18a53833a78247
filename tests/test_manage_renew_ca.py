"""caucased-manage --renew-ca: a CA rollover started now, with a new key type, under the
injected clock on a real database."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import SignatureAlgorithmOID

from caucase.ca import CertificateAuthority
from caucase.cli import manage
from caucase.crypto import keys, x509util
from caucase.exceptions import CaucaseError
from caucase.storage import Storage
from tests.conftest import FakeClock
from tests.support.ca_helpers import CA_SUBJECT, make_csr

CRT_LIFE = 93.0


def run_manage(clock: FakeClock, *argv: str) -> str:
    output = io.StringIO()
    with redirect_stdout(output):
        manage.run(manage.build_parser().parse_args(list(argv)), clock)
    return output.getvalue()


def authority(db: Path, clock: FakeClock, prefix: str = "cas") -> CertificateAuthority:
    storage = Storage(str(db), prefix, enforce_unique_key_id=prefix == "cau")
    return CertificateAuthority(storage, CA_SUBJECT, 2048, CRT_LIFE, clock=clock)


@pytest.mark.parametrize("prefix", ["cas", "cau"])
def test_renew_ca_starts_a_passive_rollover_with_the_new_type(
    tmp_path: Path, clock: FakeClock, prefix: str
) -> None:
    db = tmp_path / "caucase.sqlite"
    (old_ca,) = authority(db, clock, prefix).get_ca_certificate_list()
    clock.advance(days=100)
    output = run_manage(clock, "--db", str(db), "--renew-ca", prefix, "--key-type", "ec-p256")
    assert f"New {prefix.upper()} CA certificate (ECDSA P-256) valid until" in output
    assert "restart caucased" in output
    ca = authority(db, clock, prefix)
    held = ca.get_ca_certificate_list()
    assert held[0] == old_ca and len(held) == 2
    assert keys.kind(held[1].public_key()) is keys.KeyType.EC_P256
    assert len(ca.get_ca_certificate_chain()) == 1
    assert issue(ca, "passive").signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    clock.advance(days=CRT_LIFE + 1)
    active = issue(authority(db, clock, prefix), "active")
    assert active.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256


def issue(ca: CertificateAuthority, common_name: str) -> x509.Certificate:
    csr_id = ca.append_csr(
        make_csr(keys.generate(keys.KeySpec(keys.KeyType.EC_P256)), common_name)
    )
    return x509util.load_certificate(ca.create_certificate(csr_id))


def test_renew_ca_is_refused_while_the_newest_ca_is_young(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "caucase.sqlite"
    authority(db, clock)
    with pytest.raises(CaucaseError, match="younger than one certificate validity"):
        run_manage(clock, "--db", str(db), "--renew-ca", "cas")
    clock.advance(days=100)
    run_manage(clock, "--db", str(db), "--renew-ca", "cas", "--key-type", "ed25519")
    with pytest.raises(CaucaseError, match="rollover may be under way"):
        run_manage(clock, "--db", str(db), "--renew-ca", "cas")


def test_renew_ca_keeps_the_newest_type_by_default(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "caucase.sqlite"
    storage = Storage(str(db), "cas")
    spec = keys.KeySpec(keys.KeyType.EC_P384)
    CertificateAuthority(storage, CA_SUBJECT, spec, CRT_LIFE, clock=clock)
    storage.close()
    clock.advance(days=100)
    assert "(ECDSA P-384)" in run_manage(clock, "--db", str(db), "--renew-ca", "cas")


def test_renew_ca_needs_a_database_with_a_ca(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "caucase.sqlite"
    with pytest.raises(manage.ManageError, match="does not exist"):
        run_manage(clock, "--db", str(db), "--renew-ca", "cas")
    Storage(str(db), "cas").close()
    with pytest.raises(manage.ManageError, match="holds no valid CAS CA"):
        run_manage(clock, "--db", str(db), "--renew-ca", "cas")
