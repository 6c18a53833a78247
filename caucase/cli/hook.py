"""The `--on-renew` hook of caucase and caucase-updater (cli.md 2.10).

The value is a shell command line, run by `/bin/sh -c` with the caller's stdout and stderr.
Its outcome is told as an exit code or a signal, never as a raw wait status.
"""

from __future__ import annotations

import signal
import subprocess

# What sh's own exit codes mean (POSIX, 2.8.2 "Exit Status for Commands").
_SHELL_CODES = {126: "command not executable", 127: "command not found"}


def run_hook(command: str) -> int:
    """Run `command` through the shell; its return code (negative: killed by that signal)."""
    return subprocess.run(command, shell=True, check=False).returncode


def describe_outcome(returncode: int) -> str:
    """A failed hook's outcome in words: "exited with status 7", "was killed by signal 9
    (SIGKILL)", "exited with status 127 (command not found)"."""
    if returncode < 0:
        try:
            name = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            name = ""
        return f"was killed by signal {-returncode}{name}"
    meaning = _SHELL_CODES.get(returncode)
    return f"exited with status {returncode}" + (f" ({meaning})" if meaning else "")
