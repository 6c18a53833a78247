"""The encrypted backup format (ca-profile 6): streaming writer and reader.

Layout: magic, little-endian header length, JSON header naming the symmetric scheme and
the secret wrapped for each recipient, then one AES-256-CBC/PKCS#7 stream of
`chunk || running HMAC-SHA256` blocks over the NUL-terminated SQL statements.

Recipients with RSA keys get the reference's RSA-OAEP entry. Recipients with EC keys get an
entry of our own (`ECDH_KEY_CIPHER_NAME`): ephemeral-static ECDH on the recipient's curve,
HKDF-SHA256 of the shared secret into an AES-256 key-encryption key, AES key wrap (RFC 3394)
of the same secret. Readers select the entry carrying their own key id, so the reference
skips these. Ed25519 keys cannot agree on a secret: such users are no recipients.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, keywrap, padding
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from caucase.crypto import keys
from caucase.exceptions import BackupError, UnsupportedKey

MAGIC = b"caucase\0"
CHUNK_SIZE = 10 * 1024 * 1024
TEST_CHUNK_SIZE = 32
CIPHER_NAMES = {
    CHUNK_SIZE: "aes256_cbc_pkcs7_hmac_10M_sha256",
    TEST_CHUNK_SIZE: "TESTS_INTERNAL_USE_ONLY",
}
KEY_CIPHER_NAME = "rsa_oaep_sha1_mgf1_sha1"
ECDH_KEY_CIPHER_NAME = "ecdh_es_hkdf_sha256_aes256_kw"
MAC_SIZE = 32
SECRET_SIZE = 64
READ_SIZE = 64 * 1024
MAX_HEADER_SIZE = 16 * 1024 * 1024
_HEADER_LENGTH = struct.Struct("<I")


def _key_encryption_key(
    shared_secret: bytes, ephemeral_point: bytes, recipient_point: bytes
) -> bytes:
    """HKDF-SHA256 (RFC 5869, no salt) of the ECDH secret, bound to the cipher name and to
    both public points (NIST SP 800-56C)."""
    info = ECDH_KEY_CIPHER_NAME.encode("ascii") + ephemeral_point + recipient_point
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared_secret)


def _recipient_entry(certificate: x509.Certificate, secret: bytes) -> dict[str, Any]:
    """The key_list entry giving `secret` to the holder of the certificate's key;
    UnsupportedKey saying why when that key cannot receive one."""
    public_key = keys.public_key_of(certificate)
    if not keys.can_agree(public_key):
        raise UnsupportedKey(
            f"{keys.family(public_key)} keys can only sign, not decrypt (no key agreement)"
        )
    entry_id = keys.key_id(public_key)
    if keys.kind(public_key) is keys.KeyType.RSA:
        wrapped = keys.rsa_oaep_sha1_encrypt(public_key, secret)
        return {"id": entry_id, "cipher": {"name": KEY_CIPHER_NAME}, "key": wrapped.hex()}
    ephemeral_point, shared_secret = keys.ecdh_ephemeral(public_key)
    kek = _key_encryption_key(shared_secret, ephemeral_point, keys.ec_point(public_key))
    return {
        "id": entry_id,
        "cipher": {"name": ECDH_KEY_CIPHER_NAME, "parameter": ephemeral_point.hex()},
        "key": keywrap.aes_key_wrap(kek, secret).hex(),
    }


class _EncryptingWriter:
    """Pads once at the very end and encrypts everything as one CBC stream."""

    def __init__(self, output: BinaryIO, encryption_key: bytes, iv: bytes) -> None:
        self._output = output
        self._encryptor: CipherContext = Cipher(
            algorithms.AES(encryption_key), modes.CBC(iv)
        ).encryptor()
        self._padder = padding.PKCS7(algorithms.AES.block_size).padder()

    def write(self, data: bytes | memoryview) -> None:
        self._output.write(self._encryptor.update(self._padder.update(data)))

    def close(self) -> None:
        self._output.write(self._encryptor.update(self._padder.finalize()))
        self._output.write(self._encryptor.finalize())


def write_backup(
    output: BinaryIO,
    statements: Iterable[str],
    recipients: Iterable[x509.Certificate],
    chunk_size: int = CHUNK_SIZE,
    on_skip: Callable[[x509.Certificate, str], None] | None = None,
) -> int:
    """Encrypt `statements` for every recipient able to decrypt; return how many were used.

    Recipients whose key cannot receive a secret (Ed25519, DSA...) are skipped and handed to
    `on_skip` with the reason (the reference crashed on non-RSA keys, errata 2). Raises
    BackupError when no recipient is usable, before writing anything. Memory use does not
    grow with the dump size. `chunk_size` TEST_CHUNK_SIZE selects the test variant."""
    if chunk_size not in CIPHER_NAMES:
        raise ValueError(f"Unsupported chunk size {chunk_size}")
    secret = os.urandom(SECRET_SIZE)
    iv = os.urandom(16)
    key_list = []
    for certificate in recipients:
        try:
            key_list.append(_recipient_entry(certificate, secret))
        except UnsupportedKey as error:
            if on_skip is not None:
                on_skip(certificate, str(error))
    if not key_list:
        raise BackupError("No recipient certificate able to decrypt: backup not written")
    header = json.dumps(
        {"cipher": {"name": CIPHER_NAMES[chunk_size], "parameter": iv.hex()}, "key_list": key_list}
    ).encode("ascii")
    output.write(MAGIC + _HEADER_LENGTH.pack(len(header)) + header)
    writer = _EncryptingWriter(output, secret[SECRET_SIZE // 2 :], iv)
    _write_signed_stream(writer, statements, secret[: SECRET_SIZE // 2], chunk_size)
    writer.close()
    return len(key_list)


def _write_signed_stream(
    writer: _EncryptingWriter, statements: Iterable[str], mac_key: bytes, chunk_size: int
) -> None:
    """chunk1 || MAC(D[:C]) || chunk2 || MAC(D[:2C]) || ... || last || MAC(D) (ca-profile 6.4).

    Statements go straight through: only the current statement is ever held."""
    mac = hmac.new(mac_key, digestmod=hashlib.sha256)
    chunk_filled = 0
    for statement in statements:
        data = memoryview(statement.encode("utf-8") + b"\0")
        while data:
            piece = data[: chunk_size - chunk_filled]
            writer.write(piece)
            mac.update(piece)
            chunk_filled += len(piece)
            data = data[len(piece) :]
            if chunk_filled == chunk_size:
                writer.write(mac.digest())
                chunk_filled = 0
    if chunk_filled:
        writer.write(mac.digest())


def _read_exactly(source: BinaryIO, size: int, what: str) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise BackupError(f"Short read, backup truncated ? ({what})")
    return data


def _read_header(source: BinaryIO) -> dict[str, Any]:
    """Check the magic and parse the JSON header; BackupError on anything malformed."""
    if source.read(len(MAGIC)) != MAGIC:
        raise BackupError("Invalid backup magic string")
    (header_length,) = _HEADER_LENGTH.unpack(_read_exactly(source, 4, "header length"))
    if header_length > MAX_HEADER_SIZE:
        raise BackupError("Invalid backup header: too long")
    try:
        header = json.loads(_read_exactly(source, header_length, "header"))
        if not isinstance(header, dict):
            raise TypeError("not an object")
        if not isinstance(header["cipher"]["name"], str):
            raise TypeError("cipher name is not a string")
        for entry in header["key_list"]:
            if not (isinstance(entry["id"], str) and isinstance(entry["key"], str)):
                raise TypeError("key_list entry fields are not strings")
            if not isinstance(entry["cipher"]["name"], str):
                raise TypeError("key cipher name is not a string")
    except (ValueError, TypeError, KeyError, RecursionError) as error:
        raise BackupError(f"Invalid backup header: {error}") from None
    return header


def read_key_ids(source: BinaryIO) -> list[str]:
    """Key ids of the header's key_list, in order; BackupError on a bad magic or header."""
    return [entry["id"] for entry in _read_header(source)["key_list"]]


def read_backup(source: BinaryIO, private_key: keys.PrivateKey) -> Iterator[str]:
    """Yield verified SQL statements; BackupError on wrong key, tampering or truncation.

    The header and the key are checked at once; statements are decrypted lazily, each
    yielded only after the MAC of the chunk holding its end has verified."""
    header = _read_header(source)
    cipher_name = header["cipher"]["name"]
    chunk_sizes = {name: size for size, name in CIPHER_NAMES.items()}
    if cipher_name not in chunk_sizes:
        raise BackupError(f"Unrecognised symmetric cipher {cipher_name!r}")
    try:
        iv = bytes.fromhex(header["cipher"]["parameter"])
    except (KeyError, TypeError, ValueError):
        iv = b""
    if len(iv) != algorithms.AES.block_size // 8:
        raise BackupError("Invalid backup header: bad IV")
    secret = _unwrap_secret(header["key_list"], private_key)
    decryptor = Cipher(algorithms.AES(secret[SECRET_SIZE // 2 :]), modes.CBC(iv)).decryptor()
    return _read_statements(
        _verified_chunks(source, decryptor, secret[: SECRET_SIZE // 2], chunk_sizes[cipher_name])
    )


def _unwrap_secret(key_list: list[dict[str, Any]], private_key: keys.PrivateKey) -> bytes:
    own_key_id = keys.key_id(private_key.public_key())
    candidates = [entry for entry in key_list if entry["id"] == own_key_id]
    if not candidates:
        raise BackupError("Given private key is not a good candidate for restoring this backup")
    if len(candidates) > 1:
        raise BackupError(f"Several backup key entries have the id {own_key_id}")
    (entry,) = candidates
    name = entry["cipher"]["name"]
    try:
        wrapped = bytes.fromhex(entry["key"])
        if name == KEY_CIPHER_NAME:
            secret = keys.rsa_oaep_sha1_decrypt(private_key, wrapped)
        elif name == ECDH_KEY_CIPHER_NAME:
            secret = _ecdh_unwrap(entry["cipher"], private_key, wrapped)
        else:
            raise BackupError(f"Unrecognised key cipher {name!r}")
    except UnsupportedKey as error:
        raise BackupError(
            f"Backup key entry {name!r} does not fit the given key: {error}"
        ) from None
    except (ValueError, TypeError, KeyError, keywrap.InvalidUnwrap):
        raise BackupError("Could not decrypt the backup key with the given private key") from None
    if len(secret) != SECRET_SIZE:
        raise BackupError("Invalid backup key length")
    return secret


def _ecdh_unwrap(cipher: dict[str, Any], private_key: keys.PrivateKey, wrapped: bytes) -> bytes:
    """The secret of an ECDH entry; ValueError or InvalidUnwrap when it does not decrypt."""
    ephemeral_point = bytes.fromhex(cipher["parameter"])
    shared_secret = keys.ecdh_static(private_key, ephemeral_point)
    own_point = keys.ec_point(private_key.public_key())
    kek = _key_encryption_key(shared_secret, ephemeral_point, own_point)
    return keywrap.aes_key_unwrap(kek, wrapped)


def _decrypted_pieces(source: BinaryIO, decryptor: CipherContext) -> Iterator[bytes]:
    """Plaintext of the whole stream, unpadded, in pieces of bounded size."""
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    while piece := source.read(READ_SIZE):
        yield unpadder.update(decryptor.update(piece))
    try:
        yield unpadder.update(decryptor.finalize())
        yield unpadder.finalize()
    except ValueError:
        raise BackupError("Short read, backup truncated ? (bad padding)") from None


def _verified_chunks(
    source: BinaryIO, decryptor: CipherContext, mac_key: bytes, chunk_size: int
) -> Iterator[bytearray]:
    """Payload bytes, one chunk at a time, each after its running MAC verified.

    A whole chunk must be held until its MAC is checked; it is never copied."""
    mac = hmac.new(mac_key, digestmod=hashlib.sha256)
    block_size = chunk_size + MAC_SIZE

    def verify(block: bytearray) -> bytearray:
        expected = bytes(block[-MAC_SIZE:])
        del block[-MAC_SIZE:]
        mac.update(block)
        if not hmac.compare_digest(mac.digest(), expected):
            raise BackupError("Backup integrity check failed: HMAC mismatch")
        return block

    pending = bytearray()
    for piece in _decrypted_pieces(source, decryptor):
        rest = memoryview(piece)
        while rest:
            missing = block_size - len(pending)
            pending += rest[:missing]
            rest = rest[missing:]
            if len(pending) == block_size:
                yield verify(pending)
                pending = bytearray()
    if pending:
        if len(pending) <= MAC_SIZE:
            raise BackupError("Short read, backup truncated ? (incomplete chunk)")
        yield verify(pending)


def _read_statements(chunks: Iterator[bytearray]) -> Iterator[str]:
    """Split verified payload on NUL; leftover bytes at the end mean truncation."""
    unfinished: list[bytes] = []  # joined once the statement ends: no quadratic copying
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\0", start)) >= 0:
            unfinished.append(bytes(chunk[start:end]))
            statement = b"".join(unfinished)
            unfinished = []
            start = end + 1
            try:
                yield statement.decode("utf-8")
            except UnicodeDecodeError:
                raise BackupError("Invalid backup content: statement is not UTF-8") from None
        if start < len(chunk):
            unfinished.append(bytes(chunk[start:]))
        del chunk  # let the verified chunk go before the next one is read
    if unfinished:
        raise BackupError("Short read, backup truncated ?")
