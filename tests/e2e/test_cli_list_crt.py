"""`caucase --list-crt` and `--revoke-serial` against real caucased processes: ours, which
keeps an inventory, and the reference, which has none (a one-line failure, and
revocations by serial exactly as before)."""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from caucase.cli.caucase_options import build_parser
from caucase.cli.inventory import format_line
from caucase.exceptions import CaucaseError
from tests.e2e.helpers import CAUCASE, caucase, revoke_serial, signed_credential, submit_csr
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, module_caucased_db: str | None
) -> Iterator[RunningServer]:
    """Ours, on SQLite and on PostgreSQL."""
    running = start_caucased(
        [OUR_BIN / "caucased"],
        tmp_path_factory.mktemp("list-crt") / "server",
        ["--service-auto-approve-count", "1"],
        db=module_caucased_db,
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def user(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_user(server, tmp_path_factory.mktemp("user") / "user.pem", "admin")


@pytest.fixture(scope="module")
def issued(
    server: RunningServer, user: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, x509.Certificate]:
    """An auto-approved certificate, two signed by the user, one of them revoked."""
    _, csr = make_key_and_csr("auto.example")
    status, _, crt = request(server, "GET", "/cas/crt/" + submit_csr(server, "cas", csr))
    assert status == 200
    workdir = tmp_path_factory.mktemp("issued")
    _, signed = signed_credential(server, "cas", user, workdir / "a.pem", "web.example")
    _, revoked = signed_credential(server, "cas", user, workdir / "b.pem", "old.example")
    assert revoke_serial(server, user, "cas", revoked.serial_number) == 204
    return {"auto": x509.load_pem_x509_certificate(crt), "signed": signed, "revoked": revoked}


@pytest.mark.usefixtures("issued")  # past the auto-approved one
def test_revoke_serial_of_an_issued_certificate_confirms_it(
    server: RunningServer, user: Path, tmp_path: Path
) -> None:
    _, certificate = signed_credential(server, "cas", user, tmp_path / "c.pem", "gone.example")
    serial = certificate.serial_number
    result = caucase(server, tmp_path, "--user-key", str(user), "--revoke-serial", hex(serial))
    assert result.returncode == 0, result
    assert result.stderr.splitlines() == [f"Revoked serial {serial} ({serial:#x})"]
    assert result.stdout == ""


def test_revoke_serial_never_issued_warns_in_one_line(
    server: RunningServer, user: Path, tmp_path: Path
) -> None:
    """Revoked anyway (a certificate issued before the inventory existed is not listed),
    but the operator is told that it may be a typo."""
    serial = 0x1234567
    result = caucase(server, tmp_path, "--user-key", str(user), "--revoke-serial", str(serial))
    assert result.returncode == 0, result
    assert result.stderr.splitlines() == [
        f"Revoked serial {serial} ({serial:#x})",
        f"caucase: warning: serial {serial} ({serial:#x}) is not in the inventory of this "
        "authority: a typo, or a certificate issued before it had one",
    ]
    status, _, crl = request(server, "GET", "/cas/crl")
    assert status == 200
    assert serial in {entry.serial_number for entry in x509.load_pem_x509_crl(crl)}


def _listed(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert result.returncode == 0, result
    return [line.split(" | ") for line in result.stdout.splitlines()]


def test_list_crt_prints_one_line_per_certificate(
    server: RunningServer, user: Path, issued: dict[str, x509.Certificate], tmp_path: Path
) -> None:
    rows = _listed(caucase(server, tmp_path, "--user-key", str(user), "--list-crt"))
    by_serial = {int(row[0], 16): row for row in rows}
    assert len(by_serial) == len(rows) >= 3 and all(len(row) == 8 for row in rows)
    auto, signed = (
        by_serial[issued["auto"].serial_number],
        by_serial[issued["signed"].serial_number],
    )
    revoked = by_serial[issued["revoked"].serial_number]
    assert auto[3:] == ["valid", "auto", "RSA-2048", "CN=auto.example", "-"]
    assert signed[3:] == ["valid", "user", "RSA-2048", "CN=web.example", "-"]
    assert revoked[3:5] == ["revoked", "user"]
    assert auto[2] == issued["auto"].not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("options", "names"),
    [
        (["--revoked"], {"revoked"}),
        (["--valid"], {"auto", "signed"}),
        (["--subject-match", "WEB.EX"], {"signed"}),
        (["--expiring-within", "1"], set()),
        (
            ["--expiring-within", "100000", "--valid", "--subject-match", "example"],
            {"auto", "signed"},
        ),
    ],
)
def test_list_crt_filters(
    server: RunningServer,
    user: Path,
    issued: dict[str, x509.Certificate],
    tmp_path: Path,
    options: list[str],
    names: set[str],
) -> None:
    result = caucase(server, tmp_path, "--user-key", str(user), "--list-crt", "--json", *options)
    assert result.returncode == 0, result
    serials = {int(json.loads(line)["serial"]) for line in result.stdout.splitlines()}
    ours = {certificate.serial_number: name for name, certificate in issued.items()}
    assert {ours[serial] for serial in serials if serial in ours} == names


def test_list_crt_of_the_users(server: RunningServer, user: Path, tmp_path: Path) -> None:
    rows = _listed(
        caucase(server, tmp_path, "--user-key", str(user), "--mode", "user", "--list-crt")
    )
    assert [row[3:7] for row in rows] == [["valid", "auto", "RSA-2048", "CN=admin"]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--list-crt"], "caucase: --list-crt needs --user-key"),
        (
            ["--user-key", "u.pem", "--list-crt", "--revoked", "--valid"],
            "--revoked and --valid cannot",
        ),
        (["--user-key", "u.pem", "--json"], "--json only applies to --list-crt"),
        (
            ["--user-key", "u.pem", "--list-crt", "--expiring-within", "-3"],
            "invalid number of days '-3'",
        ),
    ],
)
def test_bad_list_crt_options_fail_in_one_line(
    server: RunningServer, tmp_path: Path, options: list[str], message: str
) -> None:
    result = caucase(server, tmp_path, *options)
    assert result.returncode != 0 and result.stdout == ""
    assert message in result.stderr.splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.interop
def test_against_the_reference(reference_bin: Path, tmp_path: Path) -> None:
    """No inventory there: --list-crt fails with one line; --revoke-serial revokes as the
    reference client does, without a warning it could not back."""
    reference = start_caucased([reference_bin / "caucased"], tmp_path / "reference")
    try:
        user = make_user(reference, tmp_path / "user.pem", "admin")
        listed = caucase(reference, tmp_path, "--user-key", str(user), "--list-crt")
        assert listed.returncode == 1 and listed.stdout == ""
        assert listed.stderr.splitlines() == [
            "caucase: --list-crt: this server keeps no certificate inventory (caucase 0.9.17 "
            "does not): --list-crt needs caucased 1.0.0 or later"
        ]
        revoked = caucase(reference, tmp_path, "--user-key", str(user), "--revoke-serial", "4242")
        assert revoked.returncode == 0, revoked
        assert revoked.stderr.splitlines() == ["Revoked serial 4242 (0x1092)"]
        status, _, crl = request(reference, "GET", "/cas/crl")
        assert status == 200 and 4242 in {e.serial_number for e in x509.load_pem_x509_crl(crl)}
    finally:
        reference.stop()


@pytest.mark.interop
def test_a_database_the_reference_wrote_is_listed(reference_bin: Path, tmp_path: Path) -> None:
    """The reference signs and revokes; ours, started on its files, lists what its crt
    table still holds, approved "unknown", and the revocation the reference recorded."""
    workdir = tmp_path / "server"
    reference = start_caucased([reference_bin / "caucased"], workdir)
    try:
        admin = make_user(reference, tmp_path / "admin.pem", "admin")
        _, kept = signed_credential(reference, "cas", admin, tmp_path / "a.pem", "kept.example")
        _, gone = signed_credential(reference, "cas", admin, tmp_path / "b.pem", "gone.example")
        assert revoke_serial(reference, admin, "cas", gone.serial_number) == 204
    finally:
        reference.stop()
    ours = start_caucased([OUR_BIN / "caucased"], workdir, http_port=reference.http_port)
    try:
        rows = _listed(caucase(ours, tmp_path, "--user-key", str(admin), "--list-crt"))
        assert sorted((int(row[0], 16), row[3], row[4], row[6]) for row in rows) == sorted(
            [
                (kept.serial_number, "valid", "unknown", "CN=kept.example"),
                (gone.serial_number, "revoked", "unknown", "CN=gone.example"),
            ]
        )
        users = _listed(
            caucase(ours, tmp_path, "--user-key", str(admin), "--mode", "user", "--list-crt")
        )
        assert [row[3:7] for row in users] == [["valid", "unknown", "RSA-2048", "CN=admin"]]
    finally:
        ours.stop()


@pytest.mark.parametrize(
    ("prefix", "list_csr", "list_crt"),
    [("--l", True, False), ("--list", True, False), ("--list-c", True, False),
     ("--list-cs", True, False), ("--list-cr", False, True)],
)  # fmt: skip
def test_prefixes_the_reference_accepted_keep_their_meaning(
    prefix: str, list_csr: bool, list_crt: bool
) -> None:
    args = build_parser().parse_args(["--ca-url", "http://h", prefix])
    assert (args.list_csr, args.list_crt) == (list_csr, list_crt)


def test_the_shortest_prefix_of_version_still_prints_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(CAUCASE), "--v"], capture_output=True, text=True, check=False, timeout=60
    )
    assert (result.returncode, result.stdout.strip()) == (0, "1.0.0")


def test_a_listing_line_cannot_be_faked_by_a_subject() -> None:
    entry = {
        "serial": "255", "not_before": "2026-01-01T00:00:00Z", "not_after": "2026-04-01T00:00:00Z",
        "subject": "CN=a\n0x1 | 2026 | fake", "sans": ["DNS:a"], "key_type": "RSA-2048",
        "approval": "user", "revoked": False, "revoked_at": None,
    }  # fmt: skip
    now = datetime.datetime(2026, 2, 1, tzinfo=datetime.timezone.utc)
    assert format_line(entry, now) == (
        "0xff | 2026-01-01T00:00:00Z | 2026-04-01T00:00:00Z | valid | user | RSA-2048 | "
        "CN=a\\n0x1 | 2026 | fake | DNS:a"
    )
    for serial in ("²", "-1", "", None):
        with pytest.raises(CaucaseError, match="invalid certificate list"):
            format_line({**entry, "serial": serial}, now)
