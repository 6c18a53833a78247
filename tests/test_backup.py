"""Backup format: byte layout, round trips, streaming memory use, tamper and truncation."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import json
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, keywrap, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from caucase import backup
from caucase.exceptions import BackupError
from caucase.storage import Storage, restore_database
from tests.support.ca_helpers import generate_keys

NOW = 1_800_000_000
STATEMENTS = [
    "BEGIN TRANSACTION;",
    "CREATE TABLE t (\n          a INTEGER,\n          b TEXT\n        );",
    *[f"INSERT INTO \"t\" VALUES({n},'row {n} \u00e9');" for n in range(40)],
    "COMMIT;",
]


UserKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def self_signed(key: UserKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "user")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=93))
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(3)


@pytest.fixture(scope="module")
def user_key(rsa_keys: list[rsa.RSAPrivateKey]) -> rsa.RSAPrivateKey:
    return rsa_keys[0]


@pytest.fixture(scope="module")
def user_crt(user_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return self_signed(user_key)


def key_id(key: UserKey) -> str:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()


def make_backup(
    statements: list[str], recipients: list[x509.Certificate], chunk_size: int = backup.CHUNK_SIZE
) -> bytes:
    output = io.BytesIO()
    backup.write_backup(output, iter(statements), recipients, chunk_size=chunk_size)
    return output.getvalue()


def split_backup(data: bytes) -> tuple[dict, bytes]:
    assert data[:8] == b"caucase\0"
    (length,) = struct.unpack("<I", data[8:12])
    return json.loads(data[12 : 12 + length]), data[12 + length :]


def decrypt_independently(data: bytes, key: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    """The spec's recipe (ca-profile 6.4) written out: returns (MAC key, plaintext stream)."""
    header, ciphertext = split_backup(data)
    (entry,) = [e for e in header["key_list"] if e["id"] == key_id(key)]
    oaep = OAEP(mgf=MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    secret = key.decrypt(bytes.fromhex(entry["key"]), oaep)
    iv = bytes.fromhex(header["cipher"]["parameter"])
    decryptor = Cipher(algorithms.AES(secret[32:]), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return secret[:32], unpadder.update(padded) + unpadder.finalize()


def test_header_layout_and_recipients(
    rsa_keys: list[rsa.RSAPrivateKey], user_crt: x509.Certificate
) -> None:
    ed25519_crt = self_signed(ed25519.Ed25519PrivateKey.generate())
    recipients = [user_crt, ed25519_crt, self_signed(rsa_keys[1])]
    output = io.BytesIO()
    assert backup.write_backup(output, iter(STATEMENTS), recipients) == 2
    data = output.getvalue()
    header, ciphertext = split_backup(data)
    assert len(ciphertext) % 16 == 0
    expected_ids = [key_id(rsa_keys[0]), key_id(rsa_keys[1])]
    assert [entry["id"] for entry in header["key_list"]] == expected_ids
    assert backup.read_key_ids(io.BytesIO(data)) == expected_ids
    rebuilt = json.dumps(
        {
            "cipher": {
                "name": "aes256_cbc_pkcs7_hmac_10M_sha256",
                "parameter": header["cipher"]["parameter"],
            },
            "key_list": [
                {"id": e["id"], "cipher": {"name": "rsa_oaep_sha1_mgf1_sha1"}, "key": e["key"]}
                for e in header["key_list"]
            ],
        }
    ).encode()
    assert data[12 : 12 + len(rebuilt)] == rebuilt
    assert struct.unpack("<I", data[8:12]) == (len(rebuilt),)
    assert len(header["cipher"]["parameter"]) == 32
    assert all(len(entry["key"]) == 512 for entry in header["key_list"])
    for key in rsa_keys[:2]:
        assert list(backup.read_backup(io.BytesIO(data), key)) == STATEMENTS


def test_single_chunk_plaintext_is_payload_then_mac(
    user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate
) -> None:
    mac_key, plaintext = decrypt_independently(make_backup(STATEMENTS, [user_crt]), user_key)
    payload = b"".join(s.encode() + b"\0" for s in STATEMENTS)
    assert plaintext == payload + hmac.new(mac_key, payload, hashlib.sha256).digest()


@pytest.mark.parametrize("payload_size", [32 * 5, 32 * 5 + 7])
def test_test_variant_uses_32_byte_chunks_and_running_mac(
    user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate, payload_size: int
) -> None:
    statements = ["x" * (payload_size - 1)]
    data = make_backup(statements, [user_crt], chunk_size=backup.TEST_CHUNK_SIZE)
    assert split_backup(data)[0]["cipher"]["name"] == "TESTS_INTERNAL_USE_ONLY"
    mac_key, plaintext = decrypt_independently(data, user_key)
    payload = statements[0].encode() + b"\0"
    expected = b""
    for start in range(0, payload_size, 32):
        chunk = payload[start : start + 32]
        running = hmac.new(mac_key, payload[: start + 32], hashlib.sha256).digest()
        expected += chunk + running
    assert plaintext == expected  # an exact multiple gets no extra trailing MAC
    assert list(backup.read_backup(io.BytesIO(data), user_key)) == statements


def fill_database(path: str, megabytes: int) -> Storage:
    storage = Storage(path, "cau", enforce_unique_key_id=True)
    blob = b"-----BEGIN CERTIFICATE-----\n" + b"A" * 16000 + b"\n"
    for n in range(megabytes * 64):
        csr_id, _ = storage.append_csr(b"%d" % n + blob, f"{n:040x}", NOW, override_limits=True)
        storage.store_certificate(csr_id, blob, NOW)
    storage.revoke(12345, NOW, NOW + 86400)
    return storage


def test_database_round_trip_through_backup_and_restore(
    tmp_path: Path, user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate
) -> None:
    storage = fill_database(str(tmp_path / "source.sqlite"), megabytes=4)
    backup_path = tmp_path / "backup.sql.caucased"
    with open(backup_path, "wb") as output:
        backup.write_backup(output, storage.dump(), [user_crt])
    assert backup_path.stat().st_size > 4 * 1024 * 1024
    target = str(tmp_path / "restored.sqlite")
    with open(backup_path, "rb") as source:
        restore_database(target, backup.read_backup(source, user_key))
    restored = Storage(target, "cau", enforce_unique_key_id=True)
    assert list(restored.dump()) == list(storage.dump())
    assert restored.get_revoked(NOW) == [(12345, NOW)]
    storage.close()
    restored.close()


def large_dump(megabytes: int) -> Iterator[str]:
    row = "'" + "B" * 1000 + "'"
    yield "BEGIN TRANSACTION;"
    for n in range(megabytes * 1024):
        yield f'INSERT INTO "t" VALUES({n},{row});'
    yield "COMMIT;"


def test_memory_stays_flat_on_a_large_dump(
    tmp_path: Path, user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate
) -> None:
    dump_megabytes = 40
    backup_path = tmp_path / "large.sql.caucased"
    tracemalloc.start()
    try:
        with open(backup_path, "wb") as output:
            backup.write_backup(output, large_dump(dump_megabytes), [user_crt])
        _, writer_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with open(backup_path, "rb") as source:
            count = sum(1 for _ in backup.read_backup(source, user_key))
        _, reader_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == dump_megabytes * 1024 + 2
    assert writer_peak < 4 * 1024 * 1024
    # The reader must hold one 10 MiB chunk until its MAC verifies, never the whole dump.
    assert reader_peak < 16 * 1024 * 1024


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]


@pytest.mark.parametrize("from_end", [100, 1, 17])
def test_flipped_ciphertext_byte_is_detected(
    user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate, from_end: int
) -> None:
    data = make_backup(STATEMENTS, [user_crt])
    received: list[str] = []
    with pytest.raises(BackupError):
        received.extend(backup.read_backup(io.BytesIO(flip(data, len(data) - from_end)), user_key))
    assert received == []  # nothing is handed on before its chunk verified


def test_tampering_in_a_later_chunk_only_stops_there(
    user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate
) -> None:
    data = make_backup(STATEMENTS, [user_crt], chunk_size=backup.TEST_CHUNK_SIZE)
    received: list[str] = []
    with pytest.raises(BackupError, match="HMAC"):
        received.extend(backup.read_backup(io.BytesIO(flip(data, len(data) - 200)), user_key))
    assert 0 < len(received) < len(STATEMENTS)
    assert received == STATEMENTS[: len(received)]


@pytest.mark.parametrize("cut", [5, 16, 64 + 16])
def test_truncation_is_detected(
    user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate, cut: int
) -> None:
    data = make_backup(STATEMENTS, [user_crt], chunk_size=backup.TEST_CHUNK_SIZE)
    with pytest.raises(BackupError):
        list(backup.read_backup(io.BytesIO(data[:-cut]), user_key))


def test_unterminated_statement_is_a_short_read(
    user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate
) -> None:
    output = io.BytesIO()
    backup.write_backup(output, iter(["COMMIT;"]), [user_crt])
    header, _ = split_backup(output.getvalue())
    mac_key, plaintext = decrypt_independently(output.getvalue(), user_key)
    assert plaintext[:-32] == b"COMMIT;\0"
    # Rebuild the same stream without the final NUL, properly MACed and encrypted.
    oaep = OAEP(mgf=MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    secret = user_key.decrypt(bytes.fromhex(header["key_list"][0]["key"]), oaep)
    payload = b"COMMIT;"
    stream = payload + hmac.new(mac_key, payload, hashlib.sha256).digest()
    padder = padding.PKCS7(128).padder()
    iv = bytes.fromhex(header["cipher"]["parameter"])
    encryptor = Cipher(algorithms.AES(secret[32:]), modes.CBC(iv)).encryptor()
    padded = padder.update(stream) + padder.finalize()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    raw = output.getvalue()
    forged = raw[: len(raw) - len(split_backup(raw)[1])] + ciphertext
    with pytest.raises(BackupError, match=r"Short read, backup truncated \?"):
        list(backup.read_backup(io.BytesIO(forged), user_key))


def test_wrong_key_is_refused_at_once(
    rsa_keys: list[rsa.RSAPrivateKey], user_crt: x509.Certificate
) -> None:
    data = make_backup(STATEMENTS, [user_crt])
    with pytest.raises(BackupError, match="not a good candidate"):
        backup.read_backup(io.BytesIO(data), rsa_keys[2])


def test_duplicate_key_entries_are_refused(
    user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate
) -> None:
    data = make_backup(STATEMENTS, [user_crt, user_crt])
    with pytest.raises(BackupError):
        backup.read_backup(io.BytesIO(data), user_key)


def test_no_recipient_able_to_decrypt_writes_nothing_and_says_why() -> None:
    output = io.BytesIO()
    ed25519_crt = self_signed(ed25519.Ed25519PrivateKey.generate())
    skipped: list[tuple[x509.Certificate, str]] = []
    with pytest.raises(BackupError):
        backup.write_backup(
            output, iter(STATEMENTS), [ed25519_crt], on_skip=lambda c, r: skipped.append((c, r))
        )
    assert output.getvalue() == b""
    assert skipped == [(ed25519_crt, "Ed25519 keys can only sign, not decrypt (no key agreement)")]


# --- EC recipients: ephemeral-static ECDH, HKDF-SHA256, AES key wrap -------------------------

ECDH_NAME = "ecdh_es_hkdf_sha256_aes256_kw"


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def unwrap_ecdh_independently(entry: dict, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The documented recipe of an ECDH entry, written out with cryptography alone."""
    ephemeral_point = bytes.fromhex(entry["cipher"]["parameter"])
    ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, ephemeral_point)
    shared = key.exchange(ec.ECDH(), ephemeral)
    info = ECDH_NAME.encode() + ephemeral_point + _point(key.public_key())
    kek = HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(shared)
    return keywrap.aes_key_unwrap(kek, bytes.fromhex(entry["key"]))


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["p256", "p384"])
def test_ec_recipients_get_an_ecdh_entry_beside_the_rsa_ones(
    user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate, curve: ec.EllipticCurve
) -> None:
    ec_key = ec.generate_private_key(curve)
    data = make_backup(STATEMENTS, [user_crt, self_signed(ec_key)])
    header, _ = split_backup(data)
    rsa_entry, ec_entry = header["key_list"]
    assert rsa_entry["cipher"] == {"name": "rsa_oaep_sha1_mgf1_sha1"}
    assert list(ec_entry) == ["id", "cipher", "key"]
    assert ec_entry["id"] == key_id(ec_key)
    assert ec_entry["cipher"]["name"] == ECDH_NAME
    assert len(bytes.fromhex(ec_entry["cipher"]["parameter"])) == 1 + 2 * curve.key_size // 8
    assert len(bytes.fromhex(ec_entry["key"])) == 64 + 8
    secret = unwrap_ecdh_independently(ec_entry, ec_key)
    assert secret == decrypt_secret_rsa(rsa_entry, user_key)
    assert list(backup.read_backup(io.BytesIO(data), ec_key)) == STATEMENTS
    assert list(backup.read_backup(io.BytesIO(data), user_key)) == STATEMENTS


def decrypt_secret_rsa(entry: dict, key: rsa.RSAPrivateKey) -> bytes:
    oaep = OAEP(mgf=MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return key.decrypt(bytes.fromhex(entry["key"]), oaep)


def _with_entry(data: bytes, **changes: object) -> bytes:
    header, ciphertext = split_backup(data)
    header["key_list"][0].update(changes)
    encoded = json.dumps(header).encode()
    return b"caucase\0" + struct.pack("<I", len(encoded)) + encoded + ciphertext


@pytest.mark.parametrize(
    "change",
    [
        {"cipher": {"name": ECDH_NAME}},
        {"cipher": {"name": ECDH_NAME, "parameter": "04" + "11" * 64}},
        {"cipher": {"name": ECDH_NAME, "parameter": "zz"}},
        {"cipher": {"name": "rsa_oaep_sha1_mgf1_sha1"}},
        {"key": "00" * 72},
    ],
    ids=["no parameter", "point off the curve", "not hex", "rsa cipher name", "bad wrap"],
)
def test_tampered_ecdh_entries_are_refused(change: dict) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    data = _with_entry(make_backup(STATEMENTS, [self_signed(ec_key)]), **change)
    with pytest.raises(BackupError):
        backup.read_backup(io.BytesIO(data), ec_key)


def test_an_rsa_key_cannot_use_an_ecdh_entry(user_key: rsa.RSAPrivateKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    data = make_backup(STATEMENTS, [self_signed(ec_key)])
    data = _with_entry(data, id=key_id(user_key))
    with pytest.raises(BackupError, match="does not fit"):
        backup.read_backup(io.BytesIO(data), user_key)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"notcauc\0\x02\x00\x00\x00{}", "magic"),
        (b"caucase\0\x05\x00\x00\x00{}", "truncated"),
        (b"caucase\0\x02\x00\x00\x00[]", "header"),
        (b"caucase\0\x0b\x00\x00\x00{not json}", "header"),
        (b"caucase\0\x02\x00\x00\x00{}", "header"),
    ],
)
def test_malformed_headers(user_key: rsa.RSAPrivateKey, data: bytes, message: str) -> None:
    with pytest.raises(BackupError, match=message):
        backup.read_key_ids(io.BytesIO(data))
    with pytest.raises(BackupError, match=message):
        backup.read_backup(io.BytesIO(data), user_key)


def test_unknown_cipher_is_refused(
    user_key: rsa.RSAPrivateKey, user_crt: x509.Certificate
) -> None:
    header, ciphertext = split_backup(make_backup(STATEMENTS, [user_crt]))
    header["cipher"]["name"] = "rot13"
    encoded = json.dumps(header).encode()
    data = b"caucase\0" + struct.pack("<I", len(encoded)) + encoded + ciphertext
    with pytest.raises(BackupError, match="cipher"):
        backup.read_backup(io.BytesIO(data), user_key)
