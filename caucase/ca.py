"""CertificateAuthority: the policy of one CA instance (ca-profile 2-4).

Talks to storage and x509util only. Parsed CA keys and certificates, the CA chain
document and the CRLs live in memory and are rebuilt only when what they derive from
changes, so that per-request work stays cheap; authentication looks revoked serials up
in storage (one indexed read), so it never waits for a CRL to be signed.

The CA list and its rollover are caucase.rollover's. An auto-signed CSR is signed from
the list as last read, and its transaction checks the CA rows' version: another node
having changed them, it is signed again from the list as it now is.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Container, Iterator, Sequence
from typing import Any

from cryptography import x509

from caucase import events
from caucase.ca_keys import CAKeyPair
from caucase.clock import Clock, to_timestamp, utcnow
from caucase.crl import CRLCache
from caucase.crypto import crl_profile, keys, verification, x509util
from caucase.crypto.x509util import SigningMode
from caucase.exceptions import (
    BadSerial,
    CertificateVerificationError,
    Found,
    NotFound,
)
from caucase.renewal_schedule import RenewalSchedule
from caucase.rollover import CAList, CAProfile
from caucase.storage import StaleCAList, Storage
from caucase.storage.inventory import InventoryEntry, Query

logger = logging.getLogger(__name__)

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
        self._crt_life = datetime.timedelta(days=crt_life)
        self._crl_life = self._crt_life * crl_renew_period
        self._clock = clock
        self._crl_base_url = crl_base_url
        if lock_auto_sign_csr_amount:
            storage.lock_auto_sign_amount(auto_sign_csr_amount)
        locked_amount = storage.get_locked_auto_sign_amount()
        self._auto_sign_csr_amount = (
            auto_sign_csr_amount if locked_amount is None else locked_amount
        )
        self._auto_sign_exhausted = self._auto_sign_csr_amount <= 0
        self._lock = threading.RLock()
        self._crl_cache = CRLCache(storage, self._crl_life, self._crl_life / 2)
        self.renewal = RenewalSchedule(storage, clock, datetime.timedelta(days=renewal_threshold))
        profile = CAProfile(
            ca_subject,
            keys.KeySpec.rsa(ca_key) if isinstance(ca_key, int) else ca_key,
            self._crt_life,
            self._crt_life * ca_life_period,
            tuple(ca_extensions),
        )
        self._ca_list = CAList(
            storage, profile, clock, self._lock, self._crl_cache.clear, observer
        )

    def start_rollover(self) -> x509.Certificate:
        """The next CA certificate, made now (CAList.start_rollover)."""
        return self._ca_list.start_rollover()

    def _current_pair_list(self) -> tuple[list[CAKeyPair], datetime.datetime]:
        return self._ca_list.current()

    # CSRs
    def append_csr(self, csr_pem: bytes, override_limits: bool = False) -> int:
        """Store a CSR, auto-signing it when the counter allows; return its id.

        UnsupportedKey for a key caucase does not accept (keys.check_acceptable)."""
        csr, key_spec = self._load_new_key_csr(csr_pem)
        key_id = keys.key_id(csr.public_key())
        self._observer.ready()
        if not (override_limits or self._auto_sign_exhausted or self._ca_list.empty):
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
        follow: bool = False,
    ) -> int:
        """Sign first (outside any lock), then store the CSR and, if the counter still
        allows auto-signing, its certificate in one transaction. Once the counter has
        passed the amount it only grows, so later CSRs skip the speculative signature.

        Shared storage: signed from the CA list as last read, unless `follow`; the
        transaction refuses it if the CA rows changed since, and it is signed again."""
        follow = follow or not self._storage.shared
        pair, now, version = self._ca_list.active(follow)
        crt, crt_pem = self._sign_with(pair, now, csr, csr, SigningMode.YES)
        try:
            csr_id, received, stored = self._storage.append_csr_signed(
                csr_pem,
                key_id,
                to_timestamp(now),
                crt_pem,
                self._auto_sign_csr_amount,
                ca_version=None if follow else version,
            )
        except StaleCAList:
            self._ca_list.reload()
            return self._append_auto_signed(csr_pem, csr, key_id, key_spec, follow=True)
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
        pair, now, _ = self._ca_list.active()
        crt, crt_pem = self._sign_with(pair, now, csr, template, mode)
        return crt, crt_pem, now

    def _sign_with(
        self,
        pair: CAKeyPair,
        now: datetime.datetime,
        csr: x509.CertificateSigningRequest,
        template: x509util.Template,
        mode: SigningMode,
    ) -> tuple[x509.Certificate, bytes]:
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
        return crt, x509util.dump_certificate(crt)

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
        return self._ca_list.chain()

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
