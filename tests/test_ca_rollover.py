"""CA rollover over two years of fake time, checked by the real `openssl verify`.

Certificates issued before, during and after each passive and active phase must keep
verifying with every held CA and the served CRLs, and revoked ones must be refused."""

from __future__ import annotations

import base64
import datetime
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from caucase import x509util
from caucase.ca import CertificateAuthority
from caucase.storage import Storage
from tests.conftest import FakeClock

CRT_LIFE = 30.0  # days: a CA lives 120 days and is renewed every 60
STEP = datetime.timedelta(days=5)
DURATION = datetime.timedelta(days=730)
CA_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Caucase CAS at rollover")])


@pytest.fixture(scope="module")
def leaf_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _csr(key: rsa.RSAPrivateKey, common_name: str) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def _pem(crt: x509.Certificate) -> bytes:
    return crt.public_bytes(serialization.Encoding.PEM)


def openssl_verify(
    ca: CertificateAuthority, crt_list: list[x509.Certificate], now: datetime.datetime, tmp: Path
) -> list[str]:
    """One `openssl verify -crl_check` run at the fake time; one result line per certificate."""
    ca_file = tmp / "ca.pem"
    crl_file = tmp / "crl.pem"
    ca_file.write_bytes(b"".join(_pem(crt) for crt in ca.get_ca_certificate_list()))
    crl_file.write_bytes(ca.get_crl_bundle())
    crt_paths = []
    for index, crt in enumerate(crt_list):
        path = tmp / f"leaf{index}.pem"
        path.write_bytes(_pem(crt))
        crt_paths.append(str(path))
    command = ["openssl", "verify", "-crl_check", "-attime", str(int(now.timestamp()))]
    result = subprocess.run(
        [*command, "-CAfile", str(ca_file), "-CRLfile", str(crl_file), *crt_paths],
        capture_output=True,
        text=True,
        check=False,
    )
    verified = set(result.stdout.splitlines())
    return [
        "OK" if f"{path}: OK" in verified else result.stdout + result.stderr for path in crt_paths
    ]


def expected_signer(ca_list: list[x509.Certificate], now: datetime.datetime) -> x509.Certificate:
    """ca-profile 3.2: the newest CA older than one certificate life, else the newest."""
    for crt in reversed(ca_list):
        if crt.not_valid_before_utc + datetime.timedelta(days=CRT_LIFE) < now:
            return crt
    return ca_list[-1]


def follow_chain(anchors: list[bytes], chain: list[dict[str, str]]) -> list[bytes]:
    """What a client holding `anchors` learns from ca.crt.json: each signed successor."""
    known = list(anchors)
    for item in chain:
        payload = json.loads(item["payload"])
        old = x509util.load_certificate(payload["old_pem"].encode())
        public_key = old.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        public_key.verify(
            base64.b64decode(item["signature"]),
            (item["payload"] + item["digest"] + " ").encode(),
            padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH),
            hashes.SHA256(),
        )
        if payload["old_pem"].encode() in known and payload["new_pem"].encode() not in known:
            known.append(payload["new_pem"].encode())
    return known


def test_two_years_of_rollover(
    tmp_path: Path, clock: FakeClock, leaf_key: rsa.RSAPrivateKey
) -> None:
    db_path = str(tmp_path / "ca.sqlite")
    ca = CertificateAuthority(Storage(db_path, "cas"), CA_SUBJECT, 2048, CRT_LIFE, clock=clock)
    start = clock()
    client_known = [ca.get_ca_certificate()]
    issued: list[x509.Certificate] = []
    revoked: list[x509.Certificate] = []
    signers_seen: set[bytes] = set()
    passive_signatures = 0
    revoked_checks = 0
    step = 0
    while clock() - start < DURATION:
        now = clock()
        crt = x509util.load_certificate(
            ca.create_certificate(ca.append_csr(_csr(leaf_key, f"leaf {step}")))
        )
        ca_list = ca.get_ca_certificate_list()
        signer = expected_signer(ca_list, now)
        assert crt.issuer == signer.subject
        assert x509util.authority_key_id_int(crt) == x509util.authority_key_id_int(signer)
        signers_seen.add(_pem(signer))
        if signer != ca_list[-1]:
            passive_signatures += 1
        assert 1 <= len(ca_list) <= 3
        assert x509util.load_certificate(ca.get_ca_certificate()) == ca_list[0]
        assert all(held.not_valid_after_utc >= now for held in ca_list)
        chain = ca.get_ca_certificate_chain()
        assert len(chain) == len(ca_list) - 1
        client_known = follow_chain(client_known, chain)
        assert all(_pem(held) in client_known for held in ca_list)

        if step % 7 == 3:
            ca.revoke_certificate(_pem(issued[-1]))
            revoked.append(issued.pop())
        issued.append(crt)
        live = [crt for crt in issued if crt.not_valid_after_utc > now]
        live_revoked = [crt for crt in revoked if crt.not_valid_after_utc > now]
        assert openssl_verify(ca, live, now, tmp_path) == ["OK"] * len(live)
        for crt in live_revoked:
            (result,) = openssl_verify(ca, [crt], now, tmp_path)
            assert "certificate revoked" in result
            revoked_checks += 1
        for leaf in live:
            ca.verify_certificate(leaf)
        step += 1
        clock.advance(days=STEP.days)

    # One CA generation every 2 certificate lives, each one signing once active.
    assert len(signers_seen) >= 10
    assert passive_signatures >= 10
    assert revoked_checks >= 10
    with sqlite3.connect(db_path) as connection:
        (stored_ca_rows,) = connection.execute("SELECT COUNT(*) FROM casca").fetchone()
    assert stored_ca_rows <= 3
