"""`caucase --renew-early SERIAL...` and `--renew-early-all [--before DATE]`, real processes
against a real caucased (ours; the reference, which has no renewal windows, refuses)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from caucase.acme.renewal_info import CertID
from tests.e2e.helpers import caucase
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_caucased(
        [OUR_BIN / "caucased"], tmp_path / "server", ["--service-auto-approve-count", "3"]
    )
    yield running
    running.stop()


def issue(server: RunningServer, name: str) -> x509.Certificate:
    _, csr = make_key_and_csr(name)
    status, headers, _ = request(
        server, "PUT", "/cas/csr", csr, {"Content-Type": "application/pkcs10"}
    )
    assert status == 201
    status, _, crt = request(server, "GET", "/cas/crt/" + headers["Location"])
    assert status == 200
    return x509.load_pem_x509_certificate(crt)


def window(server: RunningServer, certificate: x509.Certificate) -> dict[str, object]:
    status, _, body = request(server, "GET", f"/cas/renewal-info/{CertID.of(certificate)}")
    assert status == 200
    document: dict[str, object] = json.loads(body)
    return document


def test_renew_early_moves_the_windows_of_given_serials(
    server: RunningServer, tmp_path: Path
) -> None:
    user = make_user(server, tmp_path / "user.pem")
    moved, kept = issue(server, "moved"), issue(server, "kept")
    unknown = kept.serial_number + 1

    result = caucase(
        server,
        tmp_path,
        *("--user-key", str(user), "--spread", "0.5"),
        *("--renew-early", f"{moved.serial_number:#x}", str(unknown)),
    )

    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"Moved the renewal window of serial {moved.serial_number} ")
    assert lines[1] == (
        f"Serial {unknown} ({unknown:#x}) is no valid certificate of this authority, skipping"
    )
    assert "explanationURL" in window(server, moved)
    assert "explanationURL" not in window(server, kept)
    suggested = window(server, moved)["suggestedWindow"]
    assert isinstance(suggested, dict)
    start = datetime.datetime.fromisoformat(str(suggested["start"]).replace("Z", "+00:00"))
    end = datetime.datetime.fromisoformat(str(suggested["end"]).replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert now - datetime.timedelta(minutes=5) <= start < end <= now + datetime.timedelta(hours=1)


def test_renew_early_all_before_a_date(server: RunningServer, tmp_path: Path) -> None:
    user = make_user(server, tmp_path / "user.pem")
    certificate = issue(server, "svc")
    tomorrow = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).date()

    old_only = caucase(
        server, tmp_path, "--user-key", str(user), "--renew-early-all", "--before", "2020-01-01"
    )
    assert old_only.returncode == 0, old_only
    assert old_only.stderr.startswith("Moved the renewal windows of 0 certificates to between ")
    assert "explanationURL" not in window(server, certificate)

    result = caucase(
        server,
        tmp_path,
        *("--user-key", str(user), "--renew-early-all", "--before", tomorrow.isoformat()),
    )
    assert result.returncode == 0, result
    assert result.stderr.startswith("Moved the renewal windows of 1 certificate to between ")
    assert "explanationURL" in window(server, certificate)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--renew-early", "12"], "--renew-early needs --user-key"),
        (["--renew-early-all", "--spread", "0"], "invalid number of hours '0'"),
        (["--renew-early-all", "--before", "next week"], "invalid date 'next week'"),
    ],
)
def test_usage_errors(
    server: RunningServer, tmp_path: Path, args: list[str], message: str
) -> None:
    result = caucase(server, tmp_path, *args)
    assert result.returncode in (1, 2)
    assert message in result.stderr, result.stderr


@pytest.mark.interop
def test_the_reference_server_does_not_move_windows(reference_bin: Path, tmp_path: Path) -> None:
    reference = start_caucased([reference_bin / "caucased"], tmp_path / "reference")
    try:
        user = make_user(reference, tmp_path / "user.pem")
        result = caucase(reference, tmp_path, "--user-key", str(user), "--renew-early", "1")
    finally:
        reference.stop()
    assert result.returncode == 1
    assert result.stderr == (
        "caucase: --renew-early: this server does not move renewal windows "
        "(caucase 0.9.17 does not)\n"
    )
