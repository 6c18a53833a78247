"""The service CA actions of caucased-manage: import CA key pairs (cli 9.4) and start a CA
rollover now (--renew-ca), and the error every caucased-manage action raises."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from caucase.ca import CertificateAuthority
from caucase.cli.passphrase import Passphrases
from caucase.clock import Clock, to_timestamp
from caucase.crypto import keys, x509util
from caucase.crypto.pemfile import BlockKind, PemBlock, read_blocks
from caucase.exceptions import CaucaseError, UnsupportedKey
from caucase.storage import Storage, describe, exists, is_url, open_database


class ManageError(CaucaseError):
    """A maintenance action failed: the message is shown to the operator as is."""


# Import CA (cli 9.4)


@dataclass
class _Candidate:
    """Key and certificate blocks sharing one public key, from wherever they came."""

    origins: list[str] = field(default_factory=list)
    certificate: x509.Certificate | None = None
    key: keys.PrivateKey | None = None


class _KeyReader:
    """Loads key blocks, trying every passphrase known so far before asking for one."""

    def __init__(self, passphrases: Passphrases) -> None:
        self._source = passphrases
        self._known: list[bytes | None] = [None]
        if passphrases.given is not None:
            self._known.append(passphrases.given)

    def load(self, block: PemBlock, name: str) -> PrivateKeyTypes | None:
        for passphrase in self._known:
            try:
                return keys.load_any_private_key(block.text, passphrase)
            except (ValueError, TypeError):
                continue
        answer = self._source.for_key(name)
        if answer is None:
            print("File skipped")
            return None
        try:
            key = keys.load_any_private_key(block.text, answer)
        except (ValueError, TypeError):
            raise ManageError(f"Wrong passphrase for key at {name}") from None
        self._known.append(answer)
        return key


def _collect_candidates(path_list: Sequence[str], passphrases: Passphrases) -> list[_Candidate]:
    """Every key and certificate of the files, paired by key id, in first-seen order."""
    by_key_id: dict[str, _Candidate] = {}
    reader = _KeyReader(passphrases)

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


CAPair = tuple[x509.Certificate, keys.PrivateKey]


def select_ca_pairs(
    args: argparse.Namespace, passphrases: Passphrases, clock: Clock
) -> list[CAPair]:
    """The CA key pairs of the --import-ca files that qualify (cli 9.4), each refusal
    said on stdout; read before the database is touched."""
    now = clock()
    pairs = []
    for candidate in _collect_candidates(args.import_ca, passphrases):
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
            pairs.append((crt, candidate.key))
    if not pairs:
        raise ManageError("No CA certificate imported")
    return pairs


def import_ca(storage: Storage, pairs: list[CAPair]) -> None:
    """Add the CA key pairs to the CAS."""
    for crt, key in pairs:
        storage.append_ca_key_pair(
            to_timestamp(crt.not_valid_after_utc),
            keys.dump_private_key(key),
            x509util.dump_certificate(crt),
        )
    print(f"Imported {len(pairs)} CA certificates")


# Renew CA (start a rollover now)


def renew_ca(args: argparse.Namespace, clock: Clock) -> None:
    """Make the next CA certificate of the CAS or the CAU now, with the key type asked for
    (or the newest CA's), and say when it starts signing."""
    if not exists(args.db):
        raise ManageError(f"{describe(args.db)!r} does not exist")
    prefix = args.renew_ca
    validity = args.user_crt_validity if prefix == "cau" else args.service_crt_validity
    database = open_database(args.db, exclusive=True)
    try:
        storage = Storage(database, prefix, enforce_unique_key_id=prefix == "cau")
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
        database.close()
    signing = crt.not_valid_before_utc + datetime.timedelta(days=validity)
    # caucased nodes sharing a PostgreSQL database follow the CA rows by themselves.
    then = (
        "caucased distributes it at once"
        if is_url(args.db)
        else ("restart caucased so that it distributes it")
    )
    print(
        f"New {prefix.upper()} CA certificate ({keys.spec_of(crt.public_key())}) valid "
        f"until {crt.not_valid_after_utc}, signing from {signing}; {then}"
    )
