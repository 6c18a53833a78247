"""caucased-manage: offline database maintenance (cli 9, ca-profile 5.5 and 6.7).

Actions run in a fixed order whatever the command line order: check an audit log, restore
a backup, import CA key pairs, import CRLs, start a CA rollover, export CA key pairs, copy
the database to another one. --db is an SQLite file or a PostgreSQL URL, as for caucased.
Every failure is one line on stderr and exit status 1, and leaves no half-made file or
database behind.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509

from caucase import __version__, backup
from caucase.audit import AuditLog, event, verify_audit_log
from caucase.ca import CertificateAuthority
from caucase.cli.key_options import check_key_options, key_len_option, key_type_option
from caucase.cli.manage_ca import CAPair, ManageError, import_ca, renew_ca, select_ca_pairs
from caucase.cli.passphrase import Passphrases
from caucase.clock import Clock, to_timestamp, utcnow
from caucase.crypto import keys, x509util
from caucase.crypto.pemfile import BlockKind, append_to_file, read_blocks, read_one_csr
from caucase.events import Observer, Recorder
from caucase.exceptions import CaucaseError, NotFound
from caucase.storage import (
    Engine,
    Storage,
    describe,
    exists,
    is_url,
    open_database,
    restored_database,
)
from caucase.storage.migrate import copy_database


def build_parser() -> argparse.ArgumentParser:
    """Options, arities and repetition rules of cli 9.1, metavars as the reference
    shows them."""
    parser = argparse.ArgumentParser(
        prog="caucased-manage",
        description="caucased database maintenance, while caucased is stopped (unless the "
        "database is PostgreSQL): restore a backup, import or export the service CA, import "
        "CRLs, copy the database to another engine.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    add = parser.add_argument
    add(
        "--db",
        default="caucase.sqlite",
        help="caucased's database: an SQLite file, which import and export create (mode "
        "0600) when missing, or a postgresql:// URL (default: %(default)s)",
    )
    add(
        "--user-crt-validity",
        type=float,
        default=93,
        metavar="DAYS",
        help="validity in days of the user certificate --restore-backup issues, and of "
        "user certificates for --renew-ca cau: caucased's value (default: %(default)s days)",
    )
    add(
        "--service-crt-validity",
        type=float,
        default=93,
        metavar="DAYS",
        help="validity in days of service certificates, for --renew-ca cas: caucased's "
        "value (default: %(default)s days)",
    )
    add(
        "--restore-backup",
        nargs=4,
        metavar=("BACKUP_PATH", "KEY_PATH", "CSR_PATH", "CRT_PATH"),
        help="rebuild the missing --db (or an empty PostgreSQL one) from the backup at "
        "BACKUP_PATH, opened with the user key at KEY_PATH; that user's certificate is "
        "revoked, and a new one for the key of CSR_PATH is appended to CRT_PATH",
    )
    add(
        "--audit-log",
        metavar="FILE",
        help="with --restore-backup: append what it changes to caucased's audit log FILE "
        "(the restore, the new user certificate, the revocation of the old one) "
        "(default: none)",
    )
    add(
        "--import-ca",
        action="append",
        default=[],
        metavar="PEM_FILE",
        help="add the CA certificates of this file, with their keys (here or in another "
        "--import-ca file), to the service CA; repeatable; encrypted keys need a "
        "passphrase",
    )
    add(
        "--import-bad-ca",
        action="store_true",
        help="import CA certificates that fail the checks of a CA certificate "
        "(critical CA basic constraints, keyCertSign and cRLSign usages)",
    )
    add(
        "--import-crl",
        action="append",
        default=[],
        metavar="PEM_FILE",
        help="revoke in the service CA every serial of this CRL, which one of its CAs "
        "must have signed; repeatable",
    )
    add(
        "--renew-ca",
        choices=("cas", "cau"),
        help="start a CA rollover now: a new CA certificate, distributed at once, signing "
        "one certificate validity later; restart caucased afterwards",
    )
    for name, settings in (
        key_type_option("the type and size of the newest CA key (for --renew-ca)"),
        key_len_option("the size of the newest RSA CA key, else 2048"),
    ):
        add(name, **settings)
    add(
        "--export-ca",
        metavar="PEM_FILE",
        help="write every service CA certificate and its key, encrypted with a "
        "passphrase, into this new file (mode 0600)",
    )
    add(
        "--passphrase-file",
        metavar="FILE",
        help="the passphrase of --import-ca keys and of --export-ca is this file's "
        "first line (default: asked on the terminal, or read as one line of standard "
        "input when there is no terminal)",
    )
    add(
        "--copy-to",
        metavar="PATH_OR_URL",
        help="copy the whole --db, read from one snapshot (caucased may keep serving it), "
        "into this new SQLite file or empty PostgreSQL database; runs last",
    )
    add(
        "--verify-audit-log",
        nargs="+",
        metavar="FILE",
        help="check the hash chain of caucased's audit log, rotated files oldest first, "
        "and name the first bad line; runs before any other action",
    )
    return parser


# Restore (cli 9.3, ca-profile 6.7)


def _load_restoring_key(path: str) -> keys.PrivateKey:
    """One RSA or EC key, alone or with its own certificate."""
    blocks = read_blocks(path)
    key_blocks = [block for block in blocks if block.kind is BlockKind.KEY]
    certificates = [block for block in blocks if block.kind is BlockKind.CERTIFICATE]
    if (
        len(key_blocks) != 1
        or len(certificates) > 1
        or len(blocks) != len(key_blocks) + len(certificates)
    ):
        raise ManageError(f"{path}: expected one private key, optionally with its certificate")
    try:
        key = keys.load_private_key(key_blocks[0].text)
    except (ValueError, TypeError) as error:
        raise ManageError(f"{path}: unusable private key ({error})") from None
    if not keys.can_agree(key.public_key()):
        raise ManageError(
            f"{path}: {keys.family(key.public_key())} keys cannot decrypt backups "
            "(only RSA and EC users are backup recipients)"
        )
    if certificates:
        crt = x509.load_pem_x509_certificate(certificates[0].text)
        if not keys.same_public_key(crt, key):
            raise ManageError(f"{path}: the certificate does not match the private key")
    return key


def _replace_user_certificate(
    database: Engine,
    key: keys.PrivateKey,
    csr_pem: bytes,
    validity: float,
    clock: Clock,
    observer: Observer,
) -> bytes:
    """Renew the restoring user's certificate for the new key, then revoke the old one."""
    storage = Storage(
        database,
        "cau",
        crt_keep_time=validity,
        crt_read_keep_time=validity,
        enforce_unique_key_id=True,
    )
    pairs = storage.get_ca_key_pairs(to_timestamp(clock()))
    if not pairs:
        raise ManageError("the backup holds no valid CAU certificate authority")
    subject = x509util.load_certificate(pairs[-1][1]).subject
    authority = CertificateAuthority(
        storage, subject, None, validity, clock=clock, observer=observer
    )
    try:
        old_pem = storage.get_certificate_by_key_id(keys.key_id(key.public_key()))
    except NotFound:
        raise ManageError("the backup holds no certificate for the given key") from None
    new_pem = authority.renew(old_pem, csr_pem)
    authority.revoke_certificate(old_pem, method="restore")
    return new_pem


def restore(args: argparse.Namespace, clock: Clock) -> None:
    """Rebuild --db from a backup and give the restoring user a new certificate.

    The new database is held exclusively throughout; on any failure it is closed, then
    removed."""
    backup_path, key_path, csr_path, crt_path = args.restore_backup
    key = _load_restoring_key(key_path)
    csr_pem = read_one_csr(csr_path)
    if exists(args.db):
        raise ManageError(f"{describe(args.db)!r} exists, not restoring.")
    audit = None if args.audit_log is None else AuditLog(args.audit_log, clock)
    observer = Recorder(audit, None)
    try:
        with open(backup_path, "rb") as source:
            statements = backup.read_backup(source, key)
            with restored_database(args.db, statements) as database:
                observer.notify(event("database-restored", backup=backup_path, db=args.db))
                new_pem = _replace_user_certificate(
                    database, key, csr_pem, args.user_crt_validity, clock, observer
                )
                append_to_file(crt_path, new_pem)
    finally:
        if audit is not None:
            audit.close()
    valid_until = x509util.load_certificate(new_pem).not_valid_after_utc
    print(
        f"Restored {args.db} from {backup_path}; the new user certificate, valid until "
        f"{valid_until:%Y-%m-%d %H:%M:%S} UTC, is in {crt_path}",
        file=sys.stderr,
    )


# Import CRL (cli 9.5)


def _first_crl(path: str) -> x509.CertificateRevocationList:
    for block in read_blocks(path):
        if block.kind is BlockKind.CRL:
            try:
                return x509util.load_crl(block.text)
            except ValueError:
                raise ManageError(f"{path}: malformed CRL") from None
    raise ManageError(f"{path}: no CRL found")


@dataclass(frozen=True)
class Revocations:
    """What the --import-crl files revoke, checked against the CAS CAs."""

    serials: list[int]
    crl_number: int
    last_update: datetime.datetime
    expiration: datetime.datetime


def check_crls(
    db: str,
    crls: list[tuple[str, x509.CertificateRevocationList]],
    ca_list: list[x509.Certificate],
) -> Revocations:
    """Every CRL must be signed by one of `ca_list` and carry a CRL number."""
    if not ca_list:
        raise ManageError(f"{db!r} holds no valid CAS certificate authority")
    serials: list[int] = []
    numbers, last_updates = [], []
    for path, crl in crls:
        if not any(crl.is_signature_valid(ca.public_key()) for ca in ca_list):  # type: ignore[arg-type]
            raise ManageError(f"{path}: CRL not issued by any CA of this database")
        try:
            numbers.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            raise ManageError(f"{path}: CRL has no CRL number") from None
        last_updates.append(crl.last_update_utc)
        serials.extend(entry.serial_number for entry in crl)
    expiration = max(ca.not_valid_after_utc for ca in ca_list)
    return Revocations(serials, max(numbers), max(last_updates), expiration)


def import_crl(storage: Storage, revocations: Revocations, clock: Clock) -> None:
    """Revoke every serial, retained until the latest CA expires; store the CRL state."""
    revoked, already = storage.revoke_many(
        revocations.serials, to_timestamp(clock()), to_timestamp(revocations.expiration)
    )
    storage.set_crl_state(revocations.crl_number, to_timestamp(revocations.last_update))
    print(
        f"Set CRL number to {revocations.crl_number} and last update to {revocations.last_update}"
    )
    print(f"Revoked {revoked} certificates ({already} were already revoked)")


# Export CA (cli 9.6)


def export_ca(path: str, storage: Storage, clock: Clock, passphrase: bytes) -> None:
    """Write every CAS CA certificate and its encrypted key, 0600, never over a file."""
    output = []
    for key_pem, crt_pem in storage.get_ca_key_pairs(to_timestamp(clock())):
        key = keys.load_private_key(key_pem)
        output.append(crt_pem + keys.dump_private_key(key, passphrase))
    _create_private_file(path, b"".join(output))


def _create_private_file(path: str, data: bytes) -> None:
    """Write a new 0600 file at once: complete under a temporary name, then linked into
    place, which fails rather than replace a file created meanwhile."""
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        raise ManageError(f"file exists: {path!r}") from None
    finally:
        os.unlink(temporary)


@dataclass
class Inputs:
    """Every file read and passphrase answered before the database is touched, so that
    a bad file or a wrong passphrase changes and creates nothing."""

    ca_pairs: list[CAPair]
    crls: list[tuple[str, x509.CertificateRevocationList]]
    export_passphrase: bytes | None


def read_inputs(args: argparse.Namespace, clock: Clock) -> Inputs:
    """In the reference's prompting order: import keys first, then the export."""
    passphrases = Passphrases(args.passphrase_file)
    pairs = select_ca_pairs(args, passphrases, clock) if args.import_ca else []
    crls = [(path, _first_crl(path)) for path in args.import_crl]
    export_passphrase = passphrases.for_export() if args.export_ca else None
    return Inputs(pairs, crls, export_passphrase)


def import_inputs(
    args: argparse.Namespace, inputs: Inputs, storage: Storage, clock: Clock
) -> None:
    """Import CAs, then CRLs; every check comes before the first write."""
    revocations = None
    if inputs.crls:
        held = storage.get_ca_key_pairs(to_timestamp(clock()))
        ca_list = [x509util.load_certificate(crt) for _, crt in held]
        ca_list += [crt for crt, _ in inputs.ca_pairs]
        revocations = check_crls(args.db, inputs.crls, ca_list)
    if inputs.ca_pairs:
        import_ca(storage, inputs.ca_pairs)
    if revocations is not None:
        import_crl(storage, revocations, clock)


def run(args: argparse.Namespace, clock: Clock = utcnow) -> None:
    """The actions asked for, in the fixed order of cli 9.2 (the audit log check first,
    the CA rollover between the imports and the export). A database this run creates for
    import or export is removed again when they fail."""
    if args.verify_audit_log:
        verification = verify_audit_log(args.verify_audit_log)
        if not verification.ok:
            raise ManageError(verification.describe())
        print(verification.describe())
    if args.restore_backup:
        restore(args, clock)
    if args.import_ca or args.import_crl or args.export_ca or args.renew_ca:
        _run_ca_actions(args, clock)
    if args.copy_to:
        tables, rows = copy_database(args.db, args.copy_to)
        print(f"Copied {tables} tables ({rows} rows) to {describe(args.copy_to)}")


def _run_ca_actions(args: argparse.Namespace, clock: Clock) -> None:
    """Imports, rollover and export, reading every input first."""
    inputs = read_inputs(args, clock)
    if inputs.ca_pairs or inputs.crls:
        with _maintained_database(args) as storage:
            import_inputs(args, inputs, storage, clock)
    if args.renew_ca:
        renew_ca(args, clock)
    if inputs.export_passphrase is not None:
        with _maintained_database(args) as storage:
            export_ca(args.export_ca, storage, clock, inputs.export_passphrase)


@contextlib.contextmanager
def _maintained_database(args: argparse.Namespace) -> Iterator[Storage]:
    """The CAS tables of --db; a database created here is removed again on failure.
    Imports write: refused while a caucased holds an SQLite file (on PostgreSQL, the
    caucased sharing it see the change at once). Exporting only reads."""
    created = not exists(args.db)
    exclusive = created or bool(args.import_ca or args.import_crl)
    database = open_database(args.db, exclusive=exclusive)
    try:
        yield Storage(database, "cas")
    except BaseException:
        if created:
            database.remove()
        else:
            database.close()
        raise
    database.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of `caucased-manage`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_key_options(parser, args)
    if args.export_ca and os.path.lexists(args.export_ca):
        parser.error(f"file exists: {args.export_ca!r}")
    if args.copy_to and not is_url(args.copy_to) and os.path.lexists(args.copy_to):
        parser.error(f"file exists: {args.copy_to!r}")
    try:
        run(args)
    except (CaucaseError, OSError, ValueError) as error:
        print(f"caucased-manage: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("caucased-manage: interrupted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
