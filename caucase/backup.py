"""The encrypted backup format (ca-profile 6): streaming writer and reader.

INTERFACE STUB: bodies to be written.
"""

from __future__ import annotations

from typing import BinaryIO, Iterable, Iterator

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

MAGIC = b"caucase\0"
CHUNK_SIZE = 10 * 1024 * 1024


def write_backup(
    output: BinaryIO,
    statements: Iterable[str],
    recipients: Iterable[x509.Certificate],
) -> int:
    """Encrypt `statements` for every RSA recipient; return how many recipients were used.

    Non-RSA recipients are skipped. Raises BackupError when no recipient is usable (nothing
    useful written). Memory use does not grow with the dump size."""
    raise NotImplementedError


def read_key_ids(source: BinaryIO) -> list[str]:
    """Key ids of the header's key_list, in order; BackupError on a bad magic or header."""
    raise NotImplementedError


def read_backup(source: BinaryIO, private_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """Yield verified SQL statements; BackupError on wrong key, tampering or truncation."""
    raise NotImplementedError
