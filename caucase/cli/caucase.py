"""`caucase`: the one-shot client (cli.md 3).

Refreshes the CA and CRL stores, then runs the requested actions in a fixed order,
runs the `--on-renew` hook when something changed, and exits 0 (fine), 1 (error),
2 (a CSR is still pending) or 3 (the hook failed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from cryptography import x509

from caucase.cli.caucase_options import AUTHENTICATED_NAMES, build_parser
from caucase.cli.hook import describe_outcome, run_hook
from caucase.cli.inventory import check_list_options, list_crt, printable, serial_is_known
from caucase.cli.key_options import check_key_options
from caucase.cli.user_key import MISSING, explain_refusal
from caucase.client import CaucaseClient, parse_ca_url
from caucase.clock import Clock, utcnow
from caucase.crypto import keys, pemfile, verification, x509util
from caucase.exceptions import CaucaseError, CaucaseHTTPError, CaucaseTLSError, PemFileError
from caucase.trust_stores import load_valid_ca_list, update_ca_store, update_crl_store

EXIT_ERROR = 1
EXIT_PENDING = 2
EXIT_HOOK_FAILED = 3
LIST_COLUMNS = "%20s | %s"


def csr_id(value: str) -> int:
    """A CSR id from the command line, as a clear error when it is not decimal."""
    try:
        return int(value)
    except ValueError:
        raise CaucaseError(f"invalid CSR_ID {value!r}: not an integer") from None


def subject_preview(csr_pem: str) -> str:
    """The `--list-csr` preview: the subject as an RFC 4514 string, in plain text rather
    than the reference's `'<Name(...)>'` repr. Characters that are not printable are
    escaped, so that a subject cannot fake a row of the listing."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnicodeEncodeError):
        valid = False
    if not valid:
        raise CaucaseError("server listed a malformed or badly signed CSR")
    return printable(csr.subject.rfc4514_string())


class CaucaseRun:
    """One invocation: the flags that decide the exit status, and the actions."""

    def __init__(self, args: argparse.Namespace, clock: Clock, out: TextIO, err: TextIO):
        self.args = args
        self.clock = clock
        self.out = out
        self.err = err
        self.updated = False
        self.error = False
        self.warning = False
        self.context = "--ca-url " + args.ca_url
        self.cas_client = CaucaseClient(args.ca_url + "/cas")
        self.client: CaucaseClient | None = None
        self.ca_list: list[x509.Certificate] = []

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def complain(self, line: str) -> None:
        """A skipped item: message on stderr, exit status 1 at the end."""
        print(line, file=self.err, flush=True)
        self.error = True

    def confirm(self, line: str) -> None:
        """What an action did, on stderr: stdout stays what scripts parse."""
        print(line, file=self.err, flush=True)

    @contextlib.contextmanager
    def as_user(self) -> Iterator[None]:
        """Authenticated requests: a refused user certificate is explained."""
        try:
            yield
        except (CaucaseHTTPError, CaucaseTLSError) as error:
            if isinstance(error, CaucaseHTTPError) and error.status != 401:
                raise
            args = self.args
            user_stores = (args.user_ca_crt, args.user_crl)
            raise explain_refusal(
                error, args.user_key, self.clock(), user_stores, args.ca_crt
            ) from None

    @property
    def mode_client(self) -> CaucaseClient:
        assert self.client is not None
        return self.client

    def refresh_ca_stores(self) -> None:
        """Steps 2-5 of cli.md 3.2."""
        args = self.args
        self.context = "updating " + args.ca_crt
        self.updated |= update_ca_store(self.cas_client, args.ca_crt, self.clock())
        user_stores = args.update_user or args.mode == "user"
        if user_stores:
            self.context = "updating " + args.user_ca_crt
            with CaucaseClient(args.ca_url + "/cau") as cau_client:
                self.updated |= update_ca_store(cau_client, args.user_ca_crt, self.clock())
        self.context = "--user-key " + str(args.user_key)
        mode_url = args.ca_url + ("/cau" if args.mode == "user" else "/cas")
        self.client = CaucaseClient(mode_url, args.user_key)
        store = args.user_ca_crt if args.mode == "user" else args.ca_crt
        self.ca_list = load_valid_ca_list(pemfile.read_ca_store(store), self.clock())

    def refresh_crl_stores(self) -> None:
        """Steps 8-9 of cli.md 3.2, with the CA stores re-read."""
        args = self.args
        pairs = [(self.cas_client, args.ca_crt, args.crl)]
        if args.update_user:
            pairs.append((CaucaseClient(args.ca_url + "/cau"), args.user_ca_crt, args.user_crl))
        for client, ca_path, crl_path in pairs:
            self.context = "updating " + crl_path
            ca_list = load_valid_ca_list(pemfile.read_ca_store(ca_path), self.clock())
            with client:
                self.updated |= update_crl_store(client, crl_path, ca_list)

    def run_actions(self) -> None:
        """The actions, in the fixed order of cli.md 3.2 step 6."""
        args = self.args
        for path in args.send_csr:
            self.send_csr(path)
        for identifier, path in args.get_csr:
            self.context = f"--get-csr {identifier} {path}"
            pemfile.append_to_file(path, self.mode_client.get_csr(csr_id(identifier)))
        for identifier, path in args.get_crt:
            self.get_crt(identifier, path)
        for crt_path, key_path in args.revoke_crt:
            self.revoke_crt(crt_path, key_path)
        for crt_path, key_path in args.renew_crt:
            self.renew_crt(crt_path, key_path)
        with self.as_user():
            self.run_authenticated_actions()

    def run_authenticated_actions(self) -> None:
        args = self.args
        for identifier in args.sign_csr:
            self.context = "--sign-csr " + identifier
            self.mode_client.create_certificate(csr_id(identifier))
            self.confirm(f"Signed CSR {identifier}")
        for identifier, path in args.sign_csr_with:
            self.context = f"--sign-csr-with {identifier} {path}"
            template = pemfile.read_one_csr(path)
            self.mode_client.create_certificate(csr_id(identifier), template)
            self.confirm(f"Signed CSR {identifier} with the subject and extensions of {path}")
        for identifier in args.reject_csr:
            self.context = "--reject-csr " + identifier
            self.mode_client.delete_pending_csr(csr_id(identifier))
            self.confirm(f"Rejected CSR {identifier}")
        for path in args.revoke_other_crt:
            self.revoke_other_crt(path)
        for serial in args.revoke_serial:
            self.revoke_serial(serial)
        if args.renew_early:
            self.renew_early(args.renew_early)
        if args.renew_early_all:
            self.renew_early(())
        if args.list_csr:
            self.list_csr()
        if args.list_crt:
            self.context = "--list-crt"
            list_crt(self.mode_client, args, self.clock(), self.say)
        self.run_acme_eab_actions()

    def run_acme_eab_actions(self) -> None:
        """The ACME credential actions, on the CAU whatever --mode says."""
        args = self.args
        if not (args.revoke_acme_eab or args.new_acme_eab or args.show_acme_eab):
            return
        with CaucaseClient(args.ca_url + "/cau", args.user_key) as cau:
            for kid in args.revoke_acme_eab:
                self.context = "--revoke-acme-eab " + kid
                cau.revoke_acme_eab(kid)
                self.confirm(f"Revoked ACME external account binding {kid}")
            for patterns in args.new_acme_eab:
                self.context = "--new-acme-eab " + " ".join(patterns)
                kid, key = cau.new_acme_eab(patterns)
                self.say(f"{kid} {key}")
            if args.show_acme_eab:
                self.context = "--show-acme-eab"
                self.show_acme_eab(cau.list_acme_eab())

    def show_acme_eab(self, credentials: list[dict[str, Any]]) -> None:
        columns = ("kid", "status", "account", "minted_at", "minted_by", "scope")
        lines = ["-- ACME external account bindings --", " | ".join(columns)]
        for entry in credentials:
            scope = entry.get("scope")
            fields = dict(
                entry, scope=" ".join(map(str, scope if isinstance(scope, list) else []))
            )
            lines.append(" | ".join(printable(str(fields.get(name) or "-")) for name in columns))
        lines.append("-- end of ACME external account bindings --")
        self.say("\n".join(lines))

    def send_csr(self, path: str) -> None:
        self.context = "--send-csr " + path
        identifier = self.mode_client.create_csr(pemfile.read_one_csr(path))
        self.say(f"{identifier} {path}")

    def get_crt(self, identifier: str, path: str) -> None:
        """Fetch a certificate and append it to the file holding its key (cli.md 3.3)."""
        self.context = f"--get-crt {identifier} {path}"
        number = csr_id(identifier)
        try:
            crt_pem = self.mode_client.get_certificate(number)
        except CaucaseHTTPError as error:
            if error.status != 404:
                raise
            self.report_missing_certificate(identifier, number)
            return
        try:
            certificate = x509util.load_certificate(crt_pem)
        except ValueError:
            raise CaucaseError("server returned a malformed certificate") from None
        verification.verify_certificate(certificate, self.ca_list, (), self.clock())
        how = "automatically" if x509util.is_auto_signed(certificate) else "manually"
        self.say(f"{identifier} was (originally) {how} approved")
        holds_key = self.check_key_file(path, certificate)
        if holds_key is not None:
            pemfile.append_to_file(path, crt_pem, private=holds_key)

    def report_missing_certificate(self, identifier: str, number: int) -> None:
        try:
            self.mode_client.get_csr(number)
        except CaucaseHTTPError as error:
            if error.status != 404:
                raise
            self.say(f"{identifier} not found - maybe CSR was rejected ?")
            self.error = True
            return
        self.say(f"{identifier} CSR still pending")
        self.warning = True

    def check_key_file(self, path: str, certificate: x509.Certificate) -> bool | None:
        """Whether the file exists and holds exactly the matching key; None when it
        exists but is unusable, which is reported (cli.md 3.3, without the crash)."""
        if not os.path.exists(path):
            return False
        try:
            key = pemfile.read_one_key(path)
        except PemFileError as error:
            self.complain(f"{error}, skipping")
            return None
        if not keys.same_public_key(certificate, key):
            self.complain(f"Key in {path} does not match retrieved certificate, skipping")
            return None
        return True

    def load_key_pair(self, crt_path: str, key_path: str) -> pemfile.KeyPair | None:
        try:
            return pemfile.read_key_pair(crt_path, key_path)
        except PemFileError as error:
            self.complain(f"{error}, skipping")
            return None

    def revoke_crt(self, crt_path: str, key_path: str) -> None:
        self.context = f"--revoke-crt {crt_path} {key_path}"
        pair = self.load_key_pair(crt_path, key_path)
        if pair is not None:
            crt_pem = x509util.dump_certificate(pair.certificate)
            self.mode_client.revoke_certificate(crt_pem, pair.key)
            self.confirm(f"Revoked {crt_path} (serial {pair.certificate.serial_number:#x})")

    def renew_crt(self, crt_path: str, key_path: str) -> None:
        """Renew when within the threshold; the new key replaces the old one (cli.md 3.3)."""
        self.context = f"--renew-crt {crt_path} {key_path}"
        pemfile.recover_interrupted_renewal(crt_path, key_path)
        pair = self.load_key_pair(crt_path, key_path)
        if pair is None:
            return
        now = self.clock()
        try:
            verification.verify_certificate(pair.certificate, self.ca_list, (), now)
        except CaucaseError:
            self.say(
                f"{crt_path} was not signed by this CA, revoked or otherwise invalid, skipping"
            )
            return
        threshold = _days(self.args.threshold)
        if pair.certificate.not_valid_after_utc > now + threshold:
            self.say(f"{crt_path} did not reach renew threshold, not renewing")
            return
        key_spec = keys.spec_from_options(
            self.args.key_type, self.args.key_len, pair.key.public_key()
        )
        key, crt_pem = self.mode_client.renew_certificate(pair.certificate, pair.key, key_spec)
        pemfile.write_renewed(pair, crt_path, keys.dump_private_key(key), crt_pem)
        self.updated = True
        new_end = x509util.load_certificate(crt_pem).not_valid_after_utc
        self.confirm(f"Renewed {crt_path}: valid until {new_end:%Y-%m-%d %H:%M:%S} UTC")

    def revoke_other_crt(self, path: str) -> None:
        self.context = "--revoke-other-crt " + path
        try:
            certificate = pemfile.read_one_certificate(path)
        except PemFileError:
            self.complain(f"Could not load a single certificate in {path}, skipping")
            return
        self.mode_client.revoke_certificate(x509util.dump_certificate(certificate))
        self.confirm(f"Revoked {path} (serial {certificate.serial_number:#x})")

    def revoke_serial(self, serial: int) -> None:
        """Revoke, warning when the inventory does not list the serial: a typo, or a
        certificate issued before there was an inventory (revoked anyway: the CA cannot
        tell which, and scripts revoking such old serials keep working)."""
        self.context = f"--revoke-serial {serial}"
        known = serial_is_known(self.mode_client, serial)
        self.mode_client.revoke_serial(serial)
        self.confirm(f"Revoked serial {serial} ({serial:#x})")
        if known is False:
            self.confirm(
                f"caucase: warning: serial {serial} ({serial:#x}) is not in the inventory "
                "of this authority: a typo, or a certificate issued before it had one"
            )

    def renew_early(self, serials: Sequence[int]) -> None:
        """--renew-early (these serials) or, without serials, --renew-early-all."""
        args = self.args
        self.context = "--renew-early" if serials else "--renew-early-all"
        spread = datetime.timedelta(hours=args.spread)
        try:
            result = self.mode_client.renew_early(spread, serials, issued_before=args.before)
        except CaucaseHTTPError as error:
            if error.status not in (404, 405):
                raise
            raise CaucaseError(
                "this server does not move renewal windows (caucase 0.9.17 does not)"
            ) from None
        band = f"between {result['start']} and {result['end']}"
        moved = result["moved"]
        if not serials:
            plural = "" if moved == 1 else "s"
            self.confirm(f"Moved the renewal windows of {moved} certificate{plural} to {band}")
            return
        for serial in moved if isinstance(moved, list) else ():
            number = int(serial)
            self.confirm(f"Moved the renewal window of serial {number} ({number:#x}) to {band}")
        for serial in result.get("unknown") or ():
            number = int(serial)
            self.complain(
                f"Serial {number} ({number:#x}) is no valid certificate of this authority, "
                "skipping"
            )

    def list_csr(self) -> None:
        self.context = "--list-csr"
        pending = self.mode_client.get_pending_csr_list()
        lines = [LIST_COLUMNS % ("csr_id", "subject preview (fetch csr and check full content !)")]
        for entry in pending:
            if not isinstance(entry, dict):
                raise CaucaseError("server returned an invalid CSR list")
            lines.append(LIST_COLUMNS % (entry.get("id"), subject_preview(str(entry.get("csr")))))
        mode = self.args.mode
        self.say(
            "\n".join([f"-- pending {mode} CSRs --", *lines, f"-- end of pending {mode} CSRs --"])
        )

    def close(self) -> None:
        self.cas_client.close()
        if self.client is not None:
            self.client.close()

    def run_hook(self) -> int:
        """Return code of the `--on-renew` hook (0 when none ran); a failure is told."""
        if not (self.updated and self.args.on_renew):
            return 0
        self.out.flush()
        returncode = run_hook(self.args.on_renew)
        if returncode:
            print(f"caucase: --on-renew hook {describe_outcome(returncode)}", file=self.err)
        return returncode

    def exit_status(self) -> int:
        if self.error:
            return EXIT_ERROR
        return EXIT_PENDING if self.warning else 0


def _days(value: float) -> datetime.timedelta:
    return datetime.timedelta(days=value)


def _missing_user_key(args: argparse.Namespace) -> str | None:
    """The first authenticated action requested without --user-key."""
    if args.user_key is not None:
        return None
    for name in AUTHENTICATED_NAMES:
        if getattr(args, name[2:].replace("-", "_")):
            return name
    return None


def _check_disjoint_ids(args: argparse.Namespace) -> bool:
    """Whether no CSR_ID string is both signed and rejected (cli.md 3.2 step 1)."""
    seen: set[str] = set()
    groups = [args.sign_csr, [first for first, _ in args.sign_csr_with], args.reject_csr]
    for group in groups:
        current = set(group)
        if current & seen:
            return False
        seen |= current
    return True


def main(
    argv: Sequence[str] | None = None,
    *,
    clock: Clock = utcnow,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Console entry point; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    check_key_options(parser, args)
    check_list_options(parser, args)
    if not _check_disjoint_ids(args):
        print(
            "A given CSR_ID cannot be in more than one of --sign-csr, --sign-csr-with "
            "and --reject-csr",
            file=err,
        )
        return EXIT_ERROR
    action = _missing_user_key(args)
    if action is not None:
        print(f"caucase: {action} {MISSING}", file=err)
        return EXIT_ERROR
    run: CaucaseRun | None = None
    try:
        parse_ca_url(args.ca_url)
        run = CaucaseRun(args, clock, out, err)
        run.refresh_ca_stores()
        run.run_actions()
        run.close()
        run.refresh_crl_stores()
    except (CaucaseError, OSError) as error:
        context = run.context if run is not None else "--ca-url"
        print(f"caucase: {context}: {error}", file=err, flush=True)
        if run is not None:
            run.close()
            run.run_hook()
        return EXIT_ERROR
    if run.run_hook() != 0:
        return EXIT_HOOK_FAILED
    return run.exit_status()
