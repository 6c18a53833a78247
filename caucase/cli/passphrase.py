"""Where caucased-manage's passphrases come from (cli 9.4, 9.6): the first line of
--passphrase-file, else the terminal (no echo), else one line of standard input, so that
cron jobs and pipes work too; nothing to read is a one-line error, never a traceback."""

from __future__ import annotations

import getpass
import os
import sys

from caucase.exceptions import CaucaseError


class PassphraseError(CaucaseError):
    """No passphrase could be had, or the given one does not fit."""


def _has_terminal() -> bool:
    """Whether a passphrase can be asked without echo (getpass reads /dev/tty)."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _ask(prompt: str) -> str:
    """One answer, from the terminal, else from standard input (cron, pipes, CI)."""
    if _has_terminal():
        try:
            return getpass.getpass(prompt)
        except EOFError:
            raise PassphraseError("no passphrase given") from None
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise PassphraseError(
            "a passphrase is needed, but there is no terminal and standard input is "
            "empty: give it with --passphrase-file"
        )
    return line.rstrip("\r\n")


class Passphrases:
    """Where passphrases come from: --passphrase-file, or asked as cli 9.4 and 9.6 say."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.given: bytes | None = None
        if path is not None:
            try:
                with open(path, "rb") as handle:
                    self.given = handle.readline().rstrip(b"\r\n")
            except OSError as error:
                raise PassphraseError(f"--passphrase-file: {error}") from None

    def for_key(self, name: str) -> bytes | None:
        """A passphrase to try on the key at `name`; None to skip that key."""
        if self.path is not None:
            raise PassphraseError(
                f"The passphrase of {self.path!r} does not decrypt the key at {name}"
            )
        answer = _ask(f"Passphrase for key at {name} (empty to skip file): ")
        return answer.encode("utf-8") if answer else None

    def for_export(self) -> bytes:
        """The passphrase encrypting exported keys, asked twice until both agree."""
        if self.given is not None:
            passphrase = self.given
        else:
            while True:
                first = _ask("CA export passphrase: ")
                if first == _ask("             (again): "):
                    break
                print("Error: Input does not match, retrying")
            passphrase = first.encode("utf-8")
        if not passphrase:
            raise PassphraseError("Empty passphrase, nothing exported")
        return passphrase
