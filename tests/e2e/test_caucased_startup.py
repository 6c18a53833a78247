"""caucased's start-up as a real process: it binds before creating anything, says
`Listening` only once it listens, fails in one line, and documents its options."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from caucase import __version__
from tests.conftest import REFERENCE_VERSION
from tests.e2e.helpers import CAUCASED, MANAGE
from tests.support.servers import RunningServer, free_port_pair, request
from tests.support.wait import poll


def run_caucased(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CAUCASED, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def state_args(state: Path, port: int) -> list[str]:
    """Every file caucased writes, inside `state`."""
    return [
        "--db",
        str(state / "caucase.sqlite"),
        "--server-key",
        str(state / "server.key.pem"),
        "--cors-key-store",
        str(state / "cors.key"),
        "--netloc",
        f"127.0.0.1:{port}",
    ]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    if status == 1:
        assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.splitlines()[-1]


@pytest.mark.parametrize("busy", ["http", "https"])
def test_a_busy_port_creates_nothing(state: Path, tmp_path: Path, busy: str) -> None:
    port = free_port_pair()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port if busy == "http" else port + 1))
        squatter.listen()
        result = run_caucased(state_args(state, port), tmp_path)
    line = assert_one_line_error(result)
    assert line.startswith("caucased: error: cannot listen on [127.0.0.1]:")
    assert "Listening" not in result.stderr
    assert list(state.iterdir()) == []
    assert [path.name for path in tmp_path.iterdir()] == ["state"]


def test_an_unusable_database_leaves_no_server_key(state: Path, tmp_path: Path) -> None:
    (state / "caucase.sqlite").write_bytes(b"not a database, but someone's file" * 100)
    result = run_caucased(state_args(state, free_port_pair()), tmp_path)
    assert assert_one_line_error(result).startswith("caucased: error: ")
    assert "Listening" not in result.stderr
    assert sorted(path.name for path in state.iterdir()) == ["caucase.sqlite"]


def test_a_missing_state_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = run_caucased(state_args(tmp_path / "missing", free_port_pair()), tmp_path)
    line = assert_one_line_error(result, status=2)
    assert "does not exist" in line
    assert list(tmp_path.iterdir()) == []


def test_listening_is_said_once_every_port_answers(state: Path, tmp_path: Path) -> None:
    port = free_port_pair()
    with (tmp_path / "caucased.err").open("wb") as stderr:
        process = subprocess.Popen(
            [*CAUCASED, *state_args(state, port)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    running = RunningServer(process, tmp_path, port)
    try:
        line = poll(lambda: re.search(r"^Listening on .*$", running.stderr(), re.M), "Listening")
        assert line.group(0) == f"Listening on [127.0.0.1]:{port}-{port + 1}"
        assert (state / "caucase.sqlite").exists() and (state / "server.key.pem").exists()
        assert request(running, "GET", "/cas/crt/ca.crt.pem")[0] == 200
        assert request(running, "GET", "/cas/crt/ca.crt.pem", https=True)[0] == 200
    finally:
        assert running.stop() == 0


def _option_help(text: str) -> dict[str, str]:
    """Each option of an argparse --help text: its heading (`--key-len BITLENGTH`) and
    its description, joined on one line."""
    options: dict[str, str] = {}
    current = ""
    for line in text.split("\n\n", 1)[1].splitlines():
        match = re.match(r"  (--[\w-]+)(.*)", line)
        if match:
            current = match.group(1)
            heading, _, description = line.strip().partition("  ")
            options[current] = heading + "\n" + description.strip()
        elif current and line.startswith("    "):
            options[current] += " " + line.strip()
        else:
            current = ""
    return options


def _help(command: str) -> dict[str, str]:
    result = subprocess.run(
        [command, "-h"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode == 0, result.stderr
    return _option_help(result.stdout)


# Options naming an action or a flag: they have no default to show.
NO_DEFAULT = {
    "--help",
    "--version",
    "--lock-auto-approve-count",
    "--netloc",
    "--restore-backup",
    "--import-ca",
    "--import-bad-ca",
    "--import-crl",
    "--export-ca",
    "--verify-audit-log",
    "--renew-ca",
    "--copy-to",
}


@pytest.mark.parametrize("command", [CAUCASED[0], MANAGE])
def test_help_shows_every_default(command: str) -> None:
    options = _help(command)
    missing = [
        option
        for option, text in options.items()
        if option not in NO_DEFAULT and "(default: " not in text
    ]
    assert missing == []


def test_help_gives_units() -> None:
    options = _help(CAUCASED[0])
    for option in ("--threshold", "--service-crt-validity", "--user-crt-validity"):
        assert "days)" in options[option], option
    assert "bits)" in options["--key-len"]
    assert "1 day)" in options["--backup-period"]
    assert "(required)" in options["--netloc"]


@pytest.mark.interop
@pytest.mark.parametrize("name", ["caucased", "caucased-manage"])
def test_help_uses_the_reference_metavars(name: str, reference_bin: Path) -> None:
    ours = {
        option: text.split("\n")[0]
        for option, text in _help(str(Path(MANAGE).parent / name)).items()
    }
    theirs = {
        option: text.split("\n")[0] for option, text in _help(str(reference_bin / name)).items()
    }
    assert {option: ours.get(option) for option in theirs} == theirs


def test_version_is_our_own(tmp_path: Path) -> None:
    result = run_caucased(["--version"], tmp_path)
    assert (result.returncode, result.stdout) == (0, __version__ + "\n")
    assert __version__ != REFERENCE_VERSION
