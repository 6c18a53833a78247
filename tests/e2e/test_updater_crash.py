"""kill -9 of caucase-updater right after each file it replaces during a renewal pass, its
status file included: the old pair or the new pair is left, and the next start goes on."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import OUR_BIN, RunningServer, start_caucased
from tests.support.updaters import UPDATER
from tests.support.wait import poll
from tests.test_concurrency import ca_certificate
from tests.test_crash_safety import (
    UPDATER_SERVER_ARGS,
    PairChecker,
    _client_files,
    run_killed_after_replacing,
)

STORES = ["--cas-ca", "cas.crt.pem", "--ca", "cas.crt.pem", "--crl", "cas.crl.pem"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_caucased([OUR_BIN / "caucased"], tmp_path / "server", UPDATER_SERVER_ARGS)
    yield running
    running.stop()


@pytest.mark.parametrize("point", ["status", "pending key", "certificate", "key"])
def test_a_kill_after_any_write_of_a_pass_leaves_a_pair(
    server: RunningServer, tmp_path: Path, point: str
) -> None:
    workdir = tmp_path / "client"
    files, options = _client_files(workdir, "separate")
    # Every start renews at once (86 s certificates, a 78 s threshold): the first run
    # bootstraps and renews; it is killed after its status file is first replaced.
    args = [
        *("--ca-url", server.http_url, *STORES, *options, "--csr", "svc.csr"),
        *("--threshold", "0.0009", "--status", "status.json"),
    ]
    run_killed_after_replacing("caucase.cli.updater", workdir / "status.json", args, workdir)
    checker = PairChecker(files, ca_certificate(server))
    checker.check()
    assert files.key is not None and files.pending is not None
    target = {
        "status": workdir / "status.json",
        "pending key": files.pending,
        "certificate": files.crt,
        "key": files.key,
    }[point]

    run_killed_after_replacing("caucase.cli.updater", target, args, workdir)
    checker.check()
    # The next start recovers (or finishes) the interrupted renewal, renews, and reports.
    status = _run_until_renewed(args, workdir)
    checker.check()

    assert not files.pending.exists()
    assert status["last_error"] is None
    assert checker.outcomes["new pair"] >= 2


def _run_until_renewed(args: list[str], workdir: Path) -> dict[str, object]:
    """An updater run to its first renewal (told by its status file), then stopped."""
    status_path = workdir / "status.json"
    status_path.unlink()
    process = subprocess.Popen(
        [str(UPDATER), *args], cwd=workdir, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        status: dict[str, object] = poll(
            lambda: (
                status_path.exists()
                and (document := json.loads(status_path.read_text()))["last_renewal"]
                and document
            ),
            "a renewal in the status file",
            process=process,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    return status
