"""caucased's main loop survives database failures in its tasks: own-certificate renewal
and CA list refresh log one line and try again a minute later (the backup task is
covered by tests/test_backup_schedule.py and tests/e2e/test_caucased_startup.py)."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from caucase.cli import server
from caucase.http.tls import ServerIdentity
from caucase.main_loop import TASK_RETRY, MainLoop
from tests.conftest import FakeClock


@pytest.fixture
def identity(tmp_path: Path, clock: FakeClock) -> ServerIdentity:
    """caucased's own HTTPS identity over a fresh database, as its start-up makes it.

    Service certificates (the HTTPS one among them) live 400 days, user ones 93: the CAU
    CA rolls over after 186 days, before the HTTPS certificate is due."""
    parser = server.build_parser()
    args = parser.parse_args(
        [
            "--netloc",
            "127.0.0.1:8000",
            "--db",
            str(tmp_path / "caucase.sqlite"),
            "--server-key",
            str(tmp_path / "server.key.pem"),
            "--service-crt-validity",
            "400",
        ]
    )
    endpoint = server.parse_endpoint(parser, args)
    authorities = server.open_authorities(args, endpoint, clock)
    identity = ServerIdentity(
        args.server_key,
        authorities.http_cas,
        authorities.cau,
        endpoint.host,
        authorities.key_spec,
        31,
        clock,
    )
    identity.prepare()
    identity.make_context()
    return identity


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another program's connection to the database, breaking it under the server."""
    connection = sqlite3.connect(tmp_path / "caucase.sqlite", isolation_level=None)
    yield connection
    connection.close()


def test_a_failed_ca_list_refresh_is_logged_and_retried(
    identity: ServerIdentity,
    outside: sqlite3.Connection,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loop = MainLoop(identity, [], None, clock)
    assert len(identity.trusted_user_cas) == 1
    outside.execute("ALTER TABLE cauca RENAME TO cauca_away")
    now = clock.advance(days=187)
    loop.run_due(now)
    err = capsys.readouterr().err
    assert err.startswith("CA list refresh failed: ") and err.endswith("; retrying in 60 s\n")
    assert err.count("\n") == 1
    assert loop.next_deadline() == now + TASK_RETRY
    outside.execute("ALTER TABLE cauca_away RENAME TO cauca")
    loop.run_due(clock.advance(seconds=60))
    assert capsys.readouterr().err == ""
    assert len(identity.trusted_user_cas) == 2


def test_a_failed_certificate_renewal_is_logged_and_retried(
    identity: ServerIdentity,
    outside: sqlite3.Connection,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loop = MainLoop(identity, [], None, clock)
    key_file = tmp_path / "server.key.pem"
    original = key_file.read_bytes()
    outside.execute("ALTER TABLE http_cascrt RENAME TO http_cascrt_away")
    now = clock.advance(days=370)
    assert now >= identity.renewal_due
    loop.run_due(now)
    err = capsys.readouterr().err
    assert err.startswith("HTTPS certificate renewal failed: ")
    assert err.endswith("; retrying in 60 s\n") and err.count("\n") == 1
    assert loop.next_deadline() == now + TASK_RETRY
    assert key_file.read_bytes() == original
    outside.execute("ALTER TABLE http_cascrt_away RENAME TO http_cascrt")
    later = clock.advance(seconds=60)
    loop.run_due(later)
    assert capsys.readouterr().err == ""
    assert key_file.read_bytes() != original
    assert identity.renewal_due > later + datetime.timedelta(days=300)
