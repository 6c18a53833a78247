"""A CRL regeneration reuses the entries it holds while the stored revocations cannot have
changed (same crl_number, none expired), and reads them again as soon as they may have."""

from __future__ import annotations

import datetime
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from caucase.ca import CertificateAuthority
from caucase.clock import to_timestamp
from caucase.crl import CRLCache
from caucase.crypto import keys, x509util
from caucase.storage import Storage
from tests.conftest import FakeClock
from tests.support.ca_helpers import name

SUBJECT = name("CAS")
CRT_DAYS = 10


@dataclass(frozen=True)
class _SigningCA:
    key: keys.PrivateKey
    crt: x509.Certificate
    authority_key_id: int


def _signing_ca(clock: FakeClock) -> _SigningCA:
    key = keys.generate()
    crt = x509util.make_ca_certificate(key, SUBJECT, clock(), datetime.timedelta(days=40))
    return _SigningCA(key, crt, x509util.authority_key_id_int(crt))


def _authority(db: Path, clock: FakeClock) -> CertificateAuthority:
    return CertificateAuthority(Storage(str(db), "cas"), SUBJECT, 2048, CRT_DAYS, clock=clock)


def _listed(authority: CertificateAuthority) -> list[int]:
    return [entry.serial_number for entry in x509util.load_crl(authority.get_crl_bundle())]


def _past_renewal(clock: FakeClock) -> None:
    """Move past half the CRL life (crl_renew_period 0.33 of CRT_DAYS): the next fetch
    regenerates the CRL."""
    clock.advance(days=CRT_DAYS * 0.33 / 2 + 0.1)


def _insert_behind_the_counter(db: Path, serial: int, expiration: int) -> None:
    """A row no revocation made (crl_number untouched): only a fresh read can see it."""
    with sqlite3.connect(db) as connection:
        connection.execute(
            "INSERT INTO casrevoked (serial, revocation_date, expiration_date) VALUES (?, ?, ?)",
            (str(serial), expiration - 100, expiration),
        )


def _bump_crl_number(db: Path) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE cascounter SET value = value + 1 WHERE name = 'crl_number'")


def test_regeneration_reuses_the_entries_until_crl_number_moves(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "caucase.sqlite"
    authority = _authority(db, clock)
    authority.revoke_serial(1)
    authority.prepare_crl_entries()
    assert _listed(authority) == [1]
    _insert_behind_the_counter(db, 2, to_timestamp(clock()) + 10**7)
    _past_renewal(clock)
    assert _listed(authority) == [1]  # regenerated from the entries it held
    _bump_crl_number(db)  # what any revocation, by any process, does with its row
    _past_renewal(clock)
    assert _listed(authority) == [1, 2]


def test_a_revocation_through_another_authority_object_is_listed(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "caucase.sqlite"
    first = _authority(db, clock)
    first.revoke_serial(1)
    assert _listed(first) == [1]
    _authority(db, clock).revoke_serial(2)
    _past_renewal(clock)
    assert _listed(first) == [1, 2]


def test_an_expired_revocation_leaves_the_crl(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "caucase.sqlite"
    authority = _authority(db, clock)
    authority.revoke_serial(1)
    soon = to_timestamp(clock()) + 3600
    _insert_behind_the_counter(db, 2, soon)
    _bump_crl_number(db)
    assert _listed(authority) == [1, 2]
    clock.advance(hours=2)
    _past_renewal(clock)
    assert _listed(authority) == [1]


def test_a_revocation_here_adds_its_entry_without_reading_the_rows(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "caucase.sqlite"
    authority = _authority(db, clock)
    authority.revoke_serial(1)
    assert _listed(authority) == [1]
    _insert_behind_the_counter(db, 2, to_timestamp(clock()) + 10**7)
    authority.revoke_serial(3)
    assert _listed(authority) == [1, 3]  # its own entry added to those held
    _bump_crl_number(db)
    _past_renewal(clock)
    assert _listed(authority) == [1, 2, 3]  # storage order once read again


def test_concurrent_revocations_are_all_listed_in_storage_order(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "caucase.sqlite"
    authority = _authority(db, clock)
    assert _listed(authority) == []
    serials = list(range(100, 140))
    threads = [threading.Thread(target=authority.revoke_serial, args=(s,)) for s in serials]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with sqlite3.connect(db) as connection:
        stored = [
            int(row[0])
            for row in connection.execute("SELECT serial FROM casrevoked ORDER BY rowid")
        ]
    assert sorted(stored) == serials
    assert _listed(authority) == stored
    _past_renewal(clock)
    assert _listed(authority) == stored


def test_revocations_reported_out_of_order_are_added_in_number_order(
    tmp_path: Path, clock: FakeClock
) -> None:
    """As when concurrent revocations reach the CA lock in another order than their commits."""
    db = tmp_path / "caucase.sqlite"
    storage = Storage(str(db), "cas")
    cache = CRLCache(storage, datetime.timedelta(days=3), datetime.timedelta(days=1))
    cache.prepare_entries(clock())
    now = to_timestamp(clock())
    expiry = now + 10**7
    rows = [(serial, now) for serial in (7, 8, 9)]
    numbers = [storage.revoke(*row, expiry) for row in rows]
    _insert_behind_the_counter(db, 99, expiry)  # only a fresh read would list it
    for row, number in reversed(list(zip(rows, numbers))):
        cache.add_revocation(row, expiry, number)
    crl = x509util.load_crl(cache.get_bundle([_signing_ca(clock)], clock()))
    assert [entry.serial_number for entry in crl] == [7, 8, 9]
