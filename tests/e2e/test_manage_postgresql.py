"""caucased-manage with PostgreSQL: backups made on PostgreSQL restored into SQLite by the
reference and by us, restored into PostgreSQL, live deployments copied between engines
(--copy-to), and a rollover started while caucased serves the database."""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from caucase.crypto import keys, x509util
from caucase.storage import exists
from tests.e2e.helpers import CAUCASED, MANAGE, certificate_of, submit_csr
from tests.support.ca_helpers import name
from tests.support.postgres import PostgresServer
from tests.support.servers import (
    RunningServer,
    key_pem,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)
from tests.support.wait import poll

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Deployment:
    """A caucased serving a PostgreSQL database, one user, a backup of it, a signed CSR."""

    server: RunningServer
    url: str
    user: Path
    backup: Path
    csr_id: str


@pytest.fixture(scope="module")
def deployment(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("on-postgresql")
    backups = workdir / "backups"
    backups.mkdir()
    url = postgres_server.new_database()
    first = start_caucased(CAUCASED, workdir, db=url)
    try:
        user = make_user(first, workdir / "user.pem")
    finally:
        first.stop()
    args = ["--backup-directory", str(backups), "--service-auto-approve-count", "1"]
    server = start_caucased(CAUCASED, workdir, args, db=url)
    try:
        found = poll(lambda: list(backups.glob("*.sql.caucased")), "a backup")
        _, csr = make_key_and_csr("service")
        csr_id = submit_csr(server, "cas", csr)
        yield Deployment(server, url, user, found[0], csr_id)
    finally:
        server.stop()
        postgres_server.drop_database(url)


def manage(*args: str, cwd: Path, command: str = MANAGE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def restore_args(deployment: Deployment, db: str, workdir: Path) -> tuple[list[str], Path]:
    """--restore-backup of the deployment's backup into `db`, as its user; the key of the
    new user certificate is written beside."""
    key, csr = make_key_and_csr("ignored")
    (workdir / "new.csr").write_bytes(csr)
    (workdir / "new.key").write_bytes(key_pem(key))
    args = ["--db", db, "--restore-backup", str(deployment.backup), str(deployment.user)]
    return [*args, str(workdir / "new.csr"), str(workdir / "new.crt")], workdir / "new.key"


def serves_restored(deployment: Deployment, workdir: Path, key: Path, db: str | None) -> None:
    """A caucased on the restored database: the new user is in, the old one revoked, the
    CAS CA the same."""
    credential = workdir / "new.pem"
    credential.write_bytes(key.read_bytes() + (workdir / "new.crt").read_bytes())
    server = start_caucased(CAUCASED, workdir / "node", db=db)
    try:
        assert request(server, "GET", "/cau/csr", https=True, cert_file=credential)[0] == 200
        status = request(server, "GET", "/cau/csr", https=True, cert_file=deployment.user)[0]
        assert status == 401
        ca = request(deployment.server, "GET", "/cas/crt/ca.crt.pem")[2]
        assert request(server, "GET", "/cas/crt/ca.crt.pem")[2] == ca
    finally:
        assert server.stop() == 0


@pytest.mark.interop
def test_the_reference_restores_a_backup_made_on_postgresql(
    deployment: Deployment, reference_bin: Path, tmp_path: Path
) -> None:
    (tmp_path / "node").mkdir()
    db = str(tmp_path / "node" / "caucase.sqlite")
    args, _ = restore_args(deployment, db, tmp_path)
    result = manage(*args, cwd=tmp_path, command=str(reference_bin / "caucased-manage"))
    assert result.returncode == 0, result.stderr
    assert certificate_of(tmp_path / "new.crt").subject == certificate_of(deployment.user).subject
    reference = start_caucased([reference_bin / "caucased"], tmp_path / "node")
    try:
        ca = request(deployment.server, "GET", "/cas/crt/ca.crt.pem")[2]
        assert request(reference, "GET", "/cas/crt/ca.crt.pem")[2] == ca
    finally:
        reference.stop()


def test_a_backup_made_on_postgresql_restores_into_sqlite(
    deployment: Deployment, tmp_path: Path
) -> None:
    (tmp_path / "node").mkdir()
    db = str(tmp_path / "node" / "caucase.sqlite")
    args, key = restore_args(deployment, db, tmp_path)
    result = manage(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    serves_restored(deployment, tmp_path, key, None)


def test_a_backup_restores_into_an_empty_postgresql_database(
    deployment: Deployment, postgres_url: str, tmp_path: Path
) -> None:
    args, key = restore_args(deployment, postgres_url, tmp_path)
    result = manage(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    serves_restored(deployment, tmp_path, key, postgres_url)


def test_restoring_into_a_postgresql_database_in_use_is_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    args, _ = restore_args(deployment, deployment.url, tmp_path)
    result = manage(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "exists, not restoring" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "new.crt").exists()


def served_state(server: RunningServer, csr_id: str) -> tuple[bytes, bytes, bytes]:
    """What a copy must serve alike: the CAS CA, its CRL, a certificate by id."""
    return (
        request(server, "GET", "/cas/crt/ca.crt.pem")[2],
        request(server, "GET", "/cas/crl")[2],
        request(server, "GET", f"/cas/crt/{csr_id}")[2],
    )


def test_a_live_deployment_is_copied_to_postgresql_and_back(
    postgres_url: str, tmp_path: Path
) -> None:
    args = ["--service-auto-approve-count", "1"]
    origin = start_caucased(CAUCASED, tmp_path / "origin", args)
    try:
        user = make_user(origin, tmp_path / "user.pem")
        _, csr = make_key_and_csr("service")
        csr_id = submit_csr(origin, "cas", csr)
        before = served_state(origin, csr_id)
        sqlite_db = str(tmp_path / "origin" / "caucase.sqlite")
        copied = manage("--db", sqlite_db, "--copy-to", postgres_url, cwd=tmp_path)
        assert copied.returncode == 0, copied.stderr
        assert copied.stdout.startswith("Copied ")
        again = manage("--db", sqlite_db, "--copy-to", postgres_url, cwd=tmp_path)
        assert again.returncode == 1 and "not empty" in again.stderr
        assert again.stderr.count("\n") == 1
    finally:
        assert origin.stop() == 0
    on_postgresql = start_caucased(CAUCASED, tmp_path / "pg-node", db=postgres_url)
    try:
        assert served_state(on_postgresql, csr_id) == before
        assert request(on_postgresql, "GET", "/cau/csr", https=True, cert_file=user)[0] == 200
    finally:
        assert on_postgresql.stop() == 0
    back = str(tmp_path / "back" / "caucase.sqlite")
    (tmp_path / "back").mkdir()
    result = manage("--db", postgres_url, "--copy-to", back, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    returned = start_caucased(CAUCASED, tmp_path / "back")
    try:
        assert served_state(returned, csr_id) == before
    finally:
        assert returned.stop() == 0


def test_copying_a_missing_database_fails_and_creates_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.sqlite")
    result = manage("--db", missing, "--copy-to", postgres_url, cwd=tmp_path)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert not exists(missing) and not exists(postgres_url)


def test_a_ca_imported_into_postgresql_is_served_at_once(
    deployment: Deployment, tmp_path: Path
) -> None:
    """No restart: caucased follows the CA rows of a shared database."""
    key = keys.generate(keys.KeySpec(keys.KeyType.EC_P256))
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = x509util.make_ca_certificate(key, name("imported"), now, datetime.timedelta(days=400))
    imported = tmp_path / "imported.pem"
    imported.write_bytes(x509util.dump_certificate(crt) + keys.dump_private_key(key))
    before = json.loads(request(deployment.server, "GET", "/cas/crt/ca.crt.json")[2])
    result = manage("--db", deployment.url, "--import-ca", str(imported), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    after = json.loads(request(deployment.server, "GET", "/cas/crt/ca.crt.json")[2])
    assert len(after) == len(before) + 1
