"""CRLs, the CA chain document and the CA rollover of a CertificateAuthority.

Real SQLite files and a FakeClock; two years of rollover are checked by the real
`openssl verify`: certificates issued before, during and after each passive and active
phase must keep verifying with every held CA and the served CRLs, and revoked ones must
be refused."""

from __future__ import annotations

import base64
import datetime
import json
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from caucase.ca import CertificateAuthority
from caucase.crypto import x509util
from caucase.crypto.envelope import verify_envelope
from caucase.exceptions import (
    CertificateAuthorityException,
    CertificateVerificationError,
    NotFound,
)
from caucase.storage import Database, Storage
from tests.conftest import FakeClock
from tests.support.ca_helpers import (
    CA_SUBJECT,
    CRT_LIFE,
    MakeCA,
    ca_factory,
    crl_list,
    crl_number,
    generate_keys,
    make_csr,
    pem,
    signed,
)
from tests.support.servers import make_user, request, start_caucased

ROLLOVER_CRT_LIFE = 30.0  # days: a CA lives 120 days and is renewed every 60
STEP = datetime.timedelta(days=5)
DURATION = datetime.timedelta(days=730)


@pytest.fixture(scope="module")
def user_keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(6)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "ca.sqlite")


@pytest.fixture
def make_ca(db_path: str, clock: FakeClock) -> MakeCA:
    return ca_factory(db_path, clock)


@pytest.fixture
def ca(make_ca: MakeCA) -> CertificateAuthority:
    return make_ca()


# CRLs


def test_crl_content(ca: CertificateAuthority, clock: FakeClock) -> None:
    (ca_crt,) = ca.get_ca_certificate_list()
    ((aki, pem),) = ca.get_crl_dict().items()
    crl = x509util.load_crl(pem)
    assert aki == x509util.authority_key_id_int(ca_crt)
    assert crl.issuer == ca_crt.subject
    assert crl.is_signature_valid(ca_crt.public_key())  # type: ignore[arg-type]
    assert crl_number(crl) == 1
    assert crl.last_update_utc == clock() - datetime.timedelta(seconds=10)
    assert crl.next_update_utc == crl.last_update_utc + datetime.timedelta(days=CRT_LIFE * 0.33)
    assert ca.get_crl_bundle() == pem


def test_crl_numbering_and_this_update_reuse(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    (first,) = crl_list(ca)
    clock.advance(days=1)
    assert crl_list(ca)[0].public_bytes(serialization.Encoding.PEM) == first.public_bytes(
        serialization.Encoding.PEM
    )
    ca.revoke_serial(1)
    ca.revoke_serial(2)
    (after_revocations,) = crl_list(ca)
    assert crl_number(after_revocations) == 3
    assert after_revocations.last_update_utc == first.last_update_utc
    assert len(after_revocations) == 2
    clock.advance(days=CRT_LIFE * 0.33 / 2)  # now past the cached CRL's half life
    (regenerated,) = crl_list(ca)
    assert crl_number(regenerated) == 4
    assert regenerated.last_update_utc == clock() - datetime.timedelta(seconds=10)
    assert len(regenerated) == 2


def test_restart_serves_a_byte_identical_crl(make_ca: MakeCA, clock: FakeClock) -> None:
    before = make_ca().get_crl_dict()
    clock.advance(days=2)
    assert make_ca().get_crl_dict() == before


def test_restart_after_half_life_takes_a_new_number(make_ca: MakeCA, clock: FakeClock) -> None:
    (first,) = crl_list(make_ca())
    clock.advance(days=CRT_LIFE * 0.33 / 2 + 1)
    (later,) = crl_list(make_ca())
    assert crl_number(later) == crl_number(first) + 1
    assert later.last_update_utc == clock() - datetime.timedelta(seconds=10)


def test_a_fresh_crl_stored_by_another_process_is_served_as_is(
    make_ca: MakeCA, clock: FakeClock
) -> None:
    """The CRL of a number is stored and shared: a process whose own CRL passed its half
    life serves the fresher one another process signed meanwhile (the reference signed a
    third CRL of its own, ca-profile 2.3), and both then serve the same bytes."""
    first_process = make_ca()
    first_process.get_crl_dict()
    clock.advance(days=CRT_LIFE * 0.33 / 2 + 1)
    second_process = make_ca()
    (second,) = crl_list(second_process)
    (first_again,) = crl_list(first_process)
    assert crl_number(second) == 2
    assert crl_number(first_again) == 2
    assert first_process.get_crl_dict() == second_process.get_crl_dict()


def test_expired_revocations_are_pruned(
    ca: CertificateAuthority, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    crt = signed(ca, make_csr(user_keys[0]))
    ca.revoke_certificate(crt.public_bytes(serialization.Encoding.PEM))
    ca.revoke_serial(7)
    clock.advance(days=CRT_LIFE + CRT_LIFE * 0.33 + 1)
    crl_serials = {entry.serial_number for crl in crl_list(ca) for entry in crl}
    assert crl_serials == {7}


def _exercise_cached_paths(
    ca: CertificateAuthority, valid: x509.Certificate, revoked: x509.Certificate
) -> None:
    ca.get_crl_dict()
    ca.get_crl_bundle()
    ca.get_ca_certificate()
    ca.get_ca_certificate_chain()
    ca.verify_certificate(valid)
    with pytest.raises(CertificateVerificationError, match="revoked"):
        ca.verify_certificate(revoked)


def _counting_authority(
    storage: CountingStorage, clock: FakeClock, user_keys: list[rsa.RSAPrivateKey]
) -> tuple[CertificateAuthority, x509.Certificate, x509.Certificate]:
    ca = CertificateAuthority(storage, CA_SUBJECT, 2048, CRT_LIFE, clock=clock)
    valid = signed(ca, make_csr(user_keys[0]))
    revoked = signed(ca, make_csr(user_keys[1]))
    ca.revoke_certificate(revoked.public_bytes(serialization.Encoding.PEM))
    ca.get_crl_dict()
    storage.calls.clear()
    return ca, valid, revoked


def test_cached_paths_do_not_touch_storage(
    db_path: str, clock: FakeClock, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    """Cached CRLs and CA certificates are served from memory: the fast path of every
    request, on a database this process holds alone."""
    with Database(db_path, exclusive=True) as database:
        storage = CountingStorage(database, "cas")
        ca, valid, revoked = _counting_authority(storage, clock, user_keys)
        for _ in range(3):
            _exercise_cached_paths(ca, valid, revoked)
        assert storage.calls == {}


def test_shared_cached_paths_read_only_versions(
    db_path: str, clock: FakeClock, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    """When other processes may write, the cached paths read the CA and CRL versions (one
    small read each), never the CA rows, the revocations nor the stored CRLs."""
    storage = CountingStorage(db_path, "cas")
    ca, valid, revoked = _counting_authority(storage, clock, user_keys)
    for _ in range(3):
        _exercise_cached_paths(ca, valid, revoked)
    assert set(storage.calls) == {"get_ca_version", "get_crl_state"}
    storage.close()


class CountingStorage(Storage):
    """Storage counting the calls the CA makes: proves the cached paths stay in memory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def get_crl_state(self) -> tuple[int, int | None]:
        self._count("get_crl_state")
        return super().get_crl_state()

    def get_revoked(self, now: int) -> list[tuple[int, int]]:
        self._count("get_revoked")
        return super().get_revoked(now)

    def get_ca_key_pairs(self, now: int) -> list[tuple[bytes, bytes]]:
        self._count("get_ca_key_pairs")
        return super().get_ca_key_pairs(now)

    def get_ca_version(self) -> tuple[int, int | None]:
        self._count("get_ca_version")
        return super().get_ca_version()

    def get_issued_crls(self) -> dict[int, tuple[int, int, bytes]]:
        self._count("get_issued_crls")
        return super().get_issued_crls()


# Restore-style CA: no key size, never generates


def test_no_key_size_never_generates(make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey]) -> None:
    ca = make_ca(ca_key_size=None)
    assert ca.get_ca_certificate_list() == []
    assert ca.get_crl_dict() == {}
    assert ca.get_ca_certificate_chain() == []
    with pytest.raises(NotFound):
        ca.get_ca_certificate()
    csr_id = ca.append_csr(make_csr(user_keys[0]))
    with pytest.raises(CertificateAuthorityException):
        ca.create_certificate(csr_id)


def test_no_key_size_keeps_an_old_ca_without_crashing(
    make_ca: MakeCA, user_keys: list[rsa.RSAPrivateKey], clock: FakeClock
) -> None:
    anchor = make_ca().get_ca_certificate()
    clock.advance(days=3 * CRT_LIFE)  # past the renewal point (2 periods left)
    restoring = make_ca(ca_key_size=None)
    assert [
        crt.public_bytes(serialization.Encoding.PEM) for crt in restoring.get_ca_certificate_list()
    ] == [anchor]
    crt = signed(restoring, make_csr(user_keys[0]))
    restoring.verify_certificate(crt)


# Chain document


def test_chain_links_consecutive_cas(make_ca: MakeCA, clock: FakeClock) -> None:
    ca = make_ca()
    clock.advance(days=2 * CRT_LIFE + 1)  # two periods left: the next CA is due
    old, new = ca.get_ca_certificate_list()
    assert new.subject == old.subject
    assert x509util.load_certificate(ca.get_ca_certificate()) == old
    (item,) = ca.get_ca_certificate_chain()
    assert set(item) == {"payload", "digest", "signature"}
    assert item["digest"] == "sha256"
    payload = json.loads(item["payload"])
    assert list(payload) == ["old_pem", "new_pem"]
    assert x509util.load_certificate(payload["old_pem"].encode()) == old
    assert x509util.load_certificate(payload["new_pem"].encode()) == new
    assert item["payload"] == json.dumps(payload)
    verify_envelope(item, old.public_key())
    _verify_max_salt_pss(item, old.public_key())
    old_crl, new_crl = crl_list(ca)
    assert list(ca.get_crl_dict()) == [x509util.authority_key_id_int(crt) for crt in (old, new)]
    assert old_crl.issuer == new_crl.issuer == old.subject
    assert old_crl.is_signature_valid(old.public_key())  # type: ignore[arg-type]
    assert new_crl.is_signature_valid(new.public_key())  # type: ignore[arg-type]
    assert crl_number(old_crl) == crl_number(new_crl)
    assert old_crl.last_update_utc == new_crl.last_update_utc


def _verify_max_salt_pss(item: dict[str, Any], public_key: Any) -> None:
    """The chain signature as the reference client checks it: PSS, MGF1-SHA256, max salt."""
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(
        base64.b64decode(item["signature"]),
        (item["payload"] + item["digest"] + " ").encode(),
        padding.PSS(padding.MGF1(hashes.SHA256()), public_key.key_size // 8 - 32 - 2),
        hashes.SHA256(),
    )


# Threads


def test_concurrent_requests_generate_one_new_ca(
    make_ca: MakeCA, db_path: str, clock: FakeClock, user_keys: list[rsa.RSAPrivateKey]
) -> None:
    ca = make_ca()
    clock.advance(days=2 * CRT_LIFE + 1)  # every thread finds the next CA due
    barrier = threading.Barrier(len(user_keys))
    issued: list[x509.Certificate] = []
    errors: list[BaseException] = []

    def request(key: rsa.RSAPrivateKey) -> None:
        try:
            barrier.wait(timeout=30)
            ca.get_crl_dict()
            issued.append(signed(ca, make_csr(key)))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=request, args=(key,)) for key in user_keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(ca.get_ca_certificate_list()) == 2
    with sqlite3.connect(db_path) as connection:
        (stored_ca_rows,) = connection.execute("SELECT COUNT(*) FROM casca").fetchone()
    assert stored_ca_rows == 2
    assert len({crt.serial_number for crt in issued}) == len(user_keys)
    for crt in issued:
        ca.verify_certificate(crt)


# Interoperability with the reference's database


@pytest.mark.interop
def test_reference_database_round_trip(tmp_path: Path, reference_bin: Path) -> None:
    """Our CA serves the reference's CRL byte for byte from its database, and a revocation
    we record there is served by the reference after a restart."""
    workdir = tmp_path / "reference"
    server = start_caucased([reference_bin / "caucased"], workdir)
    try:
        user = make_user(server, tmp_path / "user.pem")
        envelope = {"digest": None, "payload": json.dumps({"revoke_serial": 4242})}
        status, _, _ = request(
            server,
            "PUT",
            "/cas/crt/revoke",
            json.dumps(envelope).encode(),
            {"Content-Type": "application/json"},
            https=True,
            cert_file=user,
        )
        assert status == 204
        _, _, reference_ca = request(server, "GET", "/cas/crt/ca.crt.pem")
        _, _, reference_crl = request(server, "GET", "/cas/crl")
    finally:
        server.stop()
    db_path = str(workdir / "caucase.sqlite")
    ours = CertificateAuthority(Storage(db_path, "cas"), CA_SUBJECT, 2048, CRT_LIFE)
    assert ours.get_ca_certificate() == reference_ca
    assert ours.get_crl_bundle() == reference_crl
    ours.revoke_serial(4343)
    (our_crl,) = crl_list(ours)
    assert crl_number(our_crl) == 3
    server = start_caucased([reference_bin / "caucased"], workdir)
    try:
        _, _, reference_crl = request(server, "GET", "/cas/crl")
    finally:
        server.stop()
    assert reference_crl == ours.get_crl_bundle()
    assert [entry.serial_number for entry in x509util.load_crl(reference_crl)] == [4242, 4343]


# Two years of rollover, checked by openssl


def openssl_verify(
    ca: CertificateAuthority, crt_list: list[x509.Certificate], now: datetime.datetime, tmp: Path
) -> list[str]:
    """One `openssl verify -crl_check` run at the fake time; one result line per certificate."""
    ca_file = tmp / "ca.pem"
    crl_file = tmp / "crl.pem"
    ca_file.write_bytes(b"".join(pem(crt) for crt in ca.get_ca_certificate_list()))
    crl_file.write_bytes(ca.get_crl_bundle())
    crt_paths = []
    for index, crt in enumerate(crt_list):
        path = tmp / f"leaf{index}.pem"
        path.write_bytes(pem(crt))
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
        if crt.not_valid_before_utc + datetime.timedelta(days=ROLLOVER_CRT_LIFE) < now:
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
    tmp_path: Path,
    db_path: str,
    make_ca: MakeCA,
    clock: FakeClock,
    user_keys: list[rsa.RSAPrivateKey],
) -> None:
    ca = make_ca(crt_life=ROLLOVER_CRT_LIFE)
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
            ca.create_certificate(ca.append_csr(make_csr(user_keys[0], f"leaf {step}")))
        )
        ca_list = ca.get_ca_certificate_list()
        signer = expected_signer(ca_list, now)
        assert crt.issuer == signer.subject
        assert x509util.authority_key_id_int(crt) == x509util.authority_key_id_int(signer)
        signers_seen.add(pem(signer))
        if signer != ca_list[-1]:
            passive_signatures += 1
        assert 1 <= len(ca_list) <= 3
        assert x509util.load_certificate(ca.get_ca_certificate()) == ca_list[0]
        assert all(held.not_valid_after_utc >= now for held in ca_list)
        chain = ca.get_ca_certificate_chain()
        assert len(chain) == len(ca_list) - 1
        client_known = follow_chain(client_known, chain)
        assert all(pem(held) in client_known for held in ca_list)

        if step % 7 == 3:
            ca.revoke_certificate(pem(issued[-1]))
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
