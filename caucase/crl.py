"""CRL regeneration of one CA instance, with the reference's numbering and thisUpdate
reuse (ca-profile 2.2-2.3, errata 15): CRLs are cached per CA until half their life, and
the revoked entries survive regenerations, so one more revocation builds one entry.

Entries, CRLs and their PEM are built by one thread of the process (CRLBuilder), whichever
request thread asks: a CRL of many entries takes megabytes of C and Rust allocations,
and built in turn by each request thread they would leave that much in each thread's malloc
arena, so a long-running server kept many times the memory of a fresh one.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Protocol, TypeVar

from cryptography import x509

from caucase.clock import from_timestamp, to_timestamp
from caucase.crypto import keys, x509util
from caucase.storage import Storage


class SigningCA(Protocol):
    """A CA certificate and key held by the authority, as the CRLs need it."""

    @property
    def key(self) -> keys.PrivateKey: ...

    @property
    def crt(self) -> x509.Certificate: ...

    @property
    def authority_key_id(self) -> int: ...


T = TypeVar("T")
# Revocations kept while waiting for an earlier crl_number to be reported.
MAX_UNAPPLIED_REVOCATIONS = 4096


class CRLBuilder:
    """The one thread building CRL material, started on first use."""

    _lock = threading.Lock()
    _executor: ThreadPoolExecutor | None = None

    @classmethod
    def run(cls, work: Callable[[], T]) -> T:
        """`work()` in the builder thread; its result, or its exception."""
        with cls._lock:
            if cls._executor is None:
                cls._executor = ThreadPoolExecutor(1, thread_name_prefix="crl builder")
            executor = cls._executor
        return executor.submit(work).result()


class CRLCache:
    """CRL regeneration with the reference's numbering and thisUpdate reuse (ca-profile 2.2-2.3).

    Callers hold the CA lock: this class is not thread-safe on its own."""

    def __init__(
        self, storage: Storage, crl_life: datetime.timedelta, renew_time: datetime.timedelta
    ) -> None:
        self._storage = storage
        self._crl_life = crl_life
        self._renew_time = renew_time
        self._by_authority: dict[int, tuple[bytes, datetime.datetime]] = {}
        # CRL entries survive regenerations: after one more revocation only it is built.
        self._entries: dict[tuple[int, int], x509.RevokedCertificate] = {}
        # (crl_number, earliest expiry) when the entries were read: every revocation bumps
        # crl_number in its own transaction, so while neither changed they are still current.
        self._entries_version: tuple[int, int | None] | None = None
        # Revocations (row, expiry) reported ahead of a number still missing, by crl_number;
        # None for a number taken by a CRL generation of this cache.
        self._unapplied: dict[int, tuple[tuple[int, int], int] | None] = {}
        self._result: dict[int, bytes] | None = None
        self._bundle: bytes | None = None

    def clear(self) -> None:
        """Forget everything: after a revocation or a CA list change."""
        self._by_authority.clear()
        self._result = None
        self._bundle = None

    def get_bundle(self, pair_list: Sequence[SigningCA], now: datetime.datetime) -> bytes:
        """The CRLs joined by a blank line, rebuilt only with the CRLs themselves."""
        result = self.get(pair_list, now)
        if self._bundle is None:
            self._bundle = CRLBuilder.run(lambda: b"\n".join(result.values()))
        return self._bundle

    def get(self, pair_list: Sequence[SigningCA], now: datetime.datetime) -> dict[int, bytes]:
        """CRL per CA (oldest first); no storage access while fresh."""
        if self._result is not None and all(
            self._is_fresh(pair.authority_key_id, now) for pair in pair_list
        ):
            return self._result
        return self._regenerate(pair_list, now)

    def _is_fresh(self, authority_key_id: int, now: datetime.datetime) -> bool:
        cached = self._by_authority.get(authority_key_id)
        return cached is not None and cached[1] >= now

    def prepare_entries(self, now: datetime.datetime) -> None:
        """Build the entries of the stored revocations ahead of the first CRL."""
        number, _ = self._storage.get_crl_state()
        self._revoked_entries(number, to_timestamp(now))

    def add_revocation(self, row: tuple[int, int], expiration: int, number: int) -> None:
        """A revocation this process stored, which set crl_number to `number`: its entry is
        added to those held, instead of reading every row again at the next regeneration,
        once every number before it is accounted for (concurrent revocations may report
        out of order; rows are listed in the order of their numbers)."""
        version = self._entries_version
        if version is None or number <= version[0]:
            return
        if len(self._unapplied) >= MAX_UNAPPLIED_REVOCATIONS:
            self._unapplied.clear()  # a number that never came: the next read catches up
        self._unapplied[number] = (row, expiration)
        self._apply_unapplied()

    def _apply_unapplied(self) -> None:
        """Add the reported revocations that follow the entries held without a gap."""
        version = self._entries_version
        if version is None:
            return
        reached, earliest = version
        rows = []
        while reached + 1 in self._unapplied:
            reached += 1
            revocation = self._unapplied.pop(reached)
            if revocation is not None:
                rows.append(revocation[0])
                earliest = revocation[1] if earliest is None else min(earliest, revocation[1])
        if rows:
            built = CRLBuilder.run(
                lambda: [
                    x509util.revoked_entry(serial, from_timestamp(day)) for serial, day in rows
                ]
            )
            self._entries.update(zip(rows, built))
        self._entries_version = (reached, earliest)

    def _revoked_entries(self, number: int, now: int) -> list[x509.RevokedCertificate]:
        """The entries of the stored revocations, read again only when one may have been
        added (crl_number is no longer `number`) or expired since they were read."""
        version = self._entries_version
        if (
            version is not None
            and version[0] == number
            and (version[1] is None or now <= version[1])
        ):
            return list(self._entries.values())
        revoked = self._storage.get_revoked(now)
        expiry = self._storage.earliest_revocation_expiry()
        entries = self._crl_entries(revoked)
        self._entries_version = (number, expiry)
        self._unapplied = {key: value for key, value in self._unapplied.items() if key > number}
        return entries

    def _crl_entries(self, revoked: list[tuple[int, int]]) -> list[x509.RevokedCertificate]:
        """Entries in storage order, reusing those built by earlier regenerations."""
        return CRLBuilder.run(lambda: self._build_entries(revoked))

    def _build_entries(self, revoked: list[tuple[int, int]]) -> list[x509.RevokedCertificate]:
        previous = self._entries
        entries = {}
        dates: dict[int, datetime.datetime] = {}
        for row in revoked:
            entry = previous.get(row)
            if entry is None:
                date = dates.get(row[1])
                if date is None:
                    date = dates[row[1]] = from_timestamp(row[1])
                entry = x509util.revoked_entry(row[0], date)
            entries[row] = entry
        self._entries = entries
        return list(entries.values())

    def _regenerate(
        self, pair_list: Sequence[SigningCA], now: datetime.datetime
    ) -> dict[int, bytes]:
        number, last_update = self._storage.get_crl_state()
        renewed = last_update is None
        entries = self._revoked_entries(number, to_timestamp(now))
        result = {}
        for pair in pair_list:
            cached = self._by_authority.get(pair.authority_key_id)
            if cached is not None and cached[1] >= now:
                result[pair.authority_key_id] = cached[0]
                continue
            if cached is not None and not renewed:
                # One expiry forces one fresh number, shared by the CAs that follow.
                last_update = None
                renewed = True
            if last_update is None or from_timestamp(last_update) + self._renew_time < now:
                last_update = to_timestamp(now - x509util.BACKDATE)
                number = self._start_generation(last_update)
            this_update = from_timestamp(last_update)
            pem = CRLBuilder.run(partial(self._signed_pem, pair, entries, number, this_update))
            self._by_authority[pair.authority_key_id] = (pem, this_update + self._renew_time)
            result[pair.authority_key_id] = pem
        for authority_key_id in set(self._by_authority) - set(result):
            del self._by_authority[authority_key_id]
        self._result = result
        self._bundle = None
        return result

    def _start_generation(self, last_update: int) -> int:
        """A new CRL number, accounted for like a revocation's (it adds no entry)."""
        new_number = self._storage.start_crl_generation(last_update)
        if self._entries_version is not None and new_number > self._entries_version[0]:
            self._unapplied[new_number] = None
            self._apply_unapplied()
        return new_number

    def _signed_pem(
        self,
        pair: SigningCA,
        entries: list[x509.RevokedCertificate],
        number: int,
        this_update: datetime.datetime,
    ) -> bytes:
        crl = x509util.make_crl(
            pair.key, pair.crt, entries, number, this_update, this_update + self._crl_life
        )
        return x509util.dump_crl(crl)
