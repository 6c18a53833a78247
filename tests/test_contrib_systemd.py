"""The systemd units of contrib/systemd: systemd itself accepts them, and the updater's
command line, expanded from the example configuration as systemd expands it, runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    accepts,
    free_port_pair,
    start_caucased,
)
from tests.support.updaters import write_key_and_csr
from tests.support.wait import poll

UNITS = ROOT / "contrib" / "systemd"


def _installed(unit: str, tmp_path: Path, instance: str = "") -> Path:
    """The unit in `tmp_path`, its /usr/bin commands pointing at ours."""
    text = (UNITS / unit).read_text().replace("/usr/bin/", f"{OUR_BIN}/")
    target = tmp_path / unit.replace("@.", f"@{instance}.")
    target.write_text(text)
    return target


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: run tests/system-deps.sh"
    units = [
        _installed("caucased.service", tmp_path),
        _installed("caucase-updater@.service", tmp_path, "web"),
    ]
    result = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _exec_start(unit: Path) -> list[str]:
    """ExecStart= as words: continuation lines joined, unquoted (the units quote nothing)."""
    text = unit.read_text().replace("\\\n", " ")
    (line,) = re.findall(r"^ExecStart=(.*)$", text, re.MULTILINE)
    return line.split()


def _expand(words: list[str], environment: dict[str, str], instance: str) -> list[str]:
    """systemd's expansion: ${NAME} is one argument (maybe empty), $NAME is split on
    spaces, %i is the instance name."""
    argv: list[str] = []
    for word in words:
        braced = re.fullmatch(r"\$\{(\w+)\}", word)
        bare = re.fullmatch(r"\$(\w+)", word)
        if braced:
            argv.append(environment.get(braced.group(1), ""))
        elif bare:
            argv.extend(environment.get(bare.group(1), "").split())
        else:
            argv.append(word.replace("%i", instance))
    return argv


def _configuration(example: Path, values: dict[str, str]) -> dict[str, str]:
    """The example EnvironmentFile, with `values` replacing its own."""
    environment = {}
    for line in example.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            environment[name] = value
    assert set(values) <= set(environment), "the test sets a variable the example lacks"
    return {**environment, **values}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_caucased(
        [OUR_BIN / "caucased"], tmp_path / "server", ["--service-auto-approve-count", "1"]
    )
    yield running
    running.stop()


def test_the_updater_unit_runs_as_its_example_configures_it(
    server: RunningServer, tmp_path: Path
) -> None:
    write_key_and_csr(tmp_path)
    environment = _configuration(
        UNITS / "caucase-updater.conf.example",
        {
            "CA_URL": server.http_url,
            "CAS_CA": str(tmp_path / "cas.crt.pem"),
            "CA": str(tmp_path / "cas.crt.pem"),
            "CRL": str(tmp_path / "cas.crl.pem"),
            "CRT": str(tmp_path / "svc.crt"),
            "KEY": str(tmp_path / "svc.key"),
            "CSR": str(tmp_path / "svc.csr"),
            "ON_RENEW": f"echo renewed > {tmp_path / 'hook.log'}",
            "UPDATER_OPTIONS": "--threshold 31 --key-type ec-p256",
        },
    )
    unit = _installed("caucase-updater@.service", tmp_path, "web")
    argv = [
        word.replace("/run/caucase-updater", str(tmp_path))
        for word in _expand(_exec_start(unit), environment, "web")
    ]
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(30)
        process = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env={**os.environ, "NOTIFY_SOCKET": address},
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert listener.recv(4096) == b"READY=1\nSTATUS=starting"
            poll(lambda: (tmp_path / "hook.log").exists(), "the hook", process=process)
            assert (tmp_path / "web.json").exists()
            process.send_signal(signal.SIGHUP)  # ExecReload: a check now, not an exit
            assert listener.recv(4096).startswith(b"STATUS=")
            assert process.poll() is None
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
    assert (tmp_path / "hook.log").read_text() == "renewed\n"


def test_the_caucased_unit_runs_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port_pair()
    unit = _installed("caucased.service", tmp_path)
    environment = {"CAUCASED_NETLOC": f"127.0.0.1:{port}", "CAUCASED_OPTIONS": "--threshold 31"}
    argv = [
        word.replace("/var/lib/caucase", str(tmp_path))
        for word in _expand(_exec_start(unit), environment, "")
    ]
    with open(tmp_path / "caucased.err", "wb") as err:
        process = subprocess.Popen(argv, cwd=tmp_path, stderr=err, stdin=subprocess.DEVNULL)
    try:
        poll(lambda: accepts("127.0.0.1", port), "caucased to listen", process=process)
        assert (tmp_path / "caucase.sqlite").exists()
    finally:
        process.send_signal(signal.SIGTERM)  # KillSignal=
        assert process.wait(30) == 0
