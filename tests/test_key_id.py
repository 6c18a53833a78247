"""caucase-key-id: key ids of private keys and of the keys able to decrypt a backup."""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from caucase import __version__, backup
from caucase.cli import key_id
from tests.support.ca_helpers import generate_keys, self_signed
from tests.support.servers import OUR_BIN, key_pem


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(2)


def _expected_id(key: rsa.RSAPrivateKey) -> str:
    """SHA-1 of the PKCS#1 RSAPublicKey DER, computed independently of the code under test."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    return hashlib.sha1(der).hexdigest()


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = key_id.main(list(argv), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def key_files(tmp_path: Path, rsa_keys: list[rsa.RSAPrivateKey]) -> list[Path]:
    """A key-only file, then a file with a certificate before its key."""
    alone = tmp_path / "user.key.pem"
    alone.write_bytes(key_pem(rsa_keys[0]))
    combined = tmp_path / "service.pem"
    combined.write_bytes(
        self_signed(rsa_keys[1]).public_bytes(serialization.Encoding.PEM) + key_pem(rsa_keys[1])
    )
    return [alone, combined]


@pytest.fixture
def backup_file(tmp_path: Path, rsa_keys: list[rsa.RSAPrivateKey]) -> Path:
    path = tmp_path / "20261127123659.sql.caucased"
    with open(path, "wb") as output:
        used = backup.write_backup(
            output,
            ["BEGIN TRANSACTION;", "COMMIT;"],
            [self_signed(rsa_keys[1]), self_signed(rsa_keys[0])],
        )
    assert used == 2
    return path


def test_private_keys_print_path_and_bytes_literal(
    key_files: list[Path], rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    status, out, err = _run("--private-key", *map(str, key_files))

    assert (status, err) == (0, "")
    assert out == "".join(
        f"{path} b'{_expected_id(key)}'\n" for path, key in zip(key_files, rsa_keys)
    )


def test_backup_lists_header_ids_in_order_after_keys(
    key_files: list[Path], backup_file: Path, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    status, out, _ = _run("--backup", str(backup_file), "--priv", str(key_files[0]))

    assert status == 0
    assert out == (
        f"{key_files[0]} b'{_expected_id(rsa_keys[0])}'\n"
        f"{backup_file}\n"
        f"  b'{_expected_id(rsa_keys[1])}'\n"
        f"  b'{_expected_id(rsa_keys[0])}'\n"
    )


def test_repeated_option_keeps_the_last_list(key_files: list[Path]) -> None:
    status, out, _ = _run("--private-key", str(key_files[0]), "--private-key", str(key_files[1]))

    assert status == 0
    assert out.startswith(f"{key_files[1]} b'") and out.count("\n") == 1


def test_no_option_prints_nothing() -> None:
    assert _run() == (0, "", "")


def test_bad_backup_magic_prints_path_then_one_error_line(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sql.caucased"
    bogus.write_bytes(b"notcaucase" + b"\0" * 40)

    status, out, err = _run("--backup", str(bogus))

    assert status == 1
    assert out == f"{bogus}\n"
    assert err.startswith("caucase-key-id: ") and err.count("\n") == 1
    assert str(bogus) in err


@pytest.mark.parametrize("content", [None, b"no pem here\n", "encrypted", "public-only"])
def test_unusable_key_file_gives_one_line_and_status_1(
    tmp_path: Path,
    key_files: list[Path],
    rsa_keys: list[rsa.RSAPrivateKey],
    content: bytes | str | None,
) -> None:
    path = tmp_path / "bad.pem"
    if content == "encrypted":
        path.write_bytes(
            rsa_keys[0].private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    elif content == "public-only":
        path.write_bytes(
            rsa_keys[0]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    elif isinstance(content, bytes):
        path.write_bytes(content)

    status, out, err = _run("--private-key", str(path), str(key_files[0]))

    assert status == 1
    assert err.startswith("caucase-key-id: ") and err.count("\n") == 1 and str(path) in err
    assert out == f"{key_files[0]} b'{_expected_id(rsa_keys[0])}'\n"


def test_console_script_version() -> None:
    result = subprocess.run(
        [str(OUR_BIN / "caucase-key-id"), "--version"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, __version__ + "\n")


@pytest.mark.interop
def test_same_output_as_reference(
    tmp_path: Path, key_files: list[Path], backup_file: Path, reference_bin: Path
) -> None:
    ec_file = tmp_path / "ec.key.pem"
    ec_file.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    argv = ["--private-key", *map(str, key_files), str(ec_file), "--backup", str(backup_file)]

    reference = subprocess.run(
        [str(reference_bin / "caucase-key-id"), *argv], capture_output=True, text=True, check=True
    )
    ours = subprocess.run(
        [str(OUR_BIN / "caucase-key-id"), *argv], capture_output=True, text=True, check=True
    )

    assert ours.stdout == reference.stdout
