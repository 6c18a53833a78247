"""Restore runs only the statements a dump holds: forged backups are refused, nothing is
written, and a failed restore leaves no file and no descriptor behind.

Anyone holding a user's certificate can write a backup that user's key opens: the forged
backups here are made with caucase.backup's own writer for a test user's certificate."""

from __future__ import annotations

import datetime
import io
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase import backup
from caucase.cli import manage
from caucase.exceptions import BackupError
from caucase.storage import Database, Storage, restore_database
from tests.support.servers import OUR_BIN, key_pem, make_key_and_csr

NOW = 1_800_000_000
DAY = 86400


@pytest.fixture(scope="module")
def user_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def user_crt(user_key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "user")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(user_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=93))
        .sign(user_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def genuine_dump(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A dump of ours: every prefix, our extra indexes, a few rows."""
    path = str(tmp_path_factory.mktemp("genuine") / "caucase.sqlite")
    with Database(path) as database:
        storages = {
            prefix: Storage(database, prefix, enforce_unique_key_id=prefix == "cau")
            for prefix in ("cau", "cas", "http_cas")
        }
        storages["cas"].append_ca_key_pair(NOW + DAY, b"key", b"crt")
        storages["cau"].revoke(77, NOW, NOW + DAY)
        return list(database.dump())


def with_statement(dump: list[str], statement: str) -> list[str]:
    """The dump with `statement` last: outside its transaction (where ATTACH works),
    once the tables exist."""
    return [*dump, statement]


HOSTILE = {
    "attach": "ATTACH '{evil}' AS evil;",
    "vacuum-into": "VACUUM INTO '{evil}';",
    "comment-first": "/* hidden */ ATTACH '{evil}' AS evil;",
    "two-statements": "INSERT INTO caucounter VALUES ('x', 1); ATTACH '{evil}' AS evil;",
    "unknown-table": "CREATE TABLE evil (x);",
    "create-as-select": "CREATE TABLE cauca_copy AS SELECT * FROM cauca;",
    "temp-table": "CREATE TEMP TABLE evil (x);",
    "trigger": "CREATE TRIGGER evil AFTER INSERT ON caucrt BEGIN DELETE FROM caucrt; END;",
    "view": "CREATE VIEW evil AS SELECT 1;",
    "index-function": "CREATE INDEX evil ON casrevoked (serial) WHERE abs(1) = 1;",
    "insert-select": "INSERT INTO caurevoked SELECT * FROM casrevoked;",
    "function": "INSERT INTO cauconfig VALUES ('x', load_extension('/tmp/evil.so'));",
    "subquery": "INSERT INTO caucounter VALUES ('x', (SELECT COUNT(*) FROM cauca));",
    "schema-table": "INSERT INTO sqlite_master VALUES ('table', 'x', 'x', 0, 'CREATE TABLE x');",
    "pragma": "PRAGMA writable_schema=ON;",
    "delete": "DELETE FROM cauca;",
    "update": "UPDATE cauca SET key = NULL;",
    "drop": "DROP TABLE caucrt;",
    "select": "SELECT 1;",
    "analyze": "ANALYZE;",
    "vacuum": "VACUUM;",
    "savepoint": "SAVEPOINT evil;",
    "rollback": "ROLLBACK;",
    "empty": "",
}


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_forged_statement_is_refused_and_nothing_written(
    genuine_dump: list[str], tmp_path: Path, template: str
) -> None:
    target = tmp_path / "restored.sqlite"
    statement = template.replace("{evil}", str(tmp_path / "evil.sqlite"))
    with pytest.raises(BackupError, match=r"^Restore (refused|failed)") as caught:
        restore_database(str(target), iter(with_statement(genuine_dump, statement)))
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        (HOSTILE["attach"], "Restore refused, not a backup statement: ATTACH"),
        (HOSTILE["trigger"], "Restore refused, CREATE TRIGGER 'evil', 'caucrt' is not allowed"),
        (HOSTILE["function"], "Restore refused, FUNCTION 'load_extension' is not allowed"),
        (HOSTILE["unknown-table"], "Restore refused, CREATE TABLE 'evil' is not allowed"),
    ],
)
def test_refusals_say_what_was_refused(
    genuine_dump: list[str], tmp_path: Path, statement: str, refusal: str
) -> None:
    forged = with_statement(genuine_dump, statement.replace("{evil}", "evil.sqlite"))
    with pytest.raises(BackupError) as caught:
        restore_database(str(tmp_path / "restored.sqlite"), iter(forged))
    assert str(caught.value).startswith(refusal)


def test_genuine_shapes_restore(genuine_dump: list[str], tmp_path: Path) -> None:
    """Our dump with our indexes, the legacy CRL table of older releases, and the pragma
    newer Pythons' dumps may start with."""
    legacy = [
        "CREATE TABLE cascrl (id INTEGER PRIMARY KEY, expiration_date INTEGER, crl TEXT);",
        "CREATE UNIQUE INDEX cascrl_id ON cascrl (id);",
        "INSERT INTO \"cascrl\" VALUES(1,2,'not a crl');",
    ]
    statements = ["PRAGMA foreign_keys=OFF;", *genuine_dump[:-1], *legacy, genuine_dump[-1]]
    target = str(tmp_path / "restored.sqlite")
    restore_database(target, iter(statements))
    with Database(target) as restored:
        assert Storage(restored, "cas").get_ca_key_pairs(NOW) == [(b"key", b"crt")]
        assert Storage(restored, "cau").get_revoked(NOW) == [(77, NOW)]


def write_backup(path: Path, statements: list[str], recipient: x509.Certificate) -> None:
    buffer = io.BytesIO()
    backup.write_backup(buffer, iter(statements), [recipient])
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def restore_files(tmp_path: Path, user_key: rsa.RSAPrivateKey) -> Iterator[tuple[Path, ...]]:
    key_path, csr_path = tmp_path / "user.key", tmp_path / "new.csr"
    key_path.write_bytes(key_pem(user_key))
    csr_path.write_bytes(make_key_and_csr("new")[1])
    yield key_path, csr_path, tmp_path / "new.crt", tmp_path / "restored.sqlite"


def test_manage_refuses_a_forged_backup_in_one_line(
    genuine_dump: list[str],
    user_crt: x509.Certificate,
    restore_files: tuple[Path, ...],
    tmp_path: Path,
) -> None:
    evil = tmp_path / "evil.sqlite"
    forged = tmp_path / "forged.sql.caucased"
    for template in ("two-statements", "trigger"):
        statement = HOSTILE[template].replace("{evil}", str(evil))
        write_backup(forged, with_statement(genuine_dump, statement), user_crt)
        assert_manage_refuses(forged, restore_files)
    assert not evil.exists()


def assert_manage_refuses(forged: Path, restore_files: tuple[Path, ...]) -> None:
    key_path, csr_path, crt_path, db = restore_files
    result = subprocess.run(
        [
            *(str(OUR_BIN / "caucased-manage"), "--db", str(db), "--restore-backup"),
            *(str(forged), str(key_path), str(csr_path), str(crt_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Restore refused" in result.stderr
    assert not db.exists() and not crt_path.exists()


def descriptors_on(path: Path) -> list[str]:
    """This process's open descriptors on `path` or its side files (even if deleted)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


def test_failed_restore_removes_the_database_after_closing_it(
    user_crt: x509.Certificate,
    restore_files: tuple[Path, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The restore fails after the dump is in (the backup holds no CAU CA): the files go,
    and no connection is left on them."""
    key_path, csr_path, crt_path, db = restore_files
    empty = tmp_path / "empty.sqlite"
    with Database(str(empty)) as database:
        Storage(database, "cau", enforce_unique_key_id=True)
        statements = list(database.dump())
    empty.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(empty) + suffix).unlink(missing_ok=True)
    backup_path = tmp_path / "empty.sql.caucased"
    write_backup(backup_path, statements, user_crt)
    args = ["--db", str(db), "--restore-backup", str(backup_path), str(key_path)]
    assert manage.main([*args, str(csr_path), str(crt_path)]) == 1
    assert "no valid CAU certificate authority" in capsys.readouterr().err
    assert not db.exists()
    assert descriptors_on(db) == []
    with sqlite3.connect(db) as fresh:  # nothing of the old file survives at the path
        assert fresh.execute("SELECT COUNT(*) FROM sqlite_master").fetchone() == (0,)
    fresh.close()
