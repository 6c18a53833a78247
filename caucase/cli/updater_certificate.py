"""caucase-updater's certificate: obtained from --csr, checked, renewed when its moment came.

The moment comes from the renewal window the server suggests (caucase.cli.renewal_plan);
a renewal writes the new pair so that a crash leaves the old pair or the new one
(pemfile.write_renewed), inside the signal guard's critical section.
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Sequence
from typing import Callable

from cryptography import x509

from caucase.cli import updater_status
from caucase.cli.renewal_plan import Plan, RenewalPlanner
from caucase.cli.updater_failures import CertificateLost, RequestFailed, RetryLater, during
from caucase.cli.updater_signals import SignalGuard
from caucase.cli.updater_status import UpdaterStatus
from caucase.client import CaucaseClient
from caucase.crypto import keys, pemfile, verification
from caucase.exceptions import (
    CaucaseError,
    CaucaseHTTPError,
    CertificateVerificationError,
    PemFileError,
    UnusableAnswer,
)
from caucase.renewal import RenewalWindow
from caucase.trust_stores import revoked_serials

BOOTSTRAP_POLL = datetime.timedelta(seconds=60)


def check_writable(path: str | None) -> None:
    """Refuse at start a certificate or key file that could not be replaced: the reference
    found out only once the CSR was signed, or at the first renewal."""
    if not path:
        return
    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory):
        raise PemFileError(path, f"{path}: no such directory: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PemFileError(
            path, f"{path}: cannot create files in {directory}, which renewals need"
        )


class CertificateKeeper:
    """--crt (and --key) of one updater; what it did is told through `say` and `status`."""

    def __init__(
        self,
        args: argparse.Namespace,
        client: CaucaseClient,
        guard: SignalGuard,
        planner: RenewalPlanner,
        status: UpdaterStatus,
        say: Callable[[str], None],
        wait: Callable[[datetime.timedelta], None],
    ) -> None:
        self._args = args
        self._client = client
        self._guard = guard
        self._planner = planner
        self._status = status
        self._say = say
        self._wait = wait
        self._url = client.ca_url

    def needs_bootstrap(self) -> bool:
        return not pemfile.has_one_certificate(self._args.crt)

    # Bootstrap (cli.md 4.2)
    def _check_csr_key(self, csr_pem: bytes) -> None:
        """Refuse to request a certificate for a key we do not hold: the reference would
        get it signed, then fail at every start on a certificate without its key."""
        args = self._args
        key_blocks = [
            block
            for block in (pemfile.read_blocks(args.crt) if os.path.exists(args.crt) else [])
            if block.kind is pemfile.BlockKind.KEY
        ]
        if len(key_blocks) > 1:
            raise PemFileError(args.crt, f"{args.crt} holds more than one key")
        if key_blocks:
            try:
                key = keys.load_private_key(key_blocks[0].text)
            except (ValueError, TypeError) as error:
                raise PemFileError(
                    args.crt, f"{args.crt}: unusable private key ({error})"
                ) from None
        elif args.key:
            key = pemfile.read_one_key(args.key)
        elif not os.path.exists(args.crt):
            raise PemFileError(
                args.crt, f"{args.crt}: no such file (it must hold the private key, or give --key)"
            )
        else:
            raise CaucaseError(f"{args.crt} holds no private key and no --key was given")
        csr_key_id = keys.key_id(x509.load_pem_x509_csr(csr_pem).public_key())
        if csr_key_id != keys.key_id(key.public_key()):
            raise CaucaseError(f"{args.csr} does not request a certificate for the private key")

    def bootstrap(self) -> None:
        """Submit --csr and poll until it is signed (or rejected, which is fatal)."""
        args = self._args
        self._say("Bootstraping...")
        if not args.csr:
            raise CaucaseError(f"{args.crt} holds no certificate and no --csr was given")
        csr_pem = pemfile.read_one_csr(args.csr)
        self._check_csr_key(csr_pem)
        with during(f"submitting {args.csr} to {self._url}"):
            csr_id = self._client.create_csr(csr_pem)
        self._say(f"Waiting for signature of {csr_id}")
        crt_pem = self._poll_certificate(csr_id)
        with self._guard.critical():
            pemfile.append_to_file(args.crt, crt_pem)
        self._say("Bootstrap done")

    def _poll_certificate(self, csr_id: int) -> bytes:
        while True:
            with during(f"fetching the certificate of CSR {csr_id}"):
                try:
                    return self._client.get_certificate(csr_id)
                except CaucaseHTTPError as error:
                    if error.status != 404:
                        raise
                try:
                    self._client.get_csr(csr_id)
                except CaucaseHTTPError as error:
                    if error.status == 404:
                        raise CaucaseError(
                            f"CSR {csr_id} ({self._args.csr}) was rejected by {self._url}"
                        ) from None
                    raise
            self._wait(BOOTSTRAP_POLL)

    # Renewal (cli.md 4.3 step 7)
    def maintain(
        self,
        now: datetime.datetime,
        ca_list: Sequence[x509.Certificate],
        *,
        check: bool = False,
        renew: bool = False,
    ) -> tuple[datetime.datetime, bool]:
        """Renew when the moment came (`check`: once the window opened; `renew`: at
        once); when to look again, and whether the files changed."""
        args = self._args
        pemfile.recover_interrupted_renewal(args.crt, args.key)
        changed = self.needs_bootstrap()
        if changed:
            self.bootstrap()
        pair = pemfile.read_key_pair(args.crt, args.key)
        self._check_usable(pair.certificate, ca_list, now)
        plan = self._plan(pair.certificate)
        if renew or plan.due(now, inside_window=check):
            plan = self._plan(self._renew(pair, now))
            changed = True
        return plan.moment, changed

    def _check_usable(
        self,
        certificate: x509.Certificate,
        ca_list: Sequence[x509.Certificate],
        now: datetime.datetime,
    ) -> None:
        """CertificateLost when only a new certificate can help; a certificate this CA
        store does not vouch for at all is a local error."""
        crt = self._args.crt
        revoked = revoked_serials(pemfile.read_crl_store(self._args.crl), ca_list)
        try:
            verification.verify_certificate(certificate, ca_list, revoked, now)
        except CertificateVerificationError as error:
            if error.reason == "certificate revoked":
                raise CertificateLost(crt, certificate, "was revoked") from None
            if error.reason == "certificate has expired":
                end = certificate.not_valid_after_utc
                what = f"expired on {end:%Y-%m-%d %H:%M} UTC"
                raise CertificateLost(crt, certificate, what) from None
            if error.reason == "certificate is not yet valid":
                raise RetryLater(f"{crt}: {error} (is this machine's clock right?)") from None
            raise CaucaseError(f"{crt}: {error}") from None

    def _plan(self, certificate: x509.Certificate) -> Plan:
        """Where the renewal of `certificate` stands; recorded in the status."""
        plan = self._planner.plan(certificate, self._suggested_window(certificate))
        status = self._status
        status.serial = certificate.serial_number
        status.not_after = certificate.not_valid_after_utc
        status.renewal_at = plan.moment
        status.window, status.window_source = plan.window, updater_status.SERVER
        if plan.window is None:
            # The threshold rule: from the threshold on, until notAfter.
            not_after = certificate.not_valid_after_utc
            valid = plan.moment < not_after
            status.window = RenewalWindow(plan.moment, not_after) if valid else None
            status.window_source = updater_status.THRESHOLD
        return plan

    def _suggested_window(self, certificate: x509.Certificate) -> RenewalWindow | None:
        """The server's window; None from a server without one (the threshold rule then).
        An invalid one counts as none (RFC 9773 4.2), said in one line."""
        with during(f"fetching the renewal window of {self._args.crt} from {self._url}"):
            try:
                return self._client.get_renewal_window(certificate)
            except UnusableAnswer as error:
                self._say(f"Ignoring the renewal window: {error}")
                return None

    def _renew(self, pair: pemfile.KeyPair, now: datetime.datetime) -> x509.Certificate:
        args = self._args
        self._say(f"Renewing {args.crt}")
        key_spec = keys.spec_from_options(args.key_type, args.key_len, pair.key.public_key())
        try:
            with during(f"renewing {args.crt} at {self._url}"):
                new_key, crt_pem = self._client.renew_certificate(
                    pair.certificate, pair.key, key_spec
                )
        except RequestFailed as error:
            if "certificate revoked" in str(error):
                raise CertificateLost(args.crt, pair.certificate, "was revoked") from None
            raise
        with self._guard.critical():
            pemfile.write_renewed(pair, args.crt, keys.dump_private_key(new_key), crt_pem)
        self._status.last_renewal = now
        return x509.load_pem_x509_certificate(crt_pem)
