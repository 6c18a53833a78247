"""CertificateAuthority: the policy of one CA instance (ca-profile 2-4).

Talks to storage and x509util only. Parsed CA keys and certificates, the CA chain
document and the CRLs live in memory and are rebuilt only when what they derive from
changes, so that per-request work stays cheap; authentication looks revoked serials up
in storage (one indexed read), so it never waits for a CRL to be signed.

When other caucased share the database (PostgreSQL), each use of the CA list first reads
its version from storage (one small read), so that a rollover made by another node is
seen at once; a CA is stored only if the CA rows are still at the version the decision was
made on, so that nodes racing through a rollover make one new CA between them.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Container, Iterator, Sequence
from typing import Any

from cryptography import x509

from caucase import events
from caucase.ca_keys import CAKeyPair, build_chain, load_ca_key_pair
from caucase.clock import Clock, to_timestamp, utcnow
from caucase.crl import CRLCache
from caucase.crypto import crl_profile, keys, verification, x509util
from caucase.crypto.x509util import SigningMode
from caucase.exceptions import (
    BadSerial,
    CertificateAuthorityException,
    CertificateVerificationError,
    Found,
    NotFound,
)
from caucase.renewal_schedule import RenewalSchedule
from caucase.storage import Storage
from caucase.storage.inventory import InventoryEntry, Query

logger = logging.getLogger(__name__)

# Renew the CA once the newest one has at most this many certificate lives left (3.1).
CA_RENEWAL_MARGIN = 2
MINIMUM_CA_LIFE_PERIOD = 3
# How the inventory lists a certificate this CA signed, by the way it was signed.
_APPROVALS = {SigningMode.YES: "auto", SigningMode.NO: "user", SigningMode.PASSTHROUGH: "renewed"}


class CertificateAuthority:
    """One CA instance: its CA certificates, the CSRs and certificates it holds, its CRLs.

    Thread-safe: one object serves every request thread. Leaf certificates are signed
    outside the lock; CA generation and CRL signing happen under it."""

    def __init__(
        self,
        storage: Storage,
        ca_subject: x509.Name,
        ca_key: keys.KeySpec | int | None,
        crt_life: float,
        clock: Clock = utcnow,
        ca_life_period: int = 4,
        crl_renew_period: float = 0.33,
        crl_base_url: str | None = None,
        auto_sign_csr_amount: int = 0,
        lock_auto_sign_csr_amount: bool = False,
        ca_extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
        renewal_threshold: float = 31,
        observer: events.Observer = events.NULL_OBSERVER,
    ) -> None:
        """crt_life is in days. `ca_key` is the key of new CA generations (an int: RSA of
        that many bits); None disables CA generation (restore). Changing it affects only
        the next generation: existing CAs keep signing until the rollover replaces them.
        No suggested renewal window ends later than `renewal_threshold` days before the
        certificate's notAfter. `observer` hears of every change, before it returns."""
        if ca_life_period < MINIMUM_CA_LIFE_PERIOD:
            raise ValueError(f"ca_life_period must be at least {MINIMUM_CA_LIFE_PERIOD}")
        self._storage = storage
        self._observer = observer
        self._name = storage.prefix
        self._ca_subject = ca_subject
        self._ca_key_spec = keys.KeySpec.rsa(ca_key) if isinstance(ca_key, int) else ca_key
        self._crt_life = datetime.timedelta(days=crt_life)
        self._ca_life = self._crt_life * ca_life_period
        self._crl_life = self._crt_life * crl_renew_period
        self._clock = clock
        self._crl_base_url = crl_base_url
        self._ca_extensions = tuple(ca_extensions)
        if lock_auto_sign_csr_amount:
            storage.lock_auto_sign_amount(auto_sign_csr_amount)
        locked_amount = storage.get_locked_auto_sign_amount()
        self._auto_sign_csr_amount = (
            auto_sign_csr_amount if locked_amount is None else locked_amount
        )
        self._auto_sign_exhausted = self._auto_sign_csr_amount <= 0
        self._lock = threading.RLock()
        self._renewal_lock = threading.Lock()
        self._crl_cache = CRLCache(storage, self._crl_life, self._crl_life / 2)
        self.renewal = RenewalSchedule(storage, clock, datetime.timedelta(days=renewal_threshold))
        self._pair_list: list[CAKeyPair] = []
        self._chain: list[dict[str, Any]] = []
        self._ca_version = storage.get_ca_version()
        self._load_ca_list(clock())
        self._check_ca_renewal()

    # CA list and rollover
    def _load_ca_list(self, now: datetime.datetime) -> None:
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
            self._ca_version = version
            self._set_pair_list(pair_list)

    def _follow_other_nodes(self, now: datetime.datetime) -> None:
        """Reload the CA list when another process changed the CA rows."""
        if self._storage.shared and self._storage.get_ca_version() != self._ca_version:
            self._load_ca_list(now)

    def _set_pair_list(self, pair_list: list[CAKeyPair]) -> None:
        self._pair_list = pair_list
        self._chain = build_chain(pair_list)
        self._crl_cache.clear()

    def _needs_new_ca(self, now: datetime.datetime) -> bool:
        if not self._pair_list:
            return True
        remaining = self._pair_list[-1].not_after - now
        return remaining / self._crt_life <= CA_RENEWAL_MARGIN

    def _check_ca_renewal(self) -> datetime.datetime:
        """Generate the next CA when due (ca-profile 3.1); return the "now" used.

        Without a key size (restore) nothing is ever generated, whatever the CA list holds:
        the reference crashes there. A thread finding a generation under way skips it."""
        now = self._clock()
        self._follow_other_nodes(now)
        spec = self._ca_key_spec
        if (
            spec is not None
            and self._needs_new_ca(now)
            and self._renewal_lock.acquire(blocking=False)
        ):
            try:
                if self._needs_new_ca(now):
                    self._generate_ca(now, spec)
            finally:
                self._renewal_lock.release()
        return now

    def start_rollover(self) -> x509.Certificate:
        """Make the next CA certificate now rather than when the newest one nears its end
        (caucased-manage --renew-ca): it is distributed during the passive phase and signs
        one certificate life later, as after a lazy renewal (ca-profile 3.2)."""
        if self._ca_key_spec is None:
            raise CertificateAuthorityException("CA generation is disabled")
        pair_list, now = self._current_pair_list()
        if not pair_list:
            raise CertificateAuthorityException("No CA certificate to renew")
        with self._renewal_lock:
            # Only a newest CA already signing on its own right (older than one certificate
            # life) leaves the successor a passive phase: otherwise either a rollover is
            # under way, or the successor would sign at once, before clients learn it.
            newest = self._pair_list[-1]
            signs_from = newest.not_before + self._crt_life
            if signs_from >= now:
                raise CertificateAuthorityException(
                    "the newest CA certificate is younger than one certificate validity "
                    f"(a rollover may be under way): try again after {signs_from.isoformat()}"
                )
            self._generate_ca(now, self._ca_key_spec)
            return self._pair_list[-1].crt

    def _generate_ca(self, now: datetime.datetime, spec: keys.KeySpec) -> None:
        """Make and store the next CA, then read the CA list again: it holds either this
        CA or the one another node stored first."""
        version = self._ca_version
        key = keys.generate(spec)
        if self._pair_list:
            crt = x509util.renew_ca_certificate(self._pair_list[-1].crt, key, now, self._ca_life)
        else:
            crt = x509util.make_ca_certificate(
                key, self._ca_subject, now, self._ca_life, self._ca_extensions
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
            self._observer.notify(events.ca_generated(self._name, crt))
        self._load_ca_list(now)

    def _current_pair_list(self) -> tuple[list[CAKeyPair], datetime.datetime]:
        """Renewal check, then the held CAs that are not expired yet, oldest first."""
        now = self._check_ca_renewal()
        with self._lock:
            if self._pair_list and self._pair_list[0].not_after < now:
                self._set_pair_list([pair for pair in self._pair_list if pair.not_after >= now])
            return self._pair_list, now

    def _active_pair(self) -> tuple[CAKeyPair, datetime.datetime]:
        """The signing CA: newest one older than one certificate life, else the newest (3.2)."""
        pair_list, now = self._current_pair_list()
        if not pair_list:
            raise CertificateAuthorityException("No CA certificate available")
        for pair in reversed(pair_list):
            if pair.not_before + self._crt_life < now:
                return pair, now
        return pair_list[-1], now

    # CSRs
    def append_csr(self, csr_pem: bytes, override_limits: bool = False) -> int:
        """Store a CSR, auto-signing it when the counter allows; return its id.

        UnsupportedKey for a key caucase does not accept (keys.check_acceptable)."""
        csr, key_spec = self._load_new_key_csr(csr_pem)
        key_id = keys.key_id(csr.public_key())
        self._observer.ready()
        if not (override_limits or self._auto_sign_exhausted or not self._pair_list):
            return self._append_auto_signed(csr_pem, csr, key_id, key_spec)
        csr_id, received = self._storage.append_csr(
            csr_pem, key_id, to_timestamp(self._clock()), override_limits
        )
        if received is None:  # a CSR already stored: nothing changed
            return csr_id
        notices = [events.csr_received(self._name, csr_id, csr, key_spec)]
        if received <= self._auto_sign_csr_amount:
            crt, _ = self._issue(csr_id, csr, csr, SigningMode.YES)
            notices.append(events.auto_signed(self._name, csr_id, crt))
        self._observer.notify(*notices)
        return csr_id

    def _append_auto_signed(
        self,
        csr_pem: bytes,
        csr: x509.CertificateSigningRequest,
        key_id: str,
        key_spec: keys.KeySpec,
    ) -> int:
        """Sign first (outside any lock), then store the CSR and, if the counter still
        allows auto-signing, its certificate in one transaction. Once the counter has
        passed the amount it only grows, so later CSRs skip the speculative signature."""
        crt, crt_pem, now = self._sign(csr, csr, SigningMode.YES)
        csr_id, received, stored = self._storage.append_csr_signed(
            csr_pem, key_id, to_timestamp(now), crt_pem, self._auto_sign_csr_amount
        )
        if received is not None and received > self._auto_sign_csr_amount:
            self._auto_sign_exhausted = True
        if received is not None:
            notices = [events.csr_received(self._name, csr_id, csr, key_spec)]
            if stored:
                notices.append(events.auto_signed(self._name, csr_id, crt))
            self._observer.notify(*notices)
        return csr_id

    @staticmethod
    def _load_new_key_csr(csr_pem: bytes) -> tuple[x509.CertificateSigningRequest, keys.KeySpec]:
        """A CSR bringing a key of a kind caucase accepts, and that key's spec. Template
        CSRs only lend their subject and extensions, so their key is not checked."""
        csr = x509util.load_certificate_request(csr_pem)
        return csr, keys.spec_of(csr.public_key())

    def get_csr(self, csr_id: int) -> bytes:
        """The stored CSR PEM, pending or already signed; NotFound once purged."""
        return self._storage.get_csr(csr_id)

    def get_csr_list(self) -> list[tuple[int, bytes]]:
        """(id, CSR PEM) of every pending CSR."""
        return self._storage.get_pending_csr_list()

    def delete_pending_csr(self, csr_id: int) -> None:
        """Reject a CSR; NotFound unless it is pending."""
        self._observer.ready()
        self._storage.delete_pending_csr(csr_id)
        self._observer.notify(events.rejected(self._name, csr_id))

    def create_certificate(
        self, csr_id: int, template_csr: bytes | None = None, mode: SigningMode = SigningMode.NO
    ) -> bytes:
        """Sign a pending CSR, subject and extensions from `template_csr` if given; return PEM."""
        csr = x509util.load_certificate_request(self._storage.get_csr(csr_id))
        template = csr
        if template_csr is not None:
            template = x509util.load_certificate_request(template_csr)
        self._observer.ready()
        crt, crt_pem = self._issue(csr_id, csr, template, mode)
        self._observer.notify(events.signed(self._name, csr_id, crt, template is not csr))
        return crt_pem

    def sign_for_order(
        self, csr: x509.CertificateSigningRequest, template: x509util.Template
    ) -> tuple[bytes, datetime.datetime]:
        """The certificate of `csr`'s key with `template`'s subject and extensions, signed
        as a user approving a CSR would have it (ca-profile 1.6-1.8), not stored yet: the
        caller stores it with store_signed in the transaction recording why it exists."""
        keys.check_acceptable(csr.public_key())
        _, crt_pem, now = self._sign(csr, template, SigningMode.NO)
        return crt_pem, now

    def store_signed(
        self, csr: x509.CertificateSigningRequest, crt_pem: bytes, now: datetime.datetime
    ) -> int:
        """Store a CSR with the certificate sign_for_order made for it; its row id."""
        csr_pem = x509util.dump_certificate_request(csr)
        key_id = keys.key_id(csr.public_key())
        return self._storage.append_signed(csr_pem, key_id, to_timestamp(now), crt_pem)

    def list_certificates(self, query: Query) -> tuple[list[InventoryEntry], str | None]:
        """One page of every certificate issued here, and the next page's cursor."""
        return self._storage.certificate_inventory.page(query, to_timestamp(self._clock()))

    def get_certificate(self, csr_id: int) -> bytes:
        """The signed certificate PEM; a download shortens how long the row is kept."""
        return self._storage.get_certificate(csr_id, to_timestamp(self._clock()))

    def _issue(
        self,
        csr_id: int,
        csr: x509.CertificateSigningRequest,
        template: x509util.Template,
        mode: SigningMode,
    ) -> tuple[x509.Certificate, bytes]:
        """Sign with the active CA (outside the lock), attach it to the row: (crt, PEM)."""
        crt, crt_pem, now = self._sign(csr, template, mode)
        self._storage.store_certificate(csr_id, crt_pem, to_timestamp(now), _APPROVALS[mode])
        return crt, crt_pem

    def _sign(
        self,
        csr: x509.CertificateSigningRequest,
        template: x509util.Template,
        mode: SigningMode,
    ) -> tuple[x509.Certificate, bytes, datetime.datetime]:
        """A certificate for the CSR's key from the active CA, its PEM, and the "now" it used
        (the parsed certificate is kept for the audit events, never parsed again).

        Its life is cut to end with the CA's: a CA renewed late (nothing reached it at the
        renewal point) keeps signing for a period with less than a period left, and a leaf
        outliving its issuer would stop verifying before its own notAfter."""
        pair, now = self._active_pair()
        life = min(self._crt_life, pair.not_after - (now - x509util.BACKDATE))
        crt = x509util.issue_certificate(
            pair.key,
            pair.crt,
            csr.public_key(),
            template,
            mode,
            now,
            life,
            self._crl_base_url,
        )
        return crt, x509util.dump_certificate(crt), now

    # Renewal and revocation
    def renew(self, crt_pem: bytes, renew_csr_pem: bytes) -> bytes:
        """Key-holder renewal: `crt_pem` must verify; new certificate PEM for the CSR's key."""
        old_crt = self._load_certificate(crt_pem)
        self.verify_certificate(old_crt)
        csr, _ = self._load_new_key_csr(renew_csr_pem)
        self._observer.ready()
        csr_id, _ = self._storage.append_csr(
            renew_csr_pem,
            keys.key_id(csr.public_key()),
            to_timestamp(self._clock()),
            override_limits=True,
        )
        # A CSR already signed is found by deduplication: storing again says NotFound.
        crt, crt_pem = self._issue(csr_id, csr, old_crt, SigningMode.PASSTHROUGH)
        self._observer.notify(events.renewed(self._name, csr_id, crt, old_crt))
        return crt_pem

    def revoke_certificate(
        self, crt_pem: bytes, reason: x509.ReasonFlags | None = None, method: str = "user"
    ) -> None:
        """Revoke a certificate that verifies (issued here, valid, not yet revoked); the
        reason, when given, goes into its CRL entry; `method` says who, for the audit."""
        crt = self._load_certificate(crt_pem)
        self.verify_certificate(crt)
        now = self._clock()
        code = None if reason is None else crl_profile.REASON_OF_FLAG[reason]
        self._observer.ready()
        try:
            self._revoke(crt.serial_number, now, crt.not_valid_after_utc + self._crl_life, code)
        except Found:
            raise CertificateVerificationError("certificate revoked") from None
        subject = crt.subject.rfc4514_string()
        self._observer.notify(events.revoked(self._name, crt.serial_number, subject, method))

    def revoke_serial(self, serial: int) -> None:
        """Revoke by serial; BadSerial unless a non-negative int, Found if already revoked."""
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            raise BadSerial(f"Invalid serial: {serial!r}")
        pair_list, now = self._current_pair_list()
        latest = max((pair.not_after for pair in pair_list), default=now)
        self._observer.ready()
        self._revoke(serial, now, latest + self._crl_life)
        self._observer.notify(events.revoked(self._name, serial, None, "serial"))

    def _revoke(
        self,
        serial: int,
        now: datetime.datetime,
        expiration: datetime.datetime,
        reason: int | None = None,
    ) -> None:
        """Stored outside the CA lock, so that concurrent revocations share commits; the
        CRLs are dropped under it once committed: one being built meanwhile (from the rows
        before this one) is dropped as soon as it is cached."""
        revocation = (serial, to_timestamp(now))
        try:
            number = self._storage.revoke(*revocation, to_timestamp(expiration), reason)
        except BaseException:
            with self._lock:
                self._crl_cache.clear()
            raise
        with self._lock:
            self._crl_cache.clear()
            self._crl_cache.add_revocation(revocation, to_timestamp(expiration), number, reason)

    @staticmethod
    def _load_certificate(crt_pem: bytes) -> x509.Certificate:
        try:
            return x509util.load_certificate(crt_pem)
        except (ValueError, TypeError):
            raise CertificateVerificationError("not a valid PEM certificate") from None

    def verify_certificate(self, crt: x509.Certificate) -> None:
        """CertificateVerificationError unless issued by a held CA, valid now, not revoked."""
        verification.verify_certificate(crt, *self._verification_context())

    def _verification_context(
        self,
    ) -> tuple[list[x509.Certificate], Container[int], datetime.datetime]:
        """CA certificates, revoked serials and "now", without touching the CRLs."""
        pair_list, now = self._current_pair_list()
        revoked = self._storage.revoked_serials(to_timestamp(now))
        return [pair.crt for pair in pair_list], revoked, now

    # CA material
    def get_ca_certificate(self) -> bytes:
        """PEM of the oldest still-valid CA certificate (the trust anchor for new clients)."""
        pair_list, _ = self._current_pair_list()
        if not pair_list:
            raise NotFound("No CA certificate available")
        return pair_list[0].pem

    def get_ca_certificate_list(self) -> list[x509.Certificate]:
        """Every held CA certificate, oldest first."""
        pair_list, _ = self._current_pair_list()
        return [pair.crt for pair in pair_list]

    def get_ca_certificate_chain(self) -> list[dict[str, Any]]:
        """ca.crt.json items: one signed envelope per consecutive CA pair."""
        self._current_pair_list()
        with self._lock:
            return list(self._chain)

    def get_crl_dict(self) -> dict[int, bytes]:
        """CRL PEM per CA certificate, keyed by its AKI integer, oldest CA first."""
        pair_list, now = self._current_pair_list()
        with self._lock:
            return dict(self._crl_cache.get(pair_list, now))

    def prepare_crl_entries(self) -> None:
        """Build the CRL entries of every stored revocation now (at start-up), so that the
        first CRL, which authentication also waits for, only has to be signed."""
        with self._lock:
            self._crl_cache.prepare_entries(self._clock())

    def get_crl_bundle(self) -> bytes:
        """Every CRL PEM joined by a blank line, as GET {ca}/crl serves it (http-api 6.3)."""
        pair_list, now = self._current_pair_list()
        with self._lock:
            return self._crl_cache.get_bundle(pair_list, now)

    def iter_valid_certificates(self) -> Iterator[x509.Certificate]:
        """Stored certificates that verify now (backup recipients on the CAU)."""
        ca_list, revoked_serials, now = self._verification_context()
        for crt_pem in self._storage.iter_certificates():
            try:
                crt = x509util.load_certificate(crt_pem)
                verification.verify_certificate(crt, ca_list, revoked_serials, now)
            except (ValueError, CertificateVerificationError):
                continue
            yield crt
