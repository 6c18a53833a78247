"""CRL regeneration of one CA instance, with the reference's numbering and thisUpdate
reuse (ca-profile 2.2-2.3, errata 15): CRLs are cached per CA until half their life, and
the revoked entries survive regenerations, so one more revocation builds one entry."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Protocol

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
        self._entries: dict[tuple[int, int, int | None], x509.RevokedCertificate] = {}
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
            self._bundle = b"\n".join(result.values())
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
        self._crl_entries(self._storage.get_revoked(to_timestamp(now)))

    def _crl_entries(self, revoked: list[tuple[int, int]]) -> list[x509.RevokedCertificate]:
        """Entries in storage order, with their reason codes, reusing those built by
        earlier regenerations."""
        reasons = self._storage.get_revocation_reasons()
        previous = self._entries
        entries = {}
        dates: dict[int, datetime.datetime] = {}
        for serial, timestamp in revoked:
            code = reasons.get(serial)
            key = (serial, timestamp, code)
            entry = previous.get(key)
            if entry is None:
                date = dates.get(timestamp)
                if date is None:
                    date = dates[timestamp] = from_timestamp(timestamp)
                reason = None if code is None else x509util.REASON_CODES.get(code)
                entry = x509util.revoked_entry(serial, date, reason)
            entries[key] = entry
        self._entries = entries
        return list(entries.values())

    def _regenerate(
        self, pair_list: Sequence[SigningCA], now: datetime.datetime
    ) -> dict[int, bytes]:
        number, last_update = self._storage.get_crl_state()
        renewed = last_update is None
        revoked = self._storage.get_revoked(to_timestamp(now))
        entries = self._crl_entries(revoked)
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
                number = self._storage.start_crl_generation(last_update)
            this_update = from_timestamp(last_update)
            crl = x509util.make_crl(
                pair.key,
                pair.crt,
                entries,
                number,
                this_update,
                this_update + self._crl_life,
            )
            pem = x509util.dump_crl(crl)
            self._by_authority[pair.authority_key_id] = (pem, this_update + self._renew_time)
            result[pair.authority_key_id] = pem
        for authority_key_id in set(self._by_authority) - set(result):
            del self._by_authority[authority_key_id]
        self._result = result
        self._bundle = None
        return result
