"""caucase-key-id: print the key ids of private keys and of the keys able to read backups.

A user matches the id of their own key against the ids a backup lists to know whether they can
restore it (cli.md 7).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from caucase import __version__, backup
from caucase.crypto import keys, pemfile
from caucase.exceptions import BackupError, PemFileError


def _bytes_literal(text: str) -> str:
    """The reference prints ids as Python 3 bytes literals (`b'...'`); scripts parse that."""
    return repr(text.encode("utf-8"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caucase-key-id",
        description="Print the identifier of private keys, and the identifiers of the keys "
        "that can decrypt caucased backup files.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--private-key",
        nargs="+",
        default=[],
        metavar="PRIVATE_KEY",
        help="PEM files (certificates may come first): each path is printed with the "
        "identifier of its first private key, written b'<40 hex digits>' as the reference "
        "does.",
    )
    parser.add_argument(
        "--backup",
        nargs="+",
        default=[],
        metavar="BACKUP",
        help="caucased backup files: each is printed, then the identifier of every key able "
        "to decrypt it, one per line.",
    )
    return parser


def _private_key_line(path: str) -> str:
    """`<path> b'<key id>'` for the first private key of the file (certificates may precede)."""
    for block in pemfile.read_blocks(path):
        if block.kind is pemfile.BlockKind.KEY and "PRIVATE" in block.label:
            try:
                key_id = keys.private_key_id(block.text)
            except (ValueError, TypeError) as error:
                raise PemFileError(path, f"{path}: unusable private key ({error})") from None
            return f"{path} {_bytes_literal(key_id)}"
    raise PemFileError(path, f"{path}: no private key found")


def _backup_key_ids(path: str) -> list[str]:
    with open(path, "rb") as backup_file:
        return backup.read_key_ids(backup_file)


def main(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Keys first, then backups, in command-line order; exit 1 if any file could not be read."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)
    status = 0
    for path in args.private_key:
        try:
            print(_private_key_line(path), file=out)
        except PemFileError as error:
            print(f"caucase-key-id: {error}", file=err)
            status = 1
    for path in args.backup:
        print(path, file=out)
        try:
            key_ids = _backup_key_ids(path)
        except OSError as error:
            print(f"caucase-key-id: {path}: {error.strerror}", file=err)
            status = 1
            continue
        except BackupError as error:
            print(f"caucase-key-id: {path}: {error}", file=err)
            status = 1
            continue
        for key_id in key_ids:
            print("  " + _bytes_literal(key_id), file=out)
    out.flush()
    return status
