"""CAList: the CA key pairs of one CA instance, renewed when due (ca-profile 3).

Parsed once per change of the CA rows and kept in memory, with the ca.crt.json chain built
from them. When other caucased share the database (PostgreSQL), each use first reads the
rows' version from storage (one small read), so that a rollover made by another node is
seen at once; a caller whose own transaction reads that version can skip it (`follow`).
A CA is stored only if the CA rows are still at the version the decision was made on, so
that nodes racing through a rollover make one new CA between them.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509

from caucase import events
from caucase.ca_keys import CAKeyPair, build_chain, load_ca_key_pair
from caucase.clock import Clock, to_timestamp
from caucase.crypto import keys, x509util
from caucase.exceptions import CertificateAuthorityException
from caucase.storage import CAVersion, Storage

logger = logging.getLogger(__name__)

# Renew the CA once the newest one has at most this many certificate lives left (3.1).
CA_RENEWAL_MARGIN = 2


@dataclasses.dataclass(frozen=True)
class CAProfile:
    """What the next CA generation is made of; `key_spec` None: never generate one."""

    subject: x509.Name
    key_spec: keys.KeySpec | None
    crt_life: datetime.timedelta
    ca_life: datetime.timedelta
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = ()


class CAList:
    """The held CA key pairs, oldest first. `lock` is the CA's: the list changes under it,
    and `on_change` (which drops what derives from the list) is called under it."""

    def __init__(
        self,
        storage: Storage,
        profile: CAProfile,
        clock: Clock,
        lock: threading.RLock,
        on_change: Callable[[], None],
        observer: events.Observer,
    ) -> None:
        self._storage = storage
        self._profile = profile
        self._clock = clock
        self._lock = lock
        self._on_change = on_change
        self._observer = observer
        self._renewal_lock = threading.Lock()
        self._pair_list: list[CAKeyPair] = []
        self._chain: list[dict[str, Any]] = []
        self._version = storage.get_ca_version()
        self._load(clock())
        self._check_renewal()

    @property
    def empty(self) -> bool:
        """No CA held (as last read: no storage read)."""
        return not self._pair_list

    def _load(self, now: datetime.datetime) -> None:
        """Read the CA rows again; a row that cannot be used is skipped, never fatal.

        The version is read first: a row added in between makes the next check reload."""
        version = self._storage.get_ca_version()
        pair_list = []
        for key_pem, crt_pem in self._storage.get_ca_key_pairs(to_timestamp(now)):
            try:
                pair_list.append(load_ca_key_pair(key_pem, crt_pem, now))
            except (ValueError, TypeError) as error:
                logger.warning("Skipping unusable CA certificate row: %s", error)
        pair_list.sort(key=lambda pair: pair.not_after)
        with self._lock:
            self._version = version
            self._set(pair_list)

    def reload(self) -> None:
        """Read the CA rows again (another node changed them)."""
        self._load(self._clock())

    def _set(self, pair_list: list[CAKeyPair]) -> None:
        self._pair_list = pair_list
        self._chain = build_chain(pair_list)
        self._on_change()

    def _needs_new_ca(self, now: datetime.datetime) -> bool:
        if not self._pair_list:
            return True
        remaining = self._pair_list[-1].not_after - now
        return remaining / self._profile.crt_life <= CA_RENEWAL_MARGIN

    def _check_renewal(self, follow: bool = True) -> datetime.datetime:
        """Generate the next CA when due (ca-profile 3.1); return the "now" used.

        Without a key spec (restore) nothing is ever generated, whatever the CA list holds:
        the reference crashes there. A thread finding a generation under way skips it."""
        now = self._clock()
        if follow and self._storage.shared and self._storage.get_ca_version() != self._version:
            self._load(now)
        spec = self._profile.key_spec
        if (
            spec is not None
            and self._needs_new_ca(now)
            and self._renewal_lock.acquire(blocking=False)
        ):
            try:
                if self._needs_new_ca(now):
                    self._generate(now, spec)
            finally:
                self._renewal_lock.release()
        return now

    def start_rollover(self) -> x509.Certificate:
        """Make the next CA certificate now rather than when the newest one nears its end
        (caucased-manage --renew-ca): it is distributed during the passive phase and signs
        one certificate life later, as after a lazy renewal (ca-profile 3.2)."""
        spec = self._profile.key_spec
        if spec is None:
            raise CertificateAuthorityException("CA generation is disabled")
        pair_list, now = self.current()
        if not pair_list:
            raise CertificateAuthorityException("No CA certificate to renew")
        with self._renewal_lock:
            # Only a newest CA already signing on its own right (older than one certificate
            # life) leaves the successor a passive phase: otherwise either a rollover is
            # under way, or the successor would sign at once, before clients learn it.
            newest = self._pair_list[-1]
            signs_from = newest.not_before + self._profile.crt_life
            if signs_from >= now:
                raise CertificateAuthorityException(
                    "the newest CA certificate is younger than one certificate validity "
                    f"(a rollover may be under way): try again after {signs_from.isoformat()}"
                )
            self._generate(now, spec)
            return self._pair_list[-1].crt

    def _generate(self, now: datetime.datetime, spec: keys.KeySpec) -> None:
        """Make and store the next CA, then read the CA list again: it holds either this
        CA or the one another node stored first."""
        profile = self._profile
        version = self._version
        key = keys.generate(spec)
        if self._pair_list:
            crt = x509util.renew_ca_certificate(self._pair_list[-1].crt, key, now, profile.ca_life)
        else:
            crt = x509util.make_ca_certificate(
                key, profile.subject, now, profile.ca_life, profile.extensions
            )
        stored = self._storage.append_next_ca_key_pair(
            version,
            to_timestamp(crt.not_valid_after_utc),
            keys.dump_private_key(key),
            x509util.dump_certificate(crt),
        )
        if not stored:
            logger.info("Another process stored the next CA first: using that one")
        else:
            self._observer.notify(events.ca_generated(self._storage.prefix, crt))
        self._load(now)

    def current(self, follow: bool = True) -> tuple[list[CAKeyPair], datetime.datetime]:
        """Renewal check, then the held CAs that are not expired yet, oldest first."""
        pair_list, now, _ = self._current(follow)
        return pair_list, now

    def _current(self, follow: bool) -> tuple[list[CAKeyPair], datetime.datetime, CAVersion]:
        now = self._check_renewal(follow)
        with self._lock:
            if self._pair_list and self._pair_list[0].not_after < now:
                self._set([pair for pair in self._pair_list if pair.not_after >= now])
            return self._pair_list, now, self._version

    def active(self, follow: bool = True) -> tuple[CAKeyPair, datetime.datetime, CAVersion]:
        """The signing CA: newest one older than one certificate life, else the newest
        (3.2); the "now" it was chosen at, and the version of the CA rows it was read from.
        Without `follow`, the list is taken as last read: the caller checks the version."""
        pair_list, now, version = self._current(follow)
        if not pair_list:
            raise CertificateAuthorityException("No CA certificate available")
        for pair in reversed(pair_list):
            if pair.not_before + self._profile.crt_life < now:
                return pair, now, version
        return pair_list[-1], now, version

    def chain(self) -> list[dict[str, Any]]:
        """ca.crt.json items: one signed envelope per consecutive CA pair."""
        self.current()
        with self._lock:
            return list(self._chain)
