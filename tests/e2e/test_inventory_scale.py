"""The inventory over 100,000 stored certificates: caucased lists them all, page by page,
with a peak RSS within 20 MiB of its idle one, and "expiring within" is read from the
(notAfter, serial) index.

The rows are generated and inserted straight into the table before caucased starts
(signing 100,000 certificates would take minutes): the listing reads rows, not PEM."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from caucase.storage import Storage
from caucase.storage.inventory import Query, page_sql
from tests.e2e.helpers import caucase
from tests.support.servers import OUR_BIN, RunningServer, make_user, start_caucased

ROWS = 100_000
DAY = 86400
MIB = 1024 * 1024


def _rows(now: int, rng: random.Random) -> Iterator[tuple[object, ...]]:
    """Certificates issued over the last 300 days, 93-day lives: some expired, some soon
    to expire; one in 50 revoked."""
    serials = {rng.getrandbits(150) | 1 << 150 for _ in range(ROWS)}
    assert len(serials) == ROWS
    approvals = ("auto", "user", "renewed", "acme", "unknown")
    for number, serial in enumerate(serials):
        not_before = now - (number * 300 * DAY) // ROWS
        yield (
            str(serial),
            not_before,
            not_before + 93 * DAY,
            f"CN=host{number}.example,O=Load test",
            json.dumps([f"DNS:host{number}.example"]),
            "RSA-2048",
            approvals[number % 5],
            not_before + DAY if number % 50 == 0 else None,
        )


def _memory(pid: int, field: str) -> int:
    """A /proc/PID/status size (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def filled(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, int, Path]]:
    """caucased on a database whose CAS inventory holds ROWS certificates; when they were
    generated, and a user credential."""
    workdir = tmp_path_factory.mktemp("scale")
    db = workdir / "caucase.sqlite"
    Storage(str(db), "cas").close()
    now = int(time.time())
    connection = sqlite3.connect(db)
    try:
        with connection:
            connection.executemany(
                "INSERT INTO cas_inventory VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                _rows(now, random.Random(13)),
            )
    finally:
        connection.close()
    server = start_caucased([OUR_BIN / "caucased"], workdir)
    yield server, now, make_user(server, workdir / "user.pem", "admin")
    server.stop()


def test_listing_100000_certificates_streams(
    filled: tuple[RunningServer, int, Path], tmp_path: Path
) -> None:
    server, _, user = filled
    warm = caucase(
        server, tmp_path, "--user-key", str(user), "--list-crt", "--subject-match", "host1."
    )
    assert warm.returncode == 0, warm
    pid = server.process.pid
    idle = _memory(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM restarts from VmRSS

    started = time.monotonic()
    result = caucase(server, tmp_path, "--user-key", str(user), "--list-crt", "--json")
    elapsed = time.monotonic() - started
    peak = _memory(pid, "VmHWM")

    assert result.returncode == 0, result.stderr
    serials = [json.loads(line)["serial"] for line in result.stdout.splitlines()]
    assert len(serials) == len(set(serials)) == ROWS  # the user's certificate is on the CAU
    print(f"listed {ROWS} in {elapsed:.1f} s; idle RSS {idle / MIB:.1f} MiB, peak "
          f"{peak / MIB:.1f} MiB (+{(peak - idle) / MIB:.1f} MiB)")  # fmt: skip
    assert peak - idle < 20 * MIB, (idle, peak)


def test_expiring_within_is_read_from_the_index(
    filled: tuple[RunningServer, int, Path], tmp_path: Path
) -> None:
    server, now, user = filled
    result = caucase(
        server,
        tmp_path,
        "--user-key",
        str(user),
        "--list-crt",
        "--json",
        "--expiring-within",
        "10",
    )
    assert result.returncode == 0, result.stderr
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    connection = sqlite3.connect(f"file:{server.workdir / 'caucase.sqlite'}?mode=ro", uri=True)
    try:
        (expected,) = connection.execute(
            "SELECT COUNT(*) FROM cas_inventory WHERE not_after >= ? AND not_after <= ?",
            (now, now + 10 * DAY),
        ).fetchone()
        sql, parameters = page_sql("cas", Query(expiring_within=10 * DAY, limit=1000), now)
        plan = [row[-1] for row in connection.execute("EXPLAIN QUERY PLAN " + sql, parameters)]
    finally:
        connection.close()
    assert 0 < expected < ROWS // 10
    assert abs(len(listed) - expected) <= 5  # a few may have expired between the two reads
    assert plan[0].startswith("SEARCH i USING INDEX cas_inventory_not_after ("), plan
    assert not any("SCAN" in step or "TEMP B-TREE" in step for step in plan), plan
