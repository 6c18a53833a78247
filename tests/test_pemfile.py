"""PEM files on disk: block classification, accessors, CA/CRL stores, atomic writes."""

from __future__ import annotations

import datetime
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from caucase.crypto import pemfile
from caucase.crypto.pemfile import BlockKind
from caucase.exceptions import PemFileError
from tests.support.ca_helpers import make_csr

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.timezone.utc)


@dataclass
class Authority:
    key: rsa.RSAPrivateKey
    crt_pem: bytes
    crl_pem: bytes
    key_pem: bytes
    aki_hex: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _authority(common_name: str) -> Authority:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    crt = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=10))
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(_name(common_name))
        .last_update(NOW)
        .next_update(NOW + datetime.timedelta(days=1))
        .add_extension(aki, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(
        key,
        crt.public_bytes(serialization.Encoding.PEM),
        crl.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        ski.digest.hex(),
    )


@pytest.fixture(scope="module")
def first() -> Authority:
    return _authority("first")


@pytest.fixture(scope="module")
def second() -> Authority:
    return _authority("second")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# Block classification (cli.md 2.2)


def test_blocks_are_classified_and_keep_their_exact_text(first: Authority) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = first.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    csr = make_csr(first.key, "svc")
    new_csr = csr.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    trusted = first.crt_pem.replace(b"CERTIFICATE", b"TRUSTED CERTIFICATE")
    data = b"junk before\n" + b"\n".join(
        [first.key_pem, ec_key, public, first.crt_pem, csr, new_csr, first.crl_pem, trusted]
    )

    blocks = pemfile.split_blocks(data)

    assert [block.kind for block in blocks] == [
        BlockKind.KEY,
        BlockKind.KEY,
        BlockKind.KEY,
        BlockKind.CERTIFICATE,
        BlockKind.CSR,
        BlockKind.CSR,
        BlockKind.CRL,
        BlockKind.OTHER,
    ]
    assert blocks[0].text == first.key_pem
    assert blocks[3].text == first.crt_pem


def test_last_block_without_trailing_newline_is_kept(first: Authority) -> None:
    blocks = pemfile.split_blocks(first.crt_pem.rstrip(b"\n"))

    assert [block.text for block in blocks] == [first.crt_pem.rstrip(b"\n")]


# Accessors


def test_missing_file_error_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.pem"

    with pytest.raises(PemFileError) as raised:
        pemfile.read_one_certificate(missing)

    assert str(missing) in str(raised.value)
    assert raised.value.path == missing


def test_one_csr_refuses_a_key_and_csr_file(tmp_path: Path, first: Authority) -> None:
    path = _write(tmp_path / "both.pem", first.key_pem + make_csr(first.key, "svc"))

    with pytest.raises(PemFileError, match="contains more than just a csr"):
        pemfile.read_one_csr(path)


def test_one_csr_refuses_a_bad_signature(tmp_path: Path, first: Authority) -> None:
    csr = x509.load_pem_x509_csr(make_csr(first.key, "svc"))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    path = _write(tmp_path / "bad.csr.pem", tampered)

    with pytest.raises(PemFileError, match="badly signed"):
        pemfile.read_one_csr(path)


def test_one_csr_returns_the_file_text(tmp_path: Path, first: Authority) -> None:
    csr = make_csr(first.key, "svc")

    assert pemfile.read_one_csr(_write(tmp_path / "a.csr.pem", b"comment\n" + csr)) == csr


def test_one_key_requires_nothing_else(tmp_path: Path, first: Authority) -> None:
    assert pemfile.read_one_key(_write(tmp_path / "k.pem", first.key_pem)) is not None

    combined = _write(tmp_path / "kc.pem", first.key_pem + first.crt_pem)
    with pytest.raises(PemFileError, match="Expected to find exactly one privatekey key in"):
        pemfile.read_one_key(combined)


def test_key_pair_from_a_combined_file_ignores_key_path(tmp_path: Path, first: Authority) -> None:
    combined = _write(tmp_path / "c.pem", first.key_pem + first.crt_pem)

    pair = pemfile.read_key_pair(combined, tmp_path / "ignored-missing.pem")

    assert pair.key_in_certificate_file
    assert pair.certificate.public_bytes(serialization.Encoding.PEM) == first.crt_pem


def test_key_pair_from_separate_files(tmp_path: Path, first: Authority) -> None:
    crt = _write(tmp_path / "a.crt.pem", first.crt_pem)
    key = _write(tmp_path / "a.key.pem", first.key_pem)

    pair = pemfile.read_key_pair(crt, key)

    assert not pair.key_in_certificate_file
    assert pair.key_path == str(key)


def test_key_pair_mismatch_lists_the_paths(
    tmp_path: Path, first: Authority, second: Authority
) -> None:
    crt = _write(tmp_path / "a.crt.pem", first.crt_pem)
    key = _write(tmp_path / "b.key.pem", second.key_pem)

    with pytest.raises(PemFileError) as raised:
        pemfile.read_key_pair(crt, key)

    assert str(raised.value) == (
        f"Could not find (exactly) one matching key pair in {sorted([str(crt), str(key)])!r}"
    )


def test_key_pair_refuses_a_certificate_chain(
    tmp_path: Path, first: Authority, second: Authority
) -> None:
    chain = _write(tmp_path / "chain.pem", first.key_pem + first.crt_pem + second.crt_pem)

    with pytest.raises(PemFileError, match="one matching key pair"):
        pemfile.read_key_pair(chain, "")


def test_has_one_certificate(tmp_path: Path, first: Authority, second: Authority) -> None:
    assert not pemfile.has_one_certificate(tmp_path / "missing.pem")
    assert not pemfile.has_one_certificate(_write(tmp_path / "key.pem", first.key_pem))
    assert pemfile.has_one_certificate(_write(tmp_path / "one.pem", first.crt_pem))
    with pytest.raises(PemFileError):
        pemfile.has_one_certificate(_write(tmp_path / "two.pem", first.crt_pem + second.crt_pem))


# Stores (cli.md 2.3)


def test_store_reading_file_directory_and_missing(
    tmp_path: Path, first: Authority, second: Authority
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    _write(store / "any-name", first.crt_pem + first.crl_pem)
    _write(store / "other.txt", second.crt_pem)
    (store / "subdir").mkdir()
    (store / "broken").symlink_to(tmp_path / "nowhere")

    assert sorted(pemfile.read_ca_store(store)) == sorted([first.crt_pem, second.crt_pem])
    assert pemfile.read_crl_store(store) == [first.crl_pem]
    assert pemfile.read_ca_store(tmp_path / "missing.pem") == []
    assert pemfile.read_ca_store(_write(tmp_path / "f.pem", first.crt_pem)) == [first.crt_pem]


def test_store_path_with_extension_becomes_a_file(
    tmp_path: Path, first: Authority, second: Authority
) -> None:
    path = tmp_path / "cas.crt.pem"

    pemfile.save_ca_store(path, [first.crt_pem, second.crt_pem])

    assert path.read_bytes() == first.crt_pem + second.crt_pem


def test_store_path_without_extension_becomes_a_directory(
    tmp_path: Path, first: Authority, second: Authority
) -> None:
    path = tmp_path / "casdir"

    pemfile.save_ca_store(path, [first.crt_pem, second.crt_pem])
    pemfile.save_crl_store(path, [first.crl_pem])

    assert sorted(os.listdir(path)) == sorted(
        [f"{first.aki_hex}.ca.pem", f"{second.aki_hex}.ca.pem", f"{first.aki_hex}.crl.pem"]
    )
    assert (path / f"{second.aki_hex}.ca.pem").read_bytes() == second.crt_pem


def test_directory_store_removes_stale_entries_and_symlinks(
    tmp_path: Path, first: Authority, second: Authority
) -> None:
    path = tmp_path / "casdir"
    path.mkdir()
    _write(path / "stale.ca.pem", second.crt_pem)
    _write(tmp_path / "elsewhere.pem", first.crt_pem)
    (path / f"{first.aki_hex}.ca.pem").symlink_to(tmp_path / "elsewhere.pem")
    _write(path / "notes.txt", b"kept")
    _write(path / "kept.crl.pem", first.crl_pem)

    pemfile.save_ca_store(path, [first.crt_pem])

    wanted = path / f"{first.aki_hex}.ca.pem"
    assert sorted(os.listdir(path)) == sorted([wanted.name, "notes.txt", "kept.crl.pem"])
    assert not wanted.is_symlink() and wanted.read_bytes() == first.crt_pem
    assert (tmp_path / "elsewhere.pem").exists()


def test_store_that_is_neither_file_nor_directory_is_refused(
    tmp_path: Path, first: Authority
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    with pytest.raises(PemFileError, match="neither a directory nor a file"):
        pemfile.save_ca_store(fifo, [first.crt_pem])


# Atomic writes


def test_private_file_is_created_0600(tmp_path: Path, first: Authority) -> None:
    path = tmp_path / "new.key.pem"

    pemfile.write_file(path, first.key_pem, private=True)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == first.key_pem
    assert os.listdir(tmp_path) == ["new.key.pem"]


def test_existing_file_keeps_its_mode(tmp_path: Path, first: Authority) -> None:
    path = _write(tmp_path / "shared.pem", b"old")
    path.chmod(0o640)

    pemfile.write_file(path, first.key_pem, private=True)

    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_bytes() == first.key_pem


def test_public_file_gets_the_umask_mode(tmp_path: Path, first: Authority) -> None:
    previous = os.umask(0o022)
    try:
        pemfile.write_file(tmp_path / "ca.pem", first.crt_pem)
    finally:
        os.umask(previous)

    assert stat.S_IMODE((tmp_path / "ca.pem").stat().st_mode) == 0o644


def test_symlink_target_is_replaced(tmp_path: Path, first: Authority) -> None:
    target = _write(tmp_path / "target.pem", b"old")
    link = tmp_path / "link.pem"
    link.symlink_to(target)

    pemfile.write_file(link, first.crt_pem)

    assert link.is_symlink()
    assert target.read_bytes() == first.crt_pem


def test_append_creates_then_appends(tmp_path: Path, first: Authority) -> None:
    path = tmp_path / "key.pem"

    pemfile.append_to_file(path, first.key_pem, private=True)
    pemfile.append_to_file(path, first.crt_pem, private=True)

    assert path.read_bytes() == first.key_pem + first.crt_pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unwritable_directory_gives_a_pem_file_error(tmp_path: Path, first: Authority) -> None:
    with pytest.raises(PemFileError) as raised:
        pemfile.write_file(tmp_path / "missing-dir" / "x.pem", first.crt_pem)

    assert "missing-dir" in str(raised.value)
