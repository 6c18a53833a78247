"""CRL regeneration of one CA instance, with the reference's numbering and thisUpdate
reuse (ca-profile 2.2-2.3, errata 15).

The CRL each CA serves is stored with its number (storage's issued CRLs), so that every
caucased of a database serves the same CRL for a number, and a node finds in storage the
CRL another one signed instead of signing its own. A request reads the CRL state (number,
last update: one small read) and serves the CRLs held in memory while they are of that
number and within half their life; otherwise it takes the stored ones, and only when they
will not do either, signs new ones in one transaction holding the CA's CRL lock, where
revocations wait. The revoked entries survive regenerations: they are read again only
when the CRL number or the earliest expiry of the stored revocations shows they may have
changed, and a revocation made by this process adds its own entry.

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
from caucase.crypto import crl_profile, keys, x509util
from caucase.storage import Storage

# (CRL number, thisUpdate, PEM) of one CA's CRL.
IssuedCRL = tuple[int, int, bytes]


class SigningCA(Protocol):
    """A CA certificate and key held by the authority, as the CRLs need it."""

    @property
    def key(self) -> keys.PrivateKey: ...

    @property
    def crt(self) -> x509.Certificate: ...

    @property
    def authority_key_id(self) -> int: ...


T = TypeVar("T")
# A revocation as storage lists it: (serial, revocation date in Unix seconds).
Row = tuple[int, int]
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
    """The CRLs of one CA instance, from memory, storage, or signed anew.

    Callers hold the CA lock: this class is not thread-safe on its own."""

    def __init__(
        self, storage: Storage, crl_life: datetime.timedelta, renew_time: datetime.timedelta
    ) -> None:
        self._storage = storage
        self._crl_life = crl_life
        self._renew_time = renew_time
        self._held: dict[int, IssuedCRL] = {}
        # CRL entries survive regenerations: after one more revocation only it is built.
        self._entries: dict[Row, x509.RevokedCertificate] = {}
        # (crl_number, earliest expiry) when the entries were read: every revocation bumps
        # crl_number in its own transaction, so while neither changed they are still current.
        self._entries_version: tuple[int, int | None] | None = None
        # Revocations (row, expiry) reported ahead of a number still missing, by crl_number;
        # None for a number taken by a CRL generation of this cache.
        self._unapplied: dict[int, tuple[Row, int, int | None] | None] = {}
        self._result: dict[int, bytes] | None = None
        self._bundle: bytes | None = None

    def clear(self) -> None:
        """Forget the CRLs held in memory: after a revocation or a CA list change."""
        self._held.clear()
        self._result = None
        self._bundle = None

    def get_bundle(self, pair_list: Sequence[SigningCA], now: datetime.datetime) -> bytes:
        """The CRLs joined by a blank line, rebuilt only with the CRLs themselves."""
        result = self.get(pair_list, now)
        if self._bundle is None:
            self._bundle = CRLBuilder.run(lambda: b"\n".join(result.values()))
        return self._bundle

    def get(self, pair_list: Sequence[SigningCA], now: datetime.datetime) -> dict[int, bytes]:
        """CRL per CA (oldest first). Without other writers, the CRLs held in memory need no
        storage access while fresh: revocations here clear them."""
        shared = self._storage.shared
        if not shared and self._holds(pair_list, None, now):
            return self._result or {}
        number, _ = self._storage.get_crl_state()
        if shared and self._holds(pair_list, number, now):
            return self._result or {}
        stored = self._storage.get_issued_crls()
        if not self._usable(stored, pair_list, number, now):
            with self._storage.crl_generation():
                stored = self._regenerate(pair_list, now)
        held = {pair.authority_key_id: stored[pair.authority_key_id] for pair in pair_list}
        if held != self._held or self._result is None:
            self._held = held
            self._result = {key_id: issued[2] for key_id, issued in held.items()}
            self._bundle = None
        return self._result

    def _holds(
        self, pair_list: Sequence[SigningCA], number: int | None, now: datetime.datetime
    ) -> bool:
        """Whether the CRLs in memory are those of these CAs, fresh, and of `number` (when
        given)."""
        if self._result is None or set(self._held) != {
            pair.authority_key_id for pair in pair_list
        }:
            return False
        if number is None:
            number = next(iter(self._held.values()))[0] if self._held else 0
        return self._usable(self._held, pair_list, number, now)

    def _usable(
        self,
        crls: dict[int, IssuedCRL],
        pair_list: Sequence[SigningCA],
        number: int,
        now: datetime.datetime,
    ) -> bool:
        """Whether `crls` has, for every CA, a CRL of the current number within half its life."""
        for pair in pair_list:
            issued = crls.get(pair.authority_key_id)
            if issued is None or issued[0] != number or not self._fresh(issued, now):
                return False
        return True

    def _fresh(self, issued: IssuedCRL, now: datetime.datetime) -> bool:
        return from_timestamp(issued[1]) + self._renew_time >= now

    def prepare_entries(self, now: datetime.datetime) -> None:
        """Build the entries of the stored revocations ahead of the first CRL."""
        number, _ = self._storage.get_crl_state()
        self._revoked_entries(number, to_timestamp(now))

    def add_revocation(
        self, row: Row, expiration: int, number: int, reason: int | None = None
    ) -> None:
        """A revocation this process stored, which set crl_number to `number`: its entry is
        added to those held, instead of reading every row again at the next regeneration,
        once every number before it is accounted for (concurrent revocations may report
        out of order; rows are listed in the order of their numbers)."""
        version = self._entries_version
        if version is None or number <= version[0]:
            return
        if len(self._unapplied) >= MAX_UNAPPLIED_REVOCATIONS:
            self._unapplied.clear()  # a number that never came: the next read catches up
        self._unapplied[number] = (row, expiration, reason)
        self._apply_unapplied()

    def _apply_unapplied(self) -> None:
        """Add the reported revocations that follow the entries held without a gap."""
        version = self._entries_version
        if version is None:
            return
        reached, earliest = version
        rows: list[Row] = []
        reasons: dict[int, int] = {}
        while reached + 1 in self._unapplied:
            reached += 1
            revocation = self._unapplied.pop(reached)
            if revocation is not None:
                row, expiry, reason = revocation
                rows.append(row)
                if reason is not None:
                    reasons[row[0]] = reason
                earliest = expiry if earliest is None else min(earliest, expiry)
        if rows:
            dates: dict[int, datetime.datetime] = {}
            built = CRLBuilder.run(lambda: [_entry(row, reasons, dates) for row in rows])
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

    def _crl_entries(self, revoked: list[Row]) -> list[x509.RevokedCertificate]:
        """Entries in storage order, with their reason codes, reusing those built by
        earlier regenerations (a row's reason is set with it, never changed)."""
        reasons = self._storage.get_revocation_reasons()
        return CRLBuilder.run(lambda: self._build_entries(revoked, reasons))

    def _build_entries(
        self, revoked: list[Row], reasons: dict[int, int]
    ) -> list[x509.RevokedCertificate]:
        previous = self._entries
        entries = {}
        dates: dict[int, datetime.datetime] = {}
        for row in revoked:
            entry = previous.get(row)
            entries[row] = entry if entry is not None else _entry(row, reasons, dates)
        self._entries = entries
        return list(entries.values())

    def _regenerate(
        self, pair_list: Sequence[SigningCA], now: datetime.datetime
    ) -> dict[int, IssuedCRL]:
        """Inside the CRL lock: the stored CRLs, completed with those to sign now.

        A CRL of an older number (revocations since) is signed again with the current
        number and last update, as the reference does. A CRL of the current number past
        half its life, or a last update past it, takes a fresh number, which every CA
        then gets a CRL of."""
        number, last_update = self._storage.get_crl_state()
        stored = self._storage.get_issued_crls()
        due = []
        stale = False
        for pair in pair_list:
            issued = stored.get(pair.authority_key_id)
            if issued is None or issued[0] != number:
                due.append(pair)
            elif not self._fresh(issued, now):
                due.append(pair)
                stale = True
        if not due:
            return stored
        entries = self._revoked_entries(number, to_timestamp(now))
        if stale or last_update is None or from_timestamp(last_update) + self._renew_time < now:
            last_update = to_timestamp(now - x509util.BACKDATE)
            number = self._start_generation(last_update)
            due = list(pair_list)
        for pair in due:
            pem = CRLBuilder.run(partial(self._sign, pair, entries, number, last_update))
            issued = (number, last_update, pem)
            self._storage.store_issued_crl(pair.authority_key_id, issued)
            stored[pair.authority_key_id] = issued
        # CRLs of CAs gone for long (expired): whoever still needs one signs it again.
        self._storage.forget_issued_crls(to_timestamp(now - 2 * self._crl_life))
        return stored

    def _start_generation(self, last_update: int) -> int:
        """A new CRL number, accounted for like a revocation's (it adds no entry)."""
        new_number = self._storage.start_crl_generation(last_update)
        if self._entries_version is not None and new_number > self._entries_version[0]:
            self._unapplied[new_number] = None
            self._apply_unapplied()
        return new_number

    def _sign(
        self,
        pair: SigningCA,
        entries: list[x509.RevokedCertificate],
        number: int,
        last_update: int,
    ) -> bytes:
        this_update = from_timestamp(last_update)
        crl = crl_profile.make_crl(
            pair.key, pair.crt, entries, number, this_update, this_update + self._crl_life
        )
        return x509util.dump_crl(crl)


def _entry(
    row: Row, reasons: dict[int, int], dates: dict[int, datetime.datetime]
) -> x509.RevokedCertificate:
    """The CRL entry of one revocation, with its reasonCode when it has one; revocations
    of the same second share one date object (`dates`)."""
    serial, revoked_at = row
    date = dates.get(revoked_at)
    if date is None:
        date = dates[revoked_at] = from_timestamp(revoked_at)
    code = reasons.get(serial)
    reason = None if code is None else crl_profile.REASON_CODES.get(code)
    return crl_profile.revoked_entry(serial, date, reason)
