"""A real PostgreSQL server for the tests: Debian's binaries, started with initdb and pg_ctl
in a temporary directory, reached on a Unix socket there, stopped at the end.

initdb refuses to run as root: as root the server runs as the `postgres` account (made by
Debian's postgresql package), else as the current user. Local connections are trusted
(the socket directory is private to the test run), so URLs carry no password. One server
per test session; each test gets a fresh database (`PostgresServer.new_database`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.wait import poll

SUPERUSER = "caucase"
STARTUP_TIMEOUT = 60.0
# Tests open many connections (three caucased nodes, each with its pool, plus clients).
SERVER_SETTINGS = {
    "max_connections": "300",
    "shared_buffers": "32MB",
    "listen_addresses": "''",
    "unix_socket_permissions": "0777",
    "log_min_messages": "warning",
}


def binary(name: str) -> str:
    """The newest installed PostgreSQL's `name` (Debian keeps them off PATH)."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parent.parent.name.split(".")[0]),
    )
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} not found: install the postgresql package")
    return found


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: `postgres` when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    account = pwd.getpwnam("postgres")
    return account.pw_uid, account.pw_gid


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, reached by its Unix socket."""

    def __init__(self) -> None:
        self._account = _server_account()
        self.directory = Path(tempfile.mkdtemp(prefix="caucase-pg-"))
        self.data = self.directory / "data"
        self.socket_directory = self.directory / "socket"
        self._counter = 0
        self._lock = threading.Lock()
        self._started = False
        for path in (self.directory, self.socket_directory):
            path.mkdir(exist_ok=True)
            self._give(path)
        self.directory.chmod(0o755)

    def _give(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, *self._account)

    def _run_as_server(
        self, args: Sequence[str], **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._account is not None:
            uid, gid = self._account
            command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command]
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            command,
            capture_output=True,
            text=True,
            check=True,
            cwd=self.directory,
            **kwargs,
        )

    def start(self) -> None:
        if not self.data.exists():
            self._run_as_server(
                [
                    binary("initdb"),
                    "--pgdata", str(self.data),
                    "--username", SUPERUSER,
                    "--auth", "trust",
                    "--encoding", "UTF8",
                    "--locale", "C",
                    "--no-sync",
                ]
            )  # fmt: skip
        options = " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
        options += f" -c unix_socket_directories={self.socket_directory}"
        self._run_as_server(
            [
                binary("pg_ctl"),
                "--pgdata", str(self.data),
                "--log", str(self.directory / "server.log"),
                "--options", options,
                "--wait",
                "--timeout", str(int(STARTUP_TIMEOUT)),
                "start",
            ]
        )  # fmt: skip
        self._started = True
        poll(self.accepts, "PostgreSQL to accept connections", STARTUP_TIMEOUT)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` is a crash: no shutdown checkpoint)."""
        if self._started:
            self._run_as_server(
                [binary("pg_ctl"), "--pgdata", str(self.data), "--mode", mode, "--wait", "stop"]
            )
            self._started = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster: its children exit as they notice (a crash)."""
        pid_file = self.data / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def accepts(self) -> bool:
        result = subprocess.run(
            [binary("pg_isready"), "--host", str(self.socket_directory), "--dbname", "postgres"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def url(self, database: str) -> str:
        """The libpq URL of `database`, over the Unix socket."""
        host = urllib.parse.quote(str(self.socket_directory), safe="")
        return f"postgresql://{SUPERUSER}@{host}/{database}"

    def admin(self, statement: str) -> None:
        """One statement on the maintenance database, outside any transaction."""
        subprocess.run(
            [
                binary("psql"),
                "--no-psqlrc",
                "--quiet",
                "--set", "ON_ERROR_STOP=1",
                "--dbname", self.url("postgres"),
                "--command", statement,
            ],
            capture_output=True,
            text=True,
            check=True,
        )  # fmt: skip

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        with self._lock:
            self._counter += 1
            name = f"test_{os.getpid()}_{self._counter}"
        self.admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = urllib.parse.urlsplit(url).path.lstrip("/")
        with contextlib.suppress(subprocess.CalledProcessError):
            self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
