"""`caucase` says what is wrong: bad URLs, unusable or refused user keys, serial numbers in
the forms openssl prints, help texts with defaults and the reference's metavars.

Runs against our caucased and the reference one, as test_cli_caucase does.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from caucase.cli import caucase_options, rerequest, updater_options
from caucase.cli.caucase_options import build_parser
from caucase.cli.user_key import explain_refusal
from caucase.exceptions import CaucaseHTTPError
from tests.e2e.test_cli_caucase import (
    CAUCASE,
    assert_one_line_error,
    make_key_file,
    run,
    send_csr,
    signed_service,
)
from tests.support.servers import OUR_BIN, RunningServer, key_pem


@pytest.fixture(scope="module")
def user_key(caucased: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator: the first CAU CSR of this module's caucased is approved automatically."""
    directory = tmp_path_factory.mktemp("operator")
    user = make_key_file(directory, "diagnostics-operator")
    identifier = send_csr(caucased, directory, user.csr_path, "--mode", "user")
    result = run(caucased, directory, "--mode", "user", "--get-crt", identifier, user.key_path)
    assert result.returncode == 0, result
    return user.key_path


def _self_signed_user(path: Path) -> Path:
    """A key and a certificate no caucased issued, in one file."""
    key = make_key_file(path.parent, "intruder-key").key
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(key_pem(key) + certificate.public_bytes(serialization.Encoding.PEM))
    return path


# --ca-url


def test_url_without_scheme_is_refused_before_anything(
    caucased: RunningServer, tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(CAUCASE), "--ca-url", caucased.netloc],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert_one_line_error(result)
    assert result.stderr == (
        f"caucase: --ca-url: {caucased.netloc!r} is not an http:// or https:// URL "
        f"(did you mean http://{caucased.netloc} ?)\n"
    )
    assert os.listdir(tmp_path) == []


def test_url_of_the_https_port_is_refused(caucased: RunningServer, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(CAUCASE), "--ca-url", f"http://{caucased.host}:{caucased.https_port}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert_one_line_error(
        result,
        f"port {caucased.https_port} speaks TLS",
        f"caucased's HTTP port (usually {caucased.http_port})",
    )
    assert os.listdir(tmp_path) == []


# --user-key


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("missing", "no such file"),
        ("key", "holds no certificate: the file needs the private key and its certificate"),
        ("certificate", "holds no private key: the file needs the private key and its"),
        ("mismatch", "its certificate does not belong to its private key"),
        ("encrypted", "it must not be encrypted"),
    ],
)
def test_unusable_user_key_file_is_explained(
    caucased: RunningServer, tmp_path: Path, user_key: Path, content: str, message: str
) -> None:
    blocks = user_key.read_bytes()
    key_text, certificate_text = blocks.split(b"-----BEGIN CERTIFICATE-----")
    certificate_text = b"-----BEGIN CERTIFICATE-----" + certificate_text
    path = tmp_path / "user.pem"
    if content == "key":
        path.write_bytes(key_text)
    elif content == "certificate":
        path.write_bytes(certificate_text)
    elif content == "mismatch":
        path.write_bytes(key_pem(make_key_file(tmp_path, "other").key) + certificate_text)
    elif content == "encrypted":
        key = serialization.load_pem_private_key(key_text, None)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        path.write_bytes(encrypted + certificate_text)

    result = run(caucased, tmp_path, "--user-key", path, "--list-csr")

    assert_one_line_error(result, f"--user-key {path}: Failed to load user key: ", message)
    assert "PEM lib" not in result.stderr


def test_service_certificate_as_user_key_is_explained(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = signed_service(caucased, tmp_path, user_key, "not-a-user")

    result = run(caucased, tmp_path, "--user-key", service.key_path, "--list-csr")

    assert_one_line_error(result)
    assert result.stderr == (
        f"caucase: --list-csr: --user-key {service.key_path}: its certificate is a service "
        "(CAS) certificate, not a CAU user certificate\n"
    )


def test_foreign_user_certificate_is_explained(caucased: RunningServer, tmp_path: Path) -> None:
    intruder = _self_signed_user(tmp_path / "intruder.pem")

    result = run(caucased, tmp_path, "--mode", "user", "--user-key", intruder, "--list-csr")

    assert_one_line_error(result)
    assert result.stderr == (
        f"caucase: --list-csr: --user-key {intruder}: its certificate is not a CAU user "
        "certificate (no CA of cau.crt.pem issued it)\n"
    )


def test_revoked_user_certificate_is_explained(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    applicant = make_key_file(tmp_path, "soon-revoked")
    identifier = send_csr(caucased, tmp_path, applicant.csr_path, "--mode", "user")
    common = ["--mode", "user", "--user-key", user_key]
    assert run(caucased, tmp_path, *common, "--sign-csr", identifier).returncode == 0
    got = run(caucased, tmp_path, "--mode", "user", "--get-crt", identifier, applicant.key_path)
    assert got.returncode == 0, got
    revoked = run(caucased, tmp_path, *common, "--revoke-other-crt", applicant.key_path)
    assert revoked.returncode == 0, revoked
    assert run(caucased, tmp_path, "--update-user").returncode == 0

    result = run(caucased, tmp_path, "--user-key", applicant.key_path, "--list-csr")

    assert_one_line_error(result)
    assert result.stderr == (
        f"caucase: --list-csr: --user-key {applicant.key_path}: its certificate is revoked "
        "(listed in cau.crl.pem)\n"
    )


def test_expired_user_certificate_is_explained(tmp_path: Path, user_key: Path) -> None:
    certificate = x509.load_pem_x509_certificate(user_key.read_bytes())
    later = certificate.not_valid_after_utc + datetime.timedelta(seconds=1)
    refusal = CaucaseHTTPError(401, [], b"")

    error = explain_refusal(refusal, str(user_key), later, ("none", "none"), "none")

    assert str(error) == (
        f"--user-key {user_key}: its certificate expired on "
        f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )


def test_server_reason_is_kept_when_the_files_show_nothing(user_key: Path) -> None:
    certificate = x509.load_pem_x509_certificate(user_key.read_bytes())
    refusal = CaucaseHTTPError(401, [], b"Certificate verification error: because\nmore")

    error = explain_refusal(
        refusal, str(user_key), certificate.not_valid_before_utc, ("none", "none"), "none"
    )

    assert str(error) == (
        f"--user-key {user_key}: caucased refused it "
        "(HTTP 401: Certificate verification error: because)"
    )


# --revoke-serial


@pytest.mark.parametrize("serial", ["x", "-5", "0x", "12:3g"])
def test_usage_errors_exit_2(serial: str) -> None:
    result = subprocess.run(
        [str(CAUCASE), "--ca-url", "http://h", "--revoke-serial", serial],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert f"argument --revoke-serial: invalid serial number {serial!r}" in result.stderr


@pytest.mark.parametrize(
    ("text", "value"),
    [("1234", 1234), ("0x4d2", 1234), ("0X4D2", 1234), ("04:d2", 1234), ("00:ff:01", 0xFF01)],
)
def test_serials_are_decimal_0x_hex_or_openssl_colon_hex(text: str, value: int) -> None:
    args = build_parser().parse_args(["--ca-url", "http://h", "--revoke-serial", text])

    assert args.revoke_serial == [value]


@pytest.mark.parametrize("form", ["decimal", "0x", "colons"])
def test_revoke_serial(caucased: RunningServer, tmp_path: Path, user_key: Path, form: str) -> None:
    serial = 0x5EED000000 + os.getpid() * 4 + ["decimal", "0x", "colons"].index(form)
    text = {
        "decimal": str(serial),
        "0x": f"{serial:#x}",
        "colons": ":".join(f"{byte:02x}" for byte in serial.to_bytes(5, "big")),
    }[form]

    result = run(caucased, tmp_path, "--user-key", user_key, "--revoke-serial", text)

    assert (result.returncode, result.stdout) == (0, ""), result
    # Ours says that this CA never issued the serial; the reference cannot tell.
    warning = (
        f"caucase: warning: serial {serial} ({serial:#x}) is not in the inventory of this "
        "authority: a typo, or a certificate issued before it had one\n"
    )
    reference = caucased.args[0] != str(OUR_BIN / "caucased")
    assert result.stderr == f"Revoked serial {serial} ({serial:#x})\n" + (
        "" if reference else warning
    )
    crl = x509.load_pem_x509_crl((tmp_path / "cas.crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_authenticated_action_without_user_key_fails_before_anything(
    caucased: RunningServer, tmp_path: Path
) -> None:
    result = run(caucased, tmp_path, "--send-csr", "absent.csr", "--reject-csr", "1")

    assert_one_line_error(result)
    assert result.stderr == (
        "caucase: --reject-csr needs --user-key: a file holding a CAU user certificate "
        "and its private key\n"
    )
    assert os.listdir(tmp_path) == []


# Help texts


def _help_lines_without_default(parser: argparse.ArgumentParser) -> list[str]:
    missing = []
    for action in parser._actions:
        if action.default in (None, False, [], argparse.SUPPRESS) or action.help is None:
            continue
        if "Default: %(default)s" not in action.help:
            missing.append(action.option_strings[0])
    return missing


def test_every_default_is_shown_in_help() -> None:
    parsers = [build_parser(), updater_options.build_parser(), rerequest._parser()]

    assert [_help_lines_without_default(parser) for parser in parsers] == [[], [], []]
    assert "Default: 31 days" in build_parser().format_help()
    assert "else 2048)" in " ".join(rerequest._parser().format_help().split())
    assert "shell command" in caucase_options.build_parser().format_help().lower()


def _usage(command: Path) -> str:
    text = subprocess.run([str(command), "-h"], capture_output=True, text=True, check=True).stdout
    return " ".join(text.split("\n\n")[0].split())


# Our additions and fixes to the reference's usage lines.
KEY_TYPE = "[--key-type {rsa,ec-p256,ec-p384,ed25519}] [--key-len BITLENGTH]"
RENEW_EARLY = "[--renew-early SERIAL [SERIAL ...]] [--renew-early-all]"
ACME_EAB = (
    "[--new-acme-eab PATTERN [PATTERN ...]] [--show-acme-eab] [--revoke-acme-eab KID [KID ...]]"
)
LIST_CRT = (
    "[--list-crt] [--expiring-within DAYS] [--subject-match TEXT] [--revoked] [--valid] [--json]"
)
USAGE_DIFFERENCES = {
    "caucase": [
        ("[--key-len BITLENGTH]", KEY_TYPE),
        ("{service,user}]", "{service,user}] [--before DATE] [--spread HOURS]"),
        (
            "[--revoke-serial SERIAL [SERIAL ...]]",
            f"[--revoke-serial SERIAL [SERIAL ...]] {RENEW_EARLY} {ACME_EAB} {LIST_CRT}",
        ),
    ],
    "caucase-updater": [
        ("--crl CRT_PATH", "--crl CRL_PATH [--status STATUS_PATH] [--print-status STATUS_PATH]"),
        ("[--key-len BITLENGTH]", KEY_TYPE),
    ],
    "caucase-rerequest": [("[--key-len BITLENGTH]", KEY_TYPE + " [--force]")],
    "caucase-probe": [("[--version] ca_url", "[--version] [--health] ca_url")],
}


@pytest.mark.interop
@pytest.mark.parametrize(
    "command",
    ["caucase", "caucase-updater", "caucase-probe", "caucase-rerequest", "caucase-key-id"],
)
def test_usage_has_the_reference_options_and_metavars(command: str, reference_bin: Path) -> None:
    expected = _usage(reference_bin / command)
    for theirs, ours in USAGE_DIFFERENCES.get(command, []):
        expected = expected.replace(theirs, ours)

    assert _usage(OUR_BIN / command) == expected
