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
    key_pem,
    make_key_and_csr,
    make_user,
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


def test_url_without_scheme_is_one_line(caucased: RunningServer, tmp_path: Path) -> None:
    result = _updater(tmp_path, caucased.netloc)

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"caucase-updater: --ca-url: {caucased.netloc!r} is not an http:// or https:// URL "
        f"(did you mean http://{caucased.netloc} ?)\n"
    )


def test_url_of_the_https_port_is_not_retried_forever(
    caucased: RunningServer, tmp_path: Path
) -> None:
    result = _updater(tmp_path, f"http://{caucased.host}:{caucased.https_port}")

    assert result.returncode == 1
    assert "network error" not in result.stdout
    assert result.stderr.count("\n") == 1
    assert f"port {caucased.https_port} speaks TLS" in result.stderr


def test_missing_crt_without_key_says_no_such_file(
    caucased: RunningServer, tmp_path: Path
) -> None:
    _, csr = make_key_and_csr("svc")
    (tmp_path / "svc.csr").write_bytes(csr)

    result = _updater(tmp_path, caucased.http_url, "--crt", "missing.pem", "--csr", "svc.csr")

    assert result.returncode == 1
    assert result.stderr == (
        "caucase-updater: missing.pem: no such file "
        "(it must hold the private key, or give --key)\n"
    )


def test_unwritable_crt_is_refused_before_the_csr_is_submitted(
    caucased: RunningServer, tmp_path: Path
) -> None:
    user = make_user(caucased, tmp_path / "user.pem")
    key, csr = make_key_and_csr("svc")
    (tmp_path / "svc.key").write_bytes(key_pem(key))
    (tmp_path / "svc.csr").write_bytes(csr)
    pending = _pending_csr_count(caucased, user)

    result = _updater(
        tmp_path, caucased.http_url,
        "--crt", "gone/svc.crt", "--key", "svc.key", "--csr", "svc.csr",
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr == (
        f"caucase-updater: gone/svc.crt: no such directory: {tmp_path / 'gone'}\n"
    )
    assert "Waiting for signature" not in result.stdout
    assert _pending_csr_count(caucased, user) == pending
