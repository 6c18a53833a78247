"""Three simulated years of one CA on a real SQLite file: rollovers never break trust.

A short certificate life (10 days, so a CA lives 40 days and a new one comes every 20) and
an injected clock make three years about 440 steps of a quarter period (with jitter). At
every step a certificate is really issued, the CRLs are fetched, and `openssl verify
-attime` checks every live certificate against the CAs a client learnt through the signed
chain only.
The daemon is "restarted" (new objects on the same file) now and then."""

from __future__ import annotations

import datetime
import json
import random
import subprocess
import threading
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.ca import CertificateAuthority
from caucase.crypto import x509util
from caucase.crypto.envelope import verify_envelope
from caucase.storage import Storage
from tests.conftest import FakeClock
from tests.support.ca_helpers import CA_SUBJECT, crl_list, crl_number, generate_keys, make_csr

CRT_LIFE = 10.0
MEAN_STEP_DAYS = CRT_LIFE / 4
DURATION = datetime.timedelta(days=3 * 365)
RESTART_EVERY = 25
REVOKE_EVERY = 9


def pem(crt: x509.Certificate) -> bytes:
    return crt.public_bytes(serialization.Encoding.PEM)


class ChainFollower:
    """A verifier that trusts a first anchor, then only CAs vouched for by the signed
    chain (ca-profile 3.4, 3.5); expired CAs are dropped."""

    def __init__(self, anchor: x509.Certificate) -> None:
        self.held = [anchor]

    def follow(self, chain: list[dict[str, str]], now: datetime.datetime) -> None:
        for item in chain:
            payload = json.loads(item["payload"])
            old = x509.load_pem_x509_certificate(payload["old_pem"].encode())
            new = x509.load_pem_x509_certificate(payload["new_pem"].encode())
            if old in self.held and new not in self.held:
                verify_envelope(item, old.public_key())
                self.held.append(new)
        self.held = [ca for ca in self.held if ca.not_valid_after_utc > now]


class Daemon:
    """The CA objects a caucased would hold; `restart` reopens them on the same file."""

    def __init__(self, db_path: Path, clock: FakeClock) -> None:
        self.db_path, self.clock = db_path, clock
        self.storage, self.ca = self._open()

    def _open(self) -> tuple[Storage, CertificateAuthority]:
        storage = Storage(str(self.db_path), "cas", max_csr_amount=10)
        return storage, CertificateAuthority(
            storage, CA_SUBJECT, 2048, crt_life=CRT_LIFE, clock=self.clock
        )

    def restart(self) -> None:
        self.storage.close()
        self.storage, self.ca = self._open()


def openssl_verify(
    workdir: Path,
    now: datetime.datetime,
    cas: list[x509.Certificate],
    crls: list[x509.CertificateRevocationList],
    leaves: list[x509.Certificate],
) -> subprocess.CompletedProcess[str]:
    """openssl verify of each leaf at `now`, with CRL checking; one process for all."""
    (workdir / "cas.pem").write_bytes(b"".join(pem(ca) for ca in cas))
    (workdir / "crls.pem").write_bytes(
        b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in crls)
    )
    leaf_paths = []
    for index, leaf in enumerate(leaves):
        path = workdir / f"leaf{index}.pem"
        path.write_bytes(pem(leaf))
        leaf_paths.append(str(path))
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-attime",
            str(int(now.timestamp())),
            "-CAfile",
            str(workdir / "cas.pem"),
            "-CRLfile",
            str(workdir / "crls.pem"),
            "-crl_check",
            *leaf_paths,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def signer_of(leaf: x509.Certificate, cas: list[x509.Certificate]) -> x509.Certificate:
    (issuer,) = [ca for ca in cas if _issued_by(leaf, ca)]
    return issuer


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def test_three_years_of_rollovers_keep_every_certificate_verifiable(
    tmp_path: Path, rng: random.Random
) -> None:
    clock = FakeClock()
    (leaf_key,) = generate_keys(1)
    daemon = Daemon(tmp_path / "caucase.sqlite", clock)
    start = clock()
    client = ChainFollower(x509util.load_certificate(daemon.ca.get_ca_certificate()))
    first_held: dict[int, int] = {}
    first_signing: dict[int, int] = {}
    live: list[x509.Certificate] = []
    last_crl_number = 0
    step = 0
    while clock() - start < DURATION:
        now = clock()
        if step and step % RESTART_EVERY == 0:
            daemon.restart()
        held = daemon.ca.get_ca_certificate_list()
        assert held and all(ca.not_valid_before_utc <= now < ca.not_valid_after_utc for ca in held)
        for ca in held:
            first_held.setdefault(ca.serial_number, step)
        client.follow(daemon.ca.get_ca_certificate_chain(), now)
        assert sorted(ca.serial_number for ca in client.held) == sorted(
            ca.serial_number for ca in held
        )

        leaf = _issue(daemon.ca, leaf_key, f"step {step}")
        signer = signer_of(leaf, held)
        first_signing.setdefault(signer.serial_number, step)
        assert leaf.not_valid_after_utc <= signer.not_valid_after_utc
        live = [crt for crt in live if crt.not_valid_after_utc > now] + [leaf]

        crls = crl_list(daemon.ca)
        assert len(crls) == len(held)
        for crl in crls:
            assert crl.last_update_utc <= now < crl.next_update_utc  # type: ignore[operator]
            assert crl_number(crl) >= last_crl_number
        last_crl_number = max(crl_number(crl) for crl in crls)

        result = openssl_verify(tmp_path, now, client.held, crls, live)
        assert result.returncode == 0, result.stdout + result.stderr
        if step % REVOKE_EVERY == 0:
            live = _revoke_and_check(daemon.ca, tmp_path, now, client, live)
        # A quarter period and up to 5 s: calls reach the CA often enough for its lazy
        # renewal to run on time (see the idle-server test below).
        clock.advance(days=MEAN_STEP_DAYS, seconds=rng.uniform(0, 5))
        step += 1

    generations = sorted(first_held.values())
    assert len(generations) >= 50
    # Every CA after the first is distributed before it signs (passive phase), then signs
    # (active phase); signing never goes back to an older CA.
    # (A CA that appeared in the last period of the run has not started signing yet.)
    steps_per_period = round(CRT_LIFE / MEAN_STEP_DAYS)
    for serial, held_at in first_held.items():
        if 0 < held_at < step - steps_per_period - 1:
            assert serial in first_signing and first_signing[serial] > held_at
    order = sorted(first_signing, key=first_signing.__getitem__)
    assert order == sorted(order, key=first_held.__getitem__)
    print(f"\n{step} steps, {len(generations)} CA generations, CRL number {last_crl_number}")


def _issue(ca: CertificateAuthority, key: rsa.RSAPrivateKey, name: str) -> x509.Certificate:
    return x509util.load_certificate(ca.create_certificate(ca.append_csr(make_csr(key, name))))


def _revoke_and_check(
    ca: CertificateAuthority,
    workdir: Path,
    now: datetime.datetime,
    client: ChainFollower,
    live: list[x509.Certificate],
) -> list[x509.Certificate]:
    """Revoke the newest certificate: openssl must now refuse it with the served CRLs."""
    revoked = live[-1]
    ca.revoke_certificate(pem(revoked))
    result = openssl_verify(workdir, now, client.held, crl_list(ca), [revoked])
    assert result.returncode != 0 and "certificate revoked" in result.stdout + result.stderr
    return live[:-1]


def test_rollover_raced_by_many_threads_makes_one_new_ca(tmp_path: Path) -> None:
    """32 threads reach the renewal moment together: one CA generation, all see it."""
    clock = FakeClock()
    daemon = Daemon(tmp_path / "caucase.sqlite", clock)
    (first,) = daemon.ca.get_ca_certificate_list()
    clock.advance(days=2 * CRT_LIFE + 0.01)
    barrier = threading.Barrier(32)
    errors: list[BaseException] = []

    def reach() -> None:
        barrier.wait()
        try:
            daemon.ca.get_ca_certificate_list()
        except BaseException as error:  # reported in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=reach) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    held = daemon.ca.get_ca_certificate_list()
    assert len(held) == 2 and held[0] == first
    daemon.restart()
    assert daemon.ca.get_ca_certificate_list() == held


def test_idle_server_never_issues_a_certificate_outliving_its_ca(tmp_path: Path) -> None:
    clock = FakeClock()
    daemon = Daemon(tmp_path / "caucase.sqlite", clock)
    (leaf_key,) = generate_keys(1)
    # Nobody calls the CA when 2 periods are left (at 2 periods of age): 3 days later,
    # the first call generates the next CA, and the old one signs for one more period.
    clock.advance(days=2 * CRT_LIFE + 3)
    assert len(daemon.ca.get_ca_certificate_list()) == 2
    clock.advance(days=CRT_LIFE - 0.01)
    leaf = _issue(daemon.ca, leaf_key, "end of the passive phase")
    signer = signer_of(leaf, daemon.ca.get_ca_certificate_list())
    assert leaf.not_valid_after_utc <= signer.not_valid_after_utc
