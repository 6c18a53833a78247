"""CRL regeneration of one CA instance, with the reference's numbering and thisUpdate
reuse (ca-profile 2.2-2.3, errata 15).

The CRL each CA serves is stored with its number (storage's issued CRLs), so that every
caucased of a database serves the same CRL for a number, and a node finds in storage the
CRL another one signed instead of signing its own. A request reads the CRL state (number,
last update: one small read) and serves the CRLs held in memory while they are of that
number and within half their life; otherwise it takes the stored ones, and only when they
will not do either, signs new ones in one transaction holding the CA's CRL lock, where
revocations wait. The revoked entries survive regenerations, so one more revocation builds
one entry.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Protocol

from cryptography import x509

from caucase.clock import from_timestamp, to_timestamp
from caucase.crypto import keys, x509util
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
        self._entries: dict[tuple[int, int], x509.RevokedCertificate] = {}
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
            self._bundle = b"\n".join(result.values())
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
        self._crl_entries(self._storage.get_revoked(to_timestamp(now)))

    def _crl_entries(self, revoked: list[tuple[int, int]]) -> list[x509.RevokedCertificate]:
        """Entries in storage order, reusing those built by earlier regenerations."""
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
        if stale or last_update is None or from_timestamp(last_update) + self._renew_time < now:
            last_update = to_timestamp(now - x509util.BACKDATE)
            number = self._storage.start_crl_generation(last_update)
            due = list(pair_list)
        entries = self._crl_entries(self._storage.get_revoked(to_timestamp(now)))
        for pair in due:
            issued = (number, last_update, self._sign(pair, entries, number, last_update))
            self._storage.store_issued_crl(pair.authority_key_id, issued)
            stored[pair.authority_key_id] = issued
        # CRLs of CAs gone for long (expired): whoever still needs one signs it again.
        self._storage.forget_issued_crls(to_timestamp(now - 2 * self._crl_life))
        return stored

    def _sign(
        self,
        pair: SigningCA,
        entries: list[x509.RevokedCertificate],
        number: int,
        last_update: int,
    ) -> bytes:
        this_update = from_timestamp(last_update)
        crl = x509util.make_crl(
            pair.key, pair.crt, entries, number, this_update, this_update + self._crl_life
        )
        return x509util.dump_crl(crl)
