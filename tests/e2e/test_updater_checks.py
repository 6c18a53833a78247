"""caucase-updater says what is wrong, once, and early: hook outcomes in words, bad URLs,
files it could not write, missing files.

Every case ends the updater by itself (status 1 or 3), so each test runs the real console
script to its end against the module's caucased (ours, then the reference's).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    request,
)

UPDATER = OUR_BIN / "caucase-updater"
STORES = ["--cas-ca", "cas.crt.pem", "--ca", "cas.crt.pem", "--crl", "cas.crl.pem"]


def _updater(cwd: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UPDATER), "--ca-url", url, *STORES, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _pending_csr_count(server: RunningServer, user: Path) -> int:
    status, _, body = request(server, "GET", "/cas/csr", https=True, cert_file=user)
    assert status == 200
    return body.count(b'"id"')


@pytest.mark.parametrize(
    ("hook", "line"),
    [
        ("exit 7", "Renewal hook exited with status 7"),
        ("no-such-command-for-caucase", "Renewal hook exited with status 127 (command not found)"),
        ("kill -9 $$", "Renewal hook was killed by signal 9 (SIGKILL)"),
    ],
)
def test_failing_hook_is_reported_by_exit_code_or_signal(
    caucased: RunningServer, tmp_path: Path, hook: str, line: str
) -> None:
    result = _updater(tmp_path, caucased.http_url, "--on-renew", hook)

    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == line
