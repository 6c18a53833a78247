"""PEM files and directories on disk (cli.md 2.2, 2.3, 10).

Reading: a file is a sequence of classified PEM blocks; accessors pick exactly the
blocks a command needs and fail with a `PemFileError` naming the file. Writing is
atomic (temporary file in the same directory, then `os.replace`); files holding a
private key are created 0600, other new files get the umask mode, and existing files
keep their mode.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from caucase.crypto import keys
from caucase.exceptions import PemFileError

StrPath = Union[str, "os.PathLike[str]"]

CA_SUFFIX = ".ca.pem"
CRL_SUFFIX = ".crl.pem"

_BLOCK = re.compile(
    rb"-----BEGIN (?P<label>[A-Z0-9 ]+)-----\r?\n.*?-----END (?P=label)-----(?:\r?\n)?",
    re.DOTALL,
)
_CSR_LABELS = (b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
_KEY_SUFFIXES = (b"PRIVATE KEY", b"PUBLIC KEY", b"PRIVATE KEY BLOCK", b"PUBLIC KEY BLOCK")

# Suffix of the new key staged beside a key file during a renewal.
PENDING_KEY_SUFFIX = ".caucase-renewing"


class BlockKind(enum.Enum):
    """What a PEM block holds, as far as caucase cares (cli.md 2.2)."""

    KEY = "key"
    CERTIFICATE = "certificate"
    CSR = "csr"
    CRL = "crl"
    OTHER = "other"


@dataclass(frozen=True)
class PemBlock:
    """One PEM block: its label and its exact text, trailing newline included."""

    label: str
    text: bytes

    @property
    def kind(self) -> BlockKind:
        label = self.label.encode("ascii")
        if label == b"CERTIFICATE":
            return BlockKind.CERTIFICATE
        if label in _CSR_LABELS:
            return BlockKind.CSR
        if label == b"X509 CRL":
            return BlockKind.CRL
        if label.endswith(_KEY_SUFFIXES):
            return BlockKind.KEY
        return BlockKind.OTHER


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, with the file the key was read from."""

    certificate: x509.Certificate
    key: keys.PrivateKey
    key_path: str

    @property
    def key_in_certificate_file(self) -> bool:
        """Whether renewals must write key and certificate into one file."""
        return self.key_path == ""


def split_blocks(data: bytes) -> list[PemBlock]:
    """Every PEM block of `data`, in order; text outside blocks is ignored."""
    return [
        PemBlock(match.group("label").decode("ascii"), match.group(0))
        for match in _BLOCK.finditer(data)
    ]


def read_blocks(path: StrPath) -> list[PemBlock]:
    """Every PEM block of the file at `path`."""
    try:
        with open(path, "rb") as handle:
            return split_blocks(handle.read())
    except FileNotFoundError:
        raise PemFileError(path, f"{os.fspath(path)}: no such file") from None
    except OSError as error:
        raise PemFileError(path, f"{os.fspath(path)}: {error.strerror}") from None


def _of_kind(blocks: Sequence[PemBlock], kind: BlockKind) -> list[PemBlock]:
    return [block for block in blocks if block.kind is kind]


def parse_certificate(path: StrPath, block: PemBlock) -> x509.Certificate:
    """The certificate of `block`, or a PemFileError naming `path`."""
    try:
        return x509.load_pem_x509_certificate(block.text)
    except ValueError:
        raise PemFileError(path, f"{os.fspath(path)}: malformed certificate") from None


def parse_crl(path: StrPath, block: PemBlock) -> x509.CertificateRevocationList:
    """The CRL of `block`, or a PemFileError naming `path`."""
    try:
        return x509.load_pem_x509_crl(block.text)
    except ValueError:
        raise PemFileError(path, f"{os.fspath(path)}: malformed CRL") from None


def _parse_key(path: StrPath, block: PemBlock) -> keys.PrivateKey:
    try:
        return keys.load_private_key(block.text)
    except ValueError as error:
        raise PemFileError(path, f"{os.fspath(path)}: unusable private key ({error})") from None


def read_one_certificate(path: StrPath) -> x509.Certificate:
    """The only certificate of the file; keys and other blocks are ignored."""
    certificates = _of_kind(read_blocks(path), BlockKind.CERTIFICATE)
    if len(certificates) != 1:
        raise PemFileError(path, f"Could not load a single certificate in {os.fspath(path)}")
    return parse_certificate(path, certificates[0])


def read_one_csr(path: StrPath) -> bytes:
    """The text of the only block of the file, which must be a CSR with a valid signature."""
    blocks = read_blocks(path)
    if len(blocks) != 1 or blocks[0].kind is not BlockKind.CSR:
        if _of_kind(blocks, BlockKind.CSR):
            raise PemFileError(path, f"{os.fspath(path)} contains more than just a csr")
        raise PemFileError(path, f"{os.fspath(path)} contains no certificate request")
    try:
        csr = x509.load_pem_x509_csr(blocks[0].text)
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise PemFileError(path, f"{os.fspath(path)}: malformed or badly signed CSR")
    return blocks[0].text


def read_one_key(path: StrPath) -> keys.PrivateKey:
    """The only block of the file, which must be a private key."""
    blocks = read_blocks(path)
    if len(blocks) != 1 or blocks[0].kind is not BlockKind.KEY:
        raise PemFileError(
            path, f"Expected to find exactly one privatekey key in {os.fspath(path)}"
        )
    return _parse_key(path, blocks[0])


def count_keys(path: StrPath) -> int:
    """How many key blocks the file holds (0 when it does not exist)."""
    if not os.path.exists(path):
        return 0
    return len(_of_kind(read_blocks(path), BlockKind.KEY))


def read_key_pair(crt_path: StrPath, key_path: StrPath | None) -> KeyPair:
    """The certificate and key of CRT_PATH, taking the key from KEY_PATH only when
    CRT_PATH holds none (cli.md 2.2). `KeyPair.key_path` is "" for a combined file."""
    blocks = read_blocks(crt_path)
    source = ""
    if not _of_kind(blocks, BlockKind.KEY) and key_path:
        blocks = blocks + read_blocks(key_path)
        source = os.fspath(key_path)
    paths = sorted({os.fspath(crt_path), *([source] if source else [])})
    key_blocks = _of_kind(blocks, BlockKind.KEY)
    certificates = _of_kind(blocks, BlockKind.CERTIFICATE)
    mismatch = PemFileError(
        crt_path, f"Could not find (exactly) one matching key pair in {paths!r}"
    )
    if len(key_blocks) != 1 or len(certificates) != 1:
        raise mismatch
    certificate = parse_certificate(crt_path, certificates[0])
    key = _parse_key(source or crt_path, key_blocks[0])
    if not keys.same_public_key(certificate, key):
        raise mismatch
    return KeyPair(certificate, key, source)


def has_one_certificate(path: StrPath) -> bool:
    """False when the file is missing or holds no certificate; error with several."""
    if not os.path.exists(path):
        return False
    count = len(_of_kind(read_blocks(path), BlockKind.CERTIFICATE))
    if count > 1:
        raise PemFileError(path, f"{os.fspath(path)} holds more than one certificate")
    return count == 1


def _store_blocks(path: StrPath, kind: BlockKind) -> list[bytes]:
    if os.path.isdir(path):
        result: list[bytes] = []
        for name in os.listdir(path):
            entry = os.path.join(path, name)
            if os.path.isfile(entry):
                result.extend(block.text for block in _of_kind(read_blocks(entry), kind))
        return result
    if not os.path.exists(path):
        return []
    return [block.text for block in _of_kind(read_blocks(path), kind)]


def read_ca_store(path: StrPath) -> list[bytes]:
    """Certificate blocks of a CA store (file, directory, or nothing yet)."""
    return _store_blocks(path, BlockKind.CERTIFICATE)


def read_crl_store(path: StrPath) -> list[bytes]:
    """CRL blocks of a CRL store (file, directory, or nothing yet)."""
    return _store_blocks(path, BlockKind.CRL)


def _authority_key_hex(path: StrPath, block: PemBlock) -> str:
    document: x509.Certificate | x509.CertificateRevocationList
    if block.kind is BlockKind.CRL:
        document = parse_crl(path, block)
    else:
        document = parse_certificate(path, block)
    try:
        aki = document.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        aki = None
    if aki is None or aki.value.key_identifier is None:
        raise PemFileError(path, f"{os.fspath(path)}: an entry lacks an authority key identifier")
    return aki.value.key_identifier.hex()


def _save_store(path: StrPath, pem_list: Sequence[bytes], suffix: str) -> None:
    """File layout or one-object-per-file directory layout (cli.md 2.3, errata 7)."""
    if os.path.exists(path):
        if os.path.isdir(path):
            _save_directory(path, pem_list, suffix)
        elif os.path.isfile(path):
            write_file(path, b"".join(pem_list))
        else:
            raise PemFileError(
                path, f"{os.fspath(path)} exist and is neither a directory nor a file"
            )
    elif os.path.splitext(path)[1]:
        write_file(path, b"".join(pem_list))
    else:
        try:
            os.mkdir(path)
        except OSError as error:
            raise PemFileError(path, f"{os.fspath(path)}: {error.strerror}") from None
        _save_directory(path, pem_list, suffix)


def _save_directory(path: StrPath, pem_list: Sequence[bytes], suffix: str) -> None:
    wanted: dict[str, bytes] = {}
    for text in pem_list:
        for block in split_blocks(text):
            wanted[_authority_key_hex(path, block) + suffix] = block.text
    for name in os.listdir(path):
        entry = os.path.join(path, name)
        if not name.endswith(suffix) or not os.path.isfile(entry):
            continue
        if name in wanted and not os.path.islink(entry):
            with open(entry, "rb") as handle:
                if handle.read() == wanted[name]:
                    del wanted[name]
                    continue
        else:
            os.unlink(entry)
    for name, text in wanted.items():
        write_file(os.path.join(path, name), text)


def save_ca_store(path: StrPath, pem_list: Sequence[bytes]) -> None:
    """Replace the content of a CA store with `pem_list`, in order."""
    _save_store(path, pem_list, CA_SUFFIX)


def save_crl_store(path: StrPath, pem_list: Sequence[bytes]) -> None:
    """Replace the content of a CRL store with `pem_list`, in order."""
    _save_store(path, pem_list, CRL_SUFFIX)


def _create_temporary(directory: str, base: str, mode: int) -> tuple[int, str]:
    for _ in range(100):
        candidate = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), candidate
        except FileExistsError:
            continue
    raise FileExistsError(directory)


def write_file(path: StrPath, data: bytes, *, private: bool = False) -> None:
    """Atomically make `path` hold `data`. A new file is 0600 when `private`, else
    umask mode; an existing file keeps its mode. A symlink's target is replaced."""
    target = os.path.realpath(path)
    try:
        existing_mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        existing_mode = None
    directory, base = os.path.split(target)
    try:
        fd, temporary = _create_temporary(directory, base, 0o600 if private else 0o666)
    except OSError as error:
        raise PemFileError(path, f"{os.fspath(path)}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if existing_mode is not None:
                os.fchmod(handle.fileno(), existing_mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def append_to_file(path: StrPath, data: bytes, *, private: bool = False) -> None:
    """Atomically append `data` to `path` (created when missing)."""
    try:
        with open(path, "rb") as handle:
            current = handle.read()
    except FileNotFoundError:
        current = b""
    write_file(path, current + data, private=private)


def _pending_key_path(key_path: StrPath) -> str:
    return os.path.realpath(key_path) + PENDING_KEY_SUFFIX


def write_renewed(pair: KeyPair, crt_path: StrPath, key_pem: bytes, crt_pem: bytes) -> None:
    """Store a renewed key and certificate where the old pair came from (cli.md 3.3) so that
    a crash leaves either the old pair or a new one `recover_interrupted_renewal` completes.

    Combined file: one atomic replace. Separate files: the new key is first saved beside the
    key file, then the certificate is replaced, then the key."""
    if pair.key_in_certificate_file:
        write_file(crt_path, key_pem + crt_pem, private=True)
        return
    target = os.path.realpath(pair.key_path)
    pending = _pending_key_path(pair.key_path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pending)
    write_file(pending, key_pem, private=True)
    os.chmod(pending, stat.S_IMODE(os.stat(target).st_mode))
    write_file(crt_path, crt_pem)
    os.replace(pending, target)


def recover_interrupted_renewal(crt_path: StrPath, key_path: StrPath | None) -> None:
    """Finish (the new certificate is already in place) or discard (it is not) a renewal
    whose key replacement was interrupted."""
    if not key_path:
        return
    pending = _pending_key_path(key_path)
    if not os.path.exists(pending):
        return
    try:
        matches = keys.same_public_key(read_one_certificate(crt_path), read_one_key(pending))
    except PemFileError:
        matches = False
    if matches and count_keys(crt_path) == 0:
        os.replace(pending, os.path.realpath(key_path))
    else:
        os.unlink(pending)
