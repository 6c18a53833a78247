"""The operator story through real `caucase` processes, against a real caucased.

Every test runs against the reference caucased (interop) and against ours.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from caucase import __version__
from caucase.cli.caucase import build_parser
from tests.support.servers import OUR_BIN, RunningServer, key_pem

CAUCASE = OUR_BIN / "caucase"


def run(server: RunningServer, cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """One `caucase` process in `cwd` (where its default stores live)."""
    return subprocess.run(
        [str(CAUCASE), "--ca-url", server.http_url, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr


@dataclass
class KeyFile:
    key: rsa.RSAPrivateKey
    key_path: Path
    csr_path: Path


def make_key_file(
    directory: Path, name: str, *attributes: tuple[x509.ObjectIdentifier, str]
) -> KeyFile:
    """A key file and a CSR file for it (subject CN=<name> unless attributes given)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [x509.NameAttribute(oid, value) for oid, value in attributes]
        or [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    key_path = directory / f"{name}.key.pem"
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    csr_path = directory / f"{name}.csr.pem"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return KeyFile(key, key_path, csr_path)


def send_csr(server: RunningServer, cwd: Path, csr_path: Path, *extra: str) -> str:
    result = run(server, cwd, *extra, "--send-csr", csr_path)
    assert result.returncode == 0, result
    identifier, printed_path = result.stdout.split()
    assert printed_path == str(csr_path)
    return identifier


def certificates_in(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


@pytest.fixture(scope="module")
def user_key(caucased: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator: the first CAU CSR is approved automatically."""
    directory = tmp_path_factory.mktemp("operator")
    user = make_key_file(directory, "operator")
    identifier = send_csr(caucased, directory, user.csr_path, "--mode", "user")

    result = run(caucased, directory, "--mode", "user", "--get-crt", identifier, user.key_path)

    assert result.returncode == 0, result
    assert result.stdout == f"{identifier} was (originally) automatically approved\n"
    return user.key_path


def signed_service(server: RunningServer, cwd: Path, user_key: Path, name: str) -> KeyFile:
    """A service key file holding key + certificate, signed by the operator."""
    service = make_key_file(cwd, name)
    identifier = send_csr(server, cwd, service.csr_path)
    assert run(server, cwd, "--user-key", user_key, "--sign-csr", identifier).returncode == 0
    assert run(server, cwd, "--get-crt", identifier, service.key_path).returncode == 0
    return service


def openssl_verify(cwd: Path, crt_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", "cas.crt.pem", *extra, str(crt_path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_version_prints_the_reference_version() -> None:
    result = subprocess.run([str(CAUCASE), "--version"], capture_output=True, text=True)

    assert (result.returncode, result.stdout) == (0, __version__ + "\n")


def test_option_prefixes_append_and_last_wins() -> None:
    args = build_parser().parse_args(
        ["--ca-u", "http://h", "--send-csr", "a", "--send-csr", "b", "c", "--get-crt", "1",
         "p", "--get-crt", "2", "q", "--thr", "1e1", "--list"]
    )  # fmt: skip

    assert args.ca_url == "http://h"
    assert args.send_csr == ["b", "c"]
    assert args.get_crt == [["1", "p"], ["2", "q"]]
    assert (args.threshold, args.list_csr, args.mode) == (10.0, True, "service")


def test_usage_errors_exit_2() -> None:
    result = subprocess.run(
        [str(CAUCASE), "--ca-url", "http://h", "--key-len", "x"],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert "invalid int value: 'x'" in result.stderr


def test_bootstrapped_user_file_holds_key_and_certificate(user_key: Path) -> None:
    blocks = user_key.read_bytes()

    assert blocks.count(b"PRIVATE KEY-----\n") == 2
    assert len(certificates_in(user_key)) == 1
    assert stat.S_IMODE(user_key.stat().st_mode) == 0o600


def test_no_action_bootstraps_ca_and_crl_stores(caucased: RunningServer, tmp_path: Path) -> None:
    result = run(caucased, tmp_path)

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert len(certificates_in(tmp_path / "cas.crt.pem")) == 1
    assert b"BEGIN X509 CRL" in (tmp_path / "cas.crl.pem").read_bytes()
    assert not (tmp_path / "cau.crt.pem").exists()


def test_same_csr_sent_twice_gets_the_same_id(caucased: RunningServer, tmp_path: Path) -> None:
    service = make_key_file(tmp_path, "twice")

    assert send_csr(caucased, tmp_path, service.csr_path) == send_csr(
        caucased, tmp_path, service.csr_path
    )


def test_list_csr_shows_pending_requests(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = make_key_file(
        tmp_path, "svc3", (NameOID.COMMON_NAME, "svc3"), (NameOID.ORGANIZATION_NAME, "Test Org")
    )
    identifier = send_csr(caucased, tmp_path, service.csr_path)

    result = run(caucased, tmp_path, "--user-key", user_key, "--list-csr")

    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == "-- pending service CSRs --"
    assert (
        lines[1] == "              csr_id | subject preview (fetch csr and check full content !)"
    )
    assert f"{identifier:>20} | O=Test Org,CN=svc3" in lines[2:-1]
    assert lines[-1] == "-- end of pending service CSRs --"


def test_user_mode_lists_pending_user_csrs_and_get_csr_appends(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    applicant = make_key_file(tmp_path, "second-operator")
    identifier = send_csr(caucased, tmp_path, applicant.csr_path, "--mode", "user")
    copy = tmp_path / "copy.csr.pem"
    copy.write_bytes(b"existing\n")

    listed = run(caucased, tmp_path, "--mode", "user", "--user-key", user_key, "--list-csr")
    fetched = run(caucased, tmp_path, "--mode", "user", "--get-csr", identifier, copy)

    assert listed.returncode == 0, listed
    lines = listed.stdout.splitlines()
    assert (lines[0], lines[-1]) == ("-- pending user CSRs --", "-- end of pending user CSRs --")
    assert f"{identifier:>20} | CN=second-operator" in lines
    assert fetched.returncode == 0, fetched
    assert copy.read_bytes() == b"existing\n" + applicant.csr_path.read_bytes()


def test_pending_then_signed_certificate(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = make_key_file(tmp_path, "web")
    identifier = send_csr(caucased, tmp_path, service.csr_path)

    pending = run(caucased, tmp_path, "--get-crt", identifier, service.key_path)
    signed = run(caucased, tmp_path, "--user-key", user_key, "--sign-csr", identifier)
    fetched = run(caucased, tmp_path, "--get-crt", identifier, service.key_path)

    assert (pending.returncode, pending.stdout) == (2, f"{identifier} CSR still pending\n")
    assert (signed.returncode, signed.stdout) == (0, "")
    assert signed.stderr == f"Signed CSR {identifier}\n"
    assert (fetched.returncode, fetched.stdout) == (
        0,
        f"{identifier} was (originally) manually approved\n",
    )
    assert len(certificates_in(service.key_path)) == 1
    assert stat.S_IMODE(service.key_path.stat().st_mode) == 0o600
    assert openssl_verify(tmp_path, service.key_path).returncode == 0


def test_sign_csr_with_takes_the_template_subject(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = make_key_file(tmp_path, "asked")
    template = make_key_file(tmp_path, "imposed")
    identifier = send_csr(caucased, tmp_path, service.csr_path)

    signed = run(
        caucased, tmp_path, "--user-key", user_key, "--sign-csr-with", identifier,
        template.csr_path,
    )  # fmt: skip
    fetched = run(caucased, tmp_path, "--get-crt", identifier, service.key_path)

    assert (signed.returncode, signed.stdout) == (0, "")
    assert signed.stderr == (
        f"Signed CSR {identifier} with the subject and extensions of {template.csr_path}\n"
    )
    assert fetched.returncode == 0, fetched
    (certificate,) = certificates_in(service.key_path)
    assert certificate.subject.rfc4514_string() == "CN=imposed"
    assert certificate.public_key() == service.key.public_key()


def test_rejected_csr_is_reported_as_not_found(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = make_key_file(tmp_path, "refused")
    identifier = send_csr(caucased, tmp_path, service.csr_path)

    rejected = run(caucased, tmp_path, "--user-key", user_key, "--reject-csr", identifier)
    fetched = run(caucased, tmp_path, "--get-crt", identifier, service.key_path)

    assert (rejected.returncode, rejected.stdout) == (0, "")
    assert rejected.stderr == f"Rejected CSR {identifier}\n"
    assert (fetched.returncode, fetched.stdout) == (
        1,
        f"{identifier} not found - maybe CSR was rejected ?\n",
    )
    assert service.key_path.read_bytes() == key_pem(service.key)


def test_renew_combined_file_respects_threshold_and_runs_hook(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = signed_service(caucased, tmp_path, user_key, "renewed")
    (old,) = certificates_in(service.key_path)

    early = run(caucased, tmp_path, "--renew-crt", service.key_path, "")
    renewed = run(
        caucased, tmp_path, "--renew-crt", service.key_path, "", "--threshold", "100",
        "--on-renew", "echo hook ran; exit 3",
    )  # fmt: skip

    assert (early.returncode, early.stdout) == (
        0,
        f"{service.key_path} did not reach renew threshold, not renewing\n",
    )
    assert (renewed.returncode, renewed.stdout) == (3, "hook ran\n")
    content = service.key_path.read_bytes()
    assert content.index(b"RSA PRIVATE KEY") < content.index(b"CERTIFICATE")
    (new,) = certificates_in(service.key_path)
    assert renewed.stderr == (
        f"Renewed {service.key_path}: valid until "
        f"{new.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC\n"
        "caucase: --on-renew hook exited with status 3\n"
    )
    assert new.subject == old.subject and new.serial_number != old.serial_number
    assert new.public_key() != service.key.public_key()
    assert stat.S_IMODE(service.key_path.stat().st_mode) == 0o600
    assert openssl_verify(tmp_path, service.key_path).returncode == 0


def test_renew_separate_files(caucased: RunningServer, tmp_path: Path, user_key: Path) -> None:
    service = signed_service(caucased, tmp_path, user_key, "split")
    blocks = service.key_path.read_bytes()
    crt_path = tmp_path / "split.crt.pem"
    crt_path.write_bytes(blocks[blocks.index(b"-----BEGIN CERTIFICATE") :])
    service.key_path.write_bytes(key_pem(service.key))

    renewed = run(
        caucased, tmp_path, "--renew-crt", crt_path, service.key_path, "--threshold", "100"
    )

    assert renewed.returncode == 0, renewed
    assert b"CERTIFICATE" not in service.key_path.read_bytes()
    assert b"PRIVATE KEY" not in crt_path.read_bytes()
    (new,) = certificates_in(crt_path)
    new_key = serialization.load_pem_private_key(service.key_path.read_bytes(), None)
    assert new.public_key() == new_key.public_key()


def test_renew_with_mismatched_key_is_skipped_with_error(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = signed_service(caucased, tmp_path, user_key, "mismatch")
    other = make_key_file(tmp_path, "other")
    crt_path = tmp_path / "mismatch.crt.pem"
    crt_path.write_bytes(
        service.key_path.read_bytes().split(b"-----END RSA PRIVATE KEY-----\n")[1]
    )

    result = run(caucased, tmp_path, "--renew-crt", crt_path, other.key_path, "--threshold", "100")

    assert result.returncode == 1
    expected = sorted([str(crt_path), str(other.key_path)])
    assert result.stderr == (
        f"Could not find (exactly) one matching key pair in {expected!r}, skipping\n"
    )


def test_revoked_certificate_appears_in_crl(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = signed_service(caucased, tmp_path, user_key, "revoked")
    (certificate,) = certificates_in(service.key_path)

    revoked = run(caucased, tmp_path, "--revoke-crt", service.key_path, "")
    again = run(caucased, tmp_path, "--revoke-crt", service.key_path, "")

    assert (revoked.returncode, revoked.stdout) == (0, "")
    assert revoked.stderr == (
        f"Revoked {service.key_path} (serial {certificate.serial_number:#x})\n"
    )
    crl_text = subprocess.run(
        ["openssl", "crl", "-in", "cas.crl.pem", "-noout", "-text"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{certificate.serial_number:X}" in crl_text.replace(" ", "")
    verify = openssl_verify(tmp_path, service.key_path, "-crl_check", "-CRLfile", "cas.crl.pem")
    assert verify.returncode != 0 and "revoked" in verify.stdout + verify.stderr
    assert_one_line_error(again, "--revoke-crt", "400")


def test_revoke_other_crt_skips_files_without_one_certificate(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = signed_service(caucased, tmp_path, user_key, "other-revoked")
    (certificate,) = certificates_in(service.key_path)
    no_certificate = make_key_file(tmp_path, "keyonly").key_path

    result = run(
        caucased, tmp_path, "--user-key", user_key, "--revoke-other-crt", no_certificate,
        service.key_path,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr == (
        f"Could not load a single certificate in {no_certificate}, skipping\n"
        f"Revoked {service.key_path} (serial {certificate.serial_number:#x})\n"
    )
    crl = x509.load_pem_x509_crl((tmp_path / "cas.crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None


def test_store_directories_hold_one_file_per_authority(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    result = run(
        caucased, tmp_path, "--ca-crt", "casdir", "--crl", "crldir", "--update-user",
        "--user-ca-crt", "caudir", "--user-crl", "cauc.pem",
    )  # fmt: skip

    assert result.returncode == 0, result
    (ca_file,) = os.listdir(tmp_path / "casdir")
    (ca,) = certificates_in(tmp_path / "casdir" / ca_file)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ca_file == ski.hex() + ".ca.pem"
    assert os.listdir(tmp_path / "crldir") == [ski.hex() + ".crl.pem"]
    assert len(os.listdir(tmp_path / "caudir")) == 1
    assert (tmp_path / "cauc.pem").is_file()


def test_hook_runs_only_when_something_changed(caucased: RunningServer, tmp_path: Path) -> None:
    first = run(caucased, tmp_path, "--on-renew", "echo changed")
    second = run(caucased, tmp_path, "--on-renew", "echo changed; exit 3")

    assert (first.returncode, first.stdout) == (0, "changed\n")
    assert (second.returncode, second.stdout) == (0, "")


def test_same_id_signed_and_rejected_is_refused(caucased: RunningServer, tmp_path: Path) -> None:
    result = run(caucased, tmp_path, "--sign-csr", "7", "--reject-csr", "7")

    assert result.returncode == 1
    assert result.stderr == (
        "A given CSR_ID cannot be in more than one of --sign-csr, --sign-csr-with "
        "and --reject-csr\n"
    )
    assert os.listdir(tmp_path) == []


def test_get_crt_into_a_file_without_key_is_skipped(
    caucased: RunningServer, tmp_path: Path, user_key: Path
) -> None:
    service = signed_service(caucased, tmp_path, user_key, "nokey")
    identifier = send_csr(caucased, tmp_path, service.csr_path)
    certificate_only = tmp_path / "only.crt.pem"
    certificate_only.write_bytes(b"not a key\n")

    result = run(caucased, tmp_path, "--get-crt", identifier, certificate_only)

    assert result.returncode == 1
    assert result.stderr == (
        f"Expected to find exactly one privatekey key in {certificate_only}, skipping\n"
    )
    assert certificate_only.read_bytes() == b"not a key\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--send-csr", "missing.csr.pem"], "missing.csr.pem"),
        (["--get-crt", "abc", "x.pem"], "'abc'"),
        (["--user-key", "missing.key.pem"], "missing.key.pem"),
        (["--revoke-crt", "missing.crt.pem", ""], "missing.crt.pem"),
    ],
)
def test_bad_input_is_one_clear_line(
    caucased: RunningServer, tmp_path: Path, args: list[str], needle: str
) -> None:
    assert_one_line_error(run(caucased, tmp_path, *args), needle)


def test_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(CAUCASE), "--ca-url", "http://127.0.0.1:9"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert_one_line_error(result, "127.0.0.1:9")


@pytest.mark.interop
def test_same_stores_and_listing_as_the_reference_client(
    caucased: RunningServer, tmp_path: Path, user_key: Path, reference_bin: Path
) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    args = ["--ca-url", caucased.http_url, "--user-key", str(user_key), "--list-csr"]
    args += ["--update-user", "--ca-crt", "casdir", "--user-crl", "cau.crl"]

    mine = subprocess.run([str(CAUCASE), *args], cwd=ours, capture_output=True, text=True)
    reference = subprocess.run(
        [str(reference_bin / "caucase"), *args], cwd=theirs, capture_output=True, text=True
    )

    # The preview column is plain text where the reference prints a repr.
    plain = re.sub(r"'<Name\((.*)\)>'$", r"\1", reference.stdout, flags=re.MULTILINE)
    assert (mine.returncode, mine.stdout) == (reference.returncode, plain)
    for name in ["cas.crl.pem", "cau.crt.pem", "cau.crl"]:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    assert os.listdir(ours / "casdir") == os.listdir(theirs / "casdir")
