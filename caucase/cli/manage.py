"""caucased-manage: offline database maintenance (cli 9, ca-profile 5.5 and 6.7).

Actions run in a fixed order whatever the command line order: restore a backup, import
CA key pairs, import CRLs, start a CA rollover, export CA key pairs. Every failure is one
line on stderr and exit status 1, and leaves no half-made file behind.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import os
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from caucase import __version__, backup
from caucase.ca import CertificateAuthority
from caucase.cli.key_options import check_key_options, key_len_option, key_type_option
from caucase.clock import Clock, to_timestamp, utcnow
from caucase.crypto import keys, x509util
from caucase.crypto.pemfile import BlockKind, PemBlock, append_to_file, read_blocks, read_one_csr
from caucase.exceptions import CaucaseError, NotFound, UnsupportedKey
from caucase.storage import Storage, restore_database

_DB_SIDE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class ManageError(CaucaseError):
    """A maintenance action failed: the message is shown to the operator as is."""


def build_parser() -> argparse.ArgumentParser:
    """Options, arities and repetition rules of cli 9.1."""
    parser = argparse.ArgumentParser(
        prog="caucased-manage", description="caucase database management tool"
    )
    parser.add_argument("--version", action="version", version=__version__)
    add = parser.add_argument
    add("--db", default="caucase.sqlite", help="Path to the SQLite database.")
    add(
        "--user-crt-validity",
        type=float,
        default=93,
        help="Days, for --restore-backup and --renew-ca cau (caucased's value).",
    )
    add(
        "--service-crt-validity",
        type=float,
        default=93,
        help="Days, for --renew-ca cas (caucased's value).",
    )
    add(
        "--restore-backup",
        nargs=4,
        metavar=("BACKUP_PATH", "KEY_PATH", "CSR_PATH", "CRT_PATH"),
        help="Rebuild --db from a backup, replacing the restoring user's certificate.",
    )
    add("--import-ca", action="append", default=[], metavar="PEM_FILE", help="CAS CA pairs.")
    add("--import-bad-ca", action="store_true", help="Skip the CA sanity checks.")
    add("--import-crl", action="append", default=[], metavar="PEM_FILE", help="CAS CRLs.")
    add(
        "--renew-ca",
        choices=("cas", "cau"),
        help="Start a CA rollover now: a new CA certificate, distributed at once, signing "
        "one certificate validity later. Restart caucased afterwards.",
    )
    for name, settings in (
        key_type_option("the type and size of the newest CA key (for --renew-ca)"),
        key_len_option("the size of the newest RSA CA key, else 2048"),
    ):
        add(name, **settings)
    add("--export-ca", metavar="PEM_FILE", help="Export CAS CA pairs, keys encrypted.")
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
        if keys.key_id(crt.public_key()) != keys.key_id(key.public_key()):
            raise ManageError(f"{path}: the certificate does not match the private key")
    return key


def _remove_database(db_path: str) -> None:
    for suffix in _DB_SIDE_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(db_path + suffix)


def _replace_user_certificate(
    db_path: str, key: keys.PrivateKey, csr_pem: bytes, validity: float, clock: Clock
) -> bytes:
    """Renew the restoring user's certificate for the new key, then revoke the old one."""
    storage = Storage(
        db_path,
        "cau",
        crt_keep_time=validity,
        crt_read_keep_time=validity,
        enforce_unique_key_id=True,
    )
    try:
        pairs = storage.get_ca_key_pairs(to_timestamp(clock()))
        if not pairs:
            raise ManageError("the backup holds no valid CAU certificate authority")
        subject = x509util.load_certificate(pairs[-1][1]).subject
        authority = CertificateAuthority(storage, subject, None, validity, clock=clock)
        try:
            old_pem = storage.get_certificate_by_key_id(keys.key_id(key.public_key()))
        except NotFound:
            raise ManageError("the backup holds no certificate for the given key") from None
        new_pem = authority.renew(old_pem, csr_pem)
        authority.revoke_certificate(old_pem)
        return new_pem
    finally:
        storage.close()


def restore(args: argparse.Namespace, clock: Clock) -> None:
    """Rebuild --db from a backup and give the restoring user a new certificate."""
    backup_path, key_path, csr_path, crt_path = args.restore_backup
    key = _load_restoring_key(key_path)
    csr_pem = read_one_csr(csr_path)
    if os.path.lexists(args.db):
        raise ManageError(f"{args.db!r} exists, not restoring.")
    with open(backup_path, "rb") as source:
        restore_database(args.db, backup.read_backup(source, key))
    try:
        new_pem = _replace_user_certificate(args.db, key, csr_pem, args.user_crt_validity, clock)
        append_to_file(crt_path, new_pem)
    except BaseException:
        _remove_database(args.db)
        raise


# Import CA (cli 9.4)


@dataclass
class _Candidate:
    """Key and certificate blocks sharing one public key, from wherever they came."""

    origins: list[str] = field(default_factory=list)
    certificate: x509.Certificate | None = None
    key: keys.PrivateKey | None = None


class _KeyReader:
    """Loads key blocks, trying every passphrase given so far before asking for one."""

    def __init__(self) -> None:
        self.passphrases: list[bytes | None] = [None]

    def load(self, block: PemBlock, name: str) -> PrivateKeyTypes | None:
        for passphrase in self.passphrases:
            try:
                return keys.load_any_private_key(block.text, passphrase)
            except (ValueError, TypeError):
                continue
        answer = getpass.getpass(f"Passphrase for key at {name} (empty to skip file): ")
        if not answer:
            print("File skipped")
            return None
        try:
            key = keys.load_any_private_key(block.text, answer.encode("utf-8"))
        except (ValueError, TypeError):
            raise ManageError(f"Wrong passphrase for key at {name}") from None
        self.passphrases.append(answer.encode("utf-8"))
        return key


def _collect_candidates(path_list: Sequence[str]) -> list[_Candidate]:
    """Every key and certificate of the files, paired by key id, in first-seen order."""
    by_key_id: dict[str, _Candidate] = {}
    reader = _KeyReader()

    def candidate_for(public_key: object, name: str) -> _Candidate:
        candidate = by_key_id.setdefault(keys.key_id(public_key), _Candidate())
        candidate.origins.append(name)
        return candidate

    for path in path_list:
        for index, block in enumerate(read_blocks(path)):
            name = f"{path!r}, block {index}"
            if block.kind is BlockKind.CERTIFICATE:
                crt = x509.load_pem_x509_certificate(block.text)
                candidate_for(crt.public_key(), name).certificate = crt
            elif block.kind is not BlockKind.KEY:
                raise ManageError(f"{name} is of unsupported type {block.label!r}")
            else:
                loaded = reader.load(block, name)
                if loaded is None:
                    continue
                try:
                    key = keys.usable(loaded)
                    keys.check_acceptable(key.public_key())
                except UnsupportedKey as error:
                    print(f"Skipping private key from {name}: {error}")
                    continue
                candidate_for(key.public_key(), name).key = key
    return list(by_key_id.values())


def _is_ca_certificate(crt: x509.Certificate) -> bool:
    try:
        constraints = crt.extensions.get_extension_for_class(x509.BasicConstraints)
        usage = crt.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return constraints.critical and constraints.value.ca and usage.key_cert_sign and usage.crl_sign


def import_ca(args: argparse.Namespace, storage: Storage, clock: Clock) -> None:
    """Add CA key pairs to the CAS (cli 9.4)."""
    now = clock()
    imported = 0
    for candidate in _collect_candidates(args.import_ca):
        origin = ", ".join(candidate.origins)
        crt = candidate.certificate
        if crt is None:
            print(f"No certificate correspond to {origin} - skipping")
        elif crt.not_valid_after_utc < now:
            print(f"Skipping expired certificate from {origin}")
        elif not args.import_bad_ca and not _is_ca_certificate(crt):
            print(f"Skipping non-CA certificate from {origin}")
        elif candidate.key is None:
            print(f"No private key correspond to {origin} - skipping")
        else:
            storage.append_ca_key_pair(
                to_timestamp(crt.not_valid_after_utc),
                keys.dump_private_key(candidate.key),
                x509util.dump_certificate(crt),
            )
            imported += 1
    if not imported:
        raise ManageError("No CA certificate imported")
    print(f"Imported {imported} CA certificates")


# Import CRL (cli 9.5)


def _first_crl(path: str) -> x509.CertificateRevocationList:
    for block in read_blocks(path):
        if block.kind is BlockKind.CRL:
            try:
                return x509util.load_crl(block.text)
            except ValueError:
                raise ManageError(f"{path}: malformed CRL") from None
    raise ManageError(f"{path}: no CRL found")


def import_crl(args: argparse.Namespace, storage: Storage, clock: Clock) -> None:
    """Revoke, in the CAS, every serial listed by CRLs the CAS issued (cli 9.5)."""
    now = clock()
    ca_list = [
        x509util.load_certificate(crt) for _, crt in storage.get_ca_key_pairs(to_timestamp(now))
    ]
    if not ca_list:
        raise ManageError(f"{args.db!r} holds no valid CAS certificate authority")
    serials: list[int] = []
    number = last_update = None
    for path in args.import_crl:
        crl = _first_crl(path)
        if not any(crl.is_signature_valid(ca.public_key()) for ca in ca_list):  # type: ignore[arg-type]
            raise ManageError(f"{path}: CRL not issued by any CA of this database")
        try:
            crl_number = crl.extensions.get_extension_for_class(x509.CRLNumber).value
        except x509.ExtensionNotFound:
            raise ManageError(f"{path}: CRL has no CRL number") from None
        number = max(number or 0, crl_number.crl_number)
        last_update = max(last_update or crl.last_update_utc, crl.last_update_utc)
        serials.extend(entry.serial_number for entry in crl)
    assert number is not None and last_update is not None
    expiration = max(ca.not_valid_after_utc for ca in ca_list)
    revoked, already = storage.revoke_many(serials, to_timestamp(now), to_timestamp(expiration))
    storage.set_crl_state(number, to_timestamp(last_update))
    print(f"Set CRL number to {number} and last update to {last_update}")
    print(f"Revoked {revoked} certificates ({already} were already revoked)")


# Renew CA (start a rollover now)


def renew_ca(args: argparse.Namespace, clock: Clock) -> None:
    """Make the next CA certificate of the CAS or the CAU now, with the key type asked for
    (or the newest CA's), and say when it starts signing."""
    if not os.path.exists(args.db):
        raise ManageError(f"{args.db!r} does not exist")
    prefix = args.renew_ca
    validity = args.user_crt_validity if prefix == "cau" else args.service_crt_validity
    storage = Storage(args.db, prefix, enforce_unique_key_id=prefix == "cau")
    try:
        pairs = storage.get_ca_key_pairs(to_timestamp(clock()))
        if not pairs:
            raise ManageError(f"{args.db!r} holds no valid {prefix.upper()} CA to renew")
        newest_key, newest_crt = (keys.load_private_key(pairs[-1][0]), pairs[-1][1])
        spec = keys.spec_from_options(args.key_type, args.key_len, newest_key.public_key())
        subject = x509util.load_certificate(newest_crt).subject
        authority = CertificateAuthority(storage, subject, spec, validity, clock=clock)
        # Constructing the authority makes the lazy rollover when it is already due.
        ca_list = authority.get_ca_certificate_list()
        crt = ca_list[-1] if len(ca_list) > len(pairs) else authority.start_rollover()
    finally:
        storage.close()
    signing = crt.not_valid_before_utc + datetime.timedelta(days=validity)
    print(
        f"New {prefix.upper()} CA certificate ({keys.spec_of(crt.public_key())}) valid "
        f"until {crt.not_valid_after_utc}, signing from {signing}; restart caucased so "
        "that it distributes it"
    )


# Export CA (cli 9.6)


def _ask_export_passphrase() -> bytes:
    while True:
        first = getpass.getpass("CA export passphrase: ")
        second = getpass.getpass("             (again): ")
        if first == second:
            break
        print("Error: Input does not match, retrying")
    if not first:
        raise ManageError("Empty passphrase, nothing exported")
    return first.encode("utf-8")


def export_ca(args: argparse.Namespace, storage: Storage, clock: Clock) -> None:
    """Write every CAS CA certificate and its encrypted key, 0600, never over a file."""
    passphrase = _ask_export_passphrase()
    output = []
    for key_pem, crt_pem in storage.get_ca_key_pairs(to_timestamp(clock())):
        key = keys.load_private_key(key_pem)
        output.append(crt_pem + keys.dump_private_key(key, passphrase))
    _create_private_file(args.export_ca, b"".join(output))


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


def run(args: argparse.Namespace, clock: Clock = utcnow) -> None:
    """The actions asked for, in the fixed order of cli 9.2."""
    if args.restore_backup:
        restore(args, clock)
    if args.import_ca or args.import_crl:
        storage = Storage(args.db, "cas")
        try:
            if args.import_ca:
                import_ca(args, storage, clock)
            if args.import_crl:
                import_crl(args, storage, clock)
        finally:
            storage.close()
    if args.renew_ca:
        renew_ca(args, clock)
    if args.export_ca:
        storage = Storage(args.db, "cas")
        try:
            export_ca(args, storage, clock)
        finally:
            storage.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of `caucased-manage`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_key_options(parser, args)
    if args.export_ca and os.path.lexists(args.export_ca):
        parser.error(f"file exists: {args.export_ca!r}")
    try:
        run(args)
    except (CaucaseError, OSError, sqlite3.Error, ValueError) as error:
        print(f"caucased-manage: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("caucased-manage: interrupted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
