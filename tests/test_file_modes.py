"""Every file holding a secret is created 0600, even under a umask of 022.

Each command runs through `sh -c 'umask 022; exec ...'`, so a file created with the default
mode would be 0644 (the control test shows it). The files checked did not exist before the
command ran, so their mode is the one they were created with."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    key_pem,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)
from tests.support.wait import poll

UMASK_022 = ["sh", "-c", 'umask 022; exec "$0" "$@"']
PRIVATE = 0o600
PKCS10 = {"Content-Type": "application/pkcs10"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(*command: str | Path, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run a command under umask 022; it must succeed."""
    result = subprocess.run(
        [*UMASK_022, *map(str, command)], cwd=cwd, input=stdin, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


class ModeWatcher:
    """Scans directories in a tight loop while a command runs, recording every mode each
    file was seen with: a file created wide then narrowed would show its first mode."""

    def __init__(self, *directories: Path) -> None:
        self.directories = directories
        self.seen: dict[str, set[int]] = defaultdict(set)
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ModeWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for directory in self.directories:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        try:
                            self.seen[entry.name].add(mode(Path(entry.path)))
                        except FileNotFoundError:
                            continue
            self.scans += 1

    def wider_than_private(self, ignored: set[str]) -> dict[str, set[int]]:
        return {
            name: modes
            for name, modes in self.seen.items()
            if name not in ignored and modes != {PRIVATE}
        }


@dataclass
class Deployment:
    """A caucased started with umask 022, one user, and where its files are."""

    server: RunningServer
    workdir: Path
    user: Path
    watcher: ModeWatcher

    @property
    def db(self) -> Path:
        return self.workdir / "caucase.sqlite"

    def backups(self) -> list[Path]:
        return sorted((self.workdir / "backups").glob("*.sql.caucased"))


def _start(workdir: Path, port: int | None = None) -> RunningServer:
    args = [
        "--cors-key-store",
        str(workdir / "cors.json"),
        "--backup-directory",
        str(workdir / "backups"),
        "--service-auto-approve-count",
        "10",
    ]
    return start_caucased([*UMASK_022, OUR_BIN / "caucased"], workdir, args, http_port=port)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Started, given a user, then restarted: a backup is due at once when a user exists."""
    workdir = tmp_path_factory.mktemp("modes") / "server"
    (workdir / "backups").mkdir(parents=True)
    with ModeWatcher(workdir, workdir / "backups") as watcher:
        first = _start(workdir)
        try:
            user = make_user(first, workdir.parent / "user.pem")
        finally:
            first.stop()
        server = _start(workdir, first.http_port)
        deployment = Deployment(server, workdir, user, watcher)
        try:
            poll(deployment.backups, "a backup")
        except BaseException:
            server.stop()
            raise
    try:
        yield deployment
    finally:
        server.stop()


def test_umask_022_gives_0644_to_ordinary_files(tmp_path: Path) -> None:
    run("python3", "-c", "open('probe', 'w').close()", cwd=tmp_path)
    assert mode(tmp_path / "probe") == 0o644


def test_database_side_files_and_server_key_are_private(deployment: Deployment) -> None:
    files = [
        deployment.db,
        deployment.db.with_name("caucase.sqlite-wal"),
        deployment.db.with_name("caucase.sqlite-shm"),
        deployment.workdir / "server.key.pem",
    ]
    assert {path.name: mode(path) for path in files} == dict.fromkeys(
        (path.name for path in files), PRIVATE
    )


def test_no_server_file_was_ever_seen_wider(deployment: Deployment) -> None:
    """Logs apart, every file that appeared during start, restart and backup was 0600
    each time the watcher saw it (backups directory and temporary files included)."""
    watcher = deployment.watcher
    assert watcher.scans > 10
    assert {"caucase.sqlite", "server.key.pem"} <= set(watcher.seen)
    assert watcher.wider_than_private({"caucased.out", "caucased.err", "backups"}) == {}


def test_cors_key_store_is_private(deployment: Deployment) -> None:
    store = deployment.workdir / "cors.json"
    assert not store.exists()
    form = urllib.parse.urlencode(
        {"origin": "https://app.example", "return_to": "https://app.example/", "grant": "1"}
    )
    status, _, _ = request(
        deployment.server,
        "POST",
        "/cors",
        form.encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
        https=True,
    )
    assert status == 302
    assert mode(store) == PRIVATE
    assert store.read_text().startswith("[[")


def test_backups_are_private(deployment: Deployment) -> None:
    backups = deployment.backups()
    assert backups and all(mode(path) == PRIVATE for path in backups)
    assert backups[0].read_bytes().startswith(b"caucase\0")


def test_restored_database_is_private(deployment: Deployment, tmp_path: Path) -> None:
    _, csr = make_key_and_csr("replacement user")
    (tmp_path / "new.csr").write_bytes(csr)
    run(
        OUR_BIN / "caucased-manage",
        "--db",
        "restored.sqlite",
        "--restore-backup",
        deployment.backups()[0],
        deployment.user,
        "new.csr",
        "new.crt",
        cwd=tmp_path,
    )
    assert mode(tmp_path / "restored.sqlite") == PRIVATE
    assert b"BEGIN CERTIFICATE" in (tmp_path / "new.crt").read_bytes()


def test_exported_ca_is_private(deployment: Deployment, tmp_path: Path) -> None:
    run(
        OUR_BIN / "caucased-manage",
        "--db",
        deployment.db,
        "--export-ca",
        "export.pem",
        cwd=tmp_path,
        stdin=b"secret\nsecret\n",
    )
    exported = tmp_path / "export.pem"
    assert mode(exported) == PRIVATE
    assert b"ENCRYPTED" in exported.read_bytes()


def _service_pair(server: RunningServer, workdir: Path, layout: str) -> tuple[Path, Path | None]:
    """An auto-approved CAS certificate and its key, in one file or two, created 0600."""
    key, csr = make_key_and_csr("service")
    status, headers, _ = request(server, "PUT", "/cas/csr", csr, PKCS10)
    assert status == 201
    status, _, crt = request(server, "GET", "/cas/crt/" + headers["Location"])
    assert status == 200
    if layout == "combined":
        crt_path = workdir / "svc.pem"
        crt_path.write_bytes(key_pem(key) + crt)
        crt_path.chmod(PRIVATE)
        return crt_path, None
    crt_path, key_path = workdir / "svc.crt", workdir / "svc.key"
    crt_path.write_bytes(crt)
    key_path.write_bytes(key_pem(key))
    key_path.chmod(PRIVATE)
    return crt_path, key_path


def _key_bytes(path: Path) -> bytes:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("layout", ["combined", "separate"])
def test_caucase_renew_crt_keeps_keys_private(
    deployment: Deployment, tmp_path: Path, layout: str
) -> None:
    crt_path, key_path = _service_pair(deployment.server, tmp_path, layout)
    key_file = key_path or crt_path
    before = _key_bytes(key_file)
    run(
        OUR_BIN / "caucase",
        "--ca-url",
        deployment.server.http_url,
        "--threshold",
        "100",
        "--renew-crt",
        crt_path,
        key_path or "",
        cwd=tmp_path,
    )
    assert _key_bytes(key_file) != before
    assert mode(key_file) == PRIVATE


@pytest.mark.parametrize("layout", ["combined", "separate"])
def test_updater_renewal_keeps_keys_private(
    deployment: Deployment, tmp_path: Path, layout: str
) -> None:
    crt_path, key_path = _service_pair(deployment.server, tmp_path, layout)
    key_file = key_path or crt_path
    before = _key_bytes(key_file)
    stores = ["--cas-ca", "cas.crt.pem", "--ca", "cas.crt.pem", "--crl", "cas.crl.pem"]
    options = ["--crt", str(crt_path), *(["--key", str(key_path)] if key_path else [])]
    log = tmp_path / "updater.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                *UMASK_022,
                str(OUR_BIN / "caucase-updater"),
                "--ca-url",
                deployment.server.http_url,
                *stores,
                *options,
                "--threshold",
                "100",
            ],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        poll(lambda: log.read_text().count("Next wake-up at") >= 2, "the renewal")
    finally:
        process.terminate()
        process.wait(10)
    assert "Renewing" in log.read_text()
    assert _key_bytes(key_file) != before
    assert mode(key_file) == PRIVATE


def test_rerequest_key_is_private(tmp_path: Path) -> None:
    _, template = make_key_and_csr("template")
    (tmp_path / "template.csr").write_bytes(template)
    run(
        OUR_BIN / "caucase-rerequest",
        "--template",
        "template.csr",
        "--csr",
        "new.csr",
        "--key",
        "new.key",
        cwd=tmp_path,
    )
    assert mode(tmp_path / "new.key") == PRIVATE
    assert mode(tmp_path / "new.csr") == 0o644


def _key_only_file(path: Path) -> bytes:
    """A new key in a 0600 file (what rerequest makes); the CSR for it."""
    key, csr = make_key_and_csr("bootstrapped")
    path.write_bytes(key_pem(key))
    path.chmod(PRIVATE)
    return csr


def test_get_crt_appended_to_a_key_file_keeps_it_private(
    deployment: Deployment, tmp_path: Path
) -> None:
    key_file = tmp_path / "svc.pem"
    csr = _key_only_file(key_file)
    status, headers, _ = request(deployment.server, "PUT", "/cas/csr", csr, PKCS10)
    assert status == 201
    run(
        OUR_BIN / "caucase",
        "--ca-url",
        deployment.server.http_url,
        "--get-crt",
        headers["Location"],
        key_file,
        cwd=tmp_path,
    )
    assert b"CERTIFICATE" in key_file.read_bytes()
    assert mode(key_file) == PRIVATE


def test_updater_bootstrap_into_a_key_file_keeps_it_private(
    deployment: Deployment, tmp_path: Path
) -> None:
    key_file = tmp_path / "svc.pem"
    (tmp_path / "svc.csr").write_bytes(_key_only_file(key_file))
    stores = ["--cas-ca", "cas.crt.pem", "--ca", "cas.crt.pem", "--crl", "cas.crl.pem"]
    log = tmp_path / "updater.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                *UMASK_022,
                str(OUR_BIN / "caucase-updater"),
                "--ca-url",
                deployment.server.http_url,
                *stores,
                "--crt",
                "svc.pem",
                "--csr",
                "svc.csr",
            ],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        poll(lambda: "Next wake-up at" in log.read_text(), "the bootstrap")
    finally:
        process.terminate()
        process.wait(10)
    assert "Bootstrap done" in log.read_text()
    assert b"CERTIFICATE" in key_file.read_bytes()
    assert mode(key_file) == PRIVATE
