"""The hash-chained audit log: line format, durability, rotation, tamper detection."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from caucase.audit import (
    EVENTS,
    GENESIS,
    AuditEvent,
    AuditLog,
    AuditLogError,
    event,
    seal,
    verify_audit_log,
)
from tests.conftest import ROOT, FakeClock
from tests.support.servers import OUR_BIN


def rejected(csr_id: int) -> AuditEvent:
    return event(
        "csr-rejected",
        authority="cas",
        csr_id=str(csr_id),
        by_serial="1234",
        by_subject="CN=admin",
    )


def write_log(path: Path, count: int, clock: FakeClock | None = None) -> list[bytes]:
    """A closed log of `count` events; its lines (opened, events, closed)."""
    log = AuditLog(str(path), clock or FakeClock())
    for number in range(count):
        log.write(rejected(number))
    log.close()
    return path.read_bytes().splitlines(keepends=True)


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_each_line_names_the_hash_of_the_line_before(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_log(path, 3)
    lines = records(path)
    assert [line["event"] for line in lines] == [
        "audit-log-opened",
        "csr-rejected",
        "csr-rejected",
        "csr-rejected",
        "audit-log-closed",
    ]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5]
    assert lines[0]["prev"] == GENESIS and lines[0]["reason"] == "start"
    for before, after in zip(lines, lines[1:]):
        assert after["prev"] == before["sha256"]
    assert lines[1]["time"] == "2026-11-27T12:00:00.000000Z"
    assert lines[1]["by_subject"] == "CN=admin"
    result = verify_audit_log([str(path)])
    assert result.ok and result.lines == 5 and result.last_sha256 == lines[-1]["sha256"]


def test_line_hash_covers_everything_but_itself(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_log(path, 1)
    line = records(path)[1]
    digest = line.pop("sha256")
    assert seal(line)[1] == digest


def test_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        write_log(tmp_path / "new.log", 1)
        existing = tmp_path / "existing.log"
        existing.touch(mode=0o644)
        write_log(existing, 1)
    finally:
        os.umask(old_umask)
    for path in (tmp_path / "new.log", existing):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_events_follow_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        event("csr-eaten", authority="cas")
    with pytest.raises(ValueError, match="takes"):
        event("csr-rejected", authority="cas", csr_id="1")
    assert all(name == name.lower() for name in EVENTS)


def test_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_log(path, 2)
    write_log(path, 2)
    lines = records(path)
    assert [line["seq"] for line in lines] == list(range(1, 9))
    assert lines[4]["event"] == "audit-log-opened" and lines[4]["reason"] == "start"
    assert verify_audit_log([str(path)]).ok


def test_second_writer_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    try:
        with pytest.raises(AuditLogError, match="in use by another process"):
            AuditLog(path)
    finally:
        log.close()


def test_unusable_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuditLogError, match="No such file or directory"):
        AuditLog(str(tmp_path / "missing" / "audit.log"))


def test_writes_after_close_fail(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "audit.log"))
    log.close()
    with pytest.raises(AuditLogError, match="closed"):
        log.write(rejected(1))


def test_torn_last_line_is_removed_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_log(path, 2)
    with open(path, "ab") as out:
        out.write(b'{"seq":6,"ti')
    assert not verify_audit_log([str(path)]).ok
    write_log(path, 1)
    lines = records(path)
    assert lines[4]["event"] == "audit-log-opened" and lines[4]["discarded_bytes"] == 12
    assert verify_audit_log([str(path)]).ok


def test_corrupt_last_line_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_log(path, 1)
    with open(path, "ab") as out:
        out.write(b"garbage\n")
    with pytest.raises(AuditLogError, match="last line is not an audit line"):
        AuditLog(str(path))


# Tampering: every kind of change shows at the line it touches.

LINES = 6  # opened, four events, closed


def _tamper_cases() -> list[tuple[str, int]]:
    cases = [("edit", index) for index in range(LINES)]
    cases += [("delete", index) for index in range(LINES - 1)]
    cases += [("swap", index) for index in range(LINES - 1)]
    return cases


@pytest.mark.parametrize(("change", "index"), _tamper_cases())
def test_tampering_is_detected_at_that_line(tmp_path: Path, change: str, index: int) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, LINES - 2)
    if change == "edit":
        lines[index] = lines[index].replace(b'"seq":', b'"seq": ', 1)
    elif change == "delete":
        del lines[index]
    else:
        lines[index], lines[index + 1] = lines[index + 1], lines[index]
    path.write_bytes(b"".join(lines))
    result = verify_audit_log([str(path)])
    assert not result.ok
    assert (result.path, result.line) == (str(path), index + 1), result.describe()


@pytest.mark.parametrize("index", range(1, LINES - 1))
def test_resealed_edit_is_detected_at_the_next_line(tmp_path: Path, index: int) -> None:
    """An editor who recomputes the edited line's own hash still breaks the next link."""
    path = tmp_path / "audit.log"
    lines = write_log(path, LINES - 2)
    record = json.loads(lines[index])
    del record["sha256"]
    record["by_subject"] = "CN=someone else"
    lines[index] = seal(record)[0]
    path.write_bytes(b"".join(lines))
    result = verify_audit_log([str(path)])
    assert not result.ok and result.line == index + 2
    assert "hash of the line before" in result.reason


def test_cutting_the_newest_line_moves_the_reported_head(tmp_path: Path) -> None:
    """The one change the file alone cannot show: the head to compare with elsewhere."""
    path = tmp_path / "audit.log"
    lines = write_log(path, 2)
    head = verify_audit_log([str(path)]).last_sha256
    path.write_bytes(b"".join(lines[:-1]))
    result = verify_audit_log([str(path)])
    assert result.ok and result.last_sha256 != head


def test_truncated_line_and_garbage_are_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 2)
    path.write_bytes(b"".join(lines)[:-10])
    result = verify_audit_log([str(path)])
    assert (result.line, result.reason) == (4, "incomplete line (no newline at its end)")
    path.write_bytes(b"hello\n")
    assert verify_audit_log([str(path)]).describe() == (
        f"{path}:1: not an audit line (no sha256 member at its end)"
    )
    path.write_bytes(b"")
    assert verify_audit_log([str(path)]).describe() == f"{path}:1: empty file"
    missing = verify_audit_log([str(tmp_path / "missing.log")])
    assert not missing.ok and missing.describe().endswith("No such file or directory")


# Rotation


def test_rename_and_reopen_keeps_the_chain_across_files(tmp_path: Path) -> None:
    path, rotated = tmp_path / "audit.log", tmp_path / "audit.log.1"
    log = AuditLog(str(path))
    log.write(rejected(1))
    os.rename(path, rotated)
    log.write(rejected(2))  # still to the renamed file
    log.reopen()
    log.write(rejected(3))
    log.close()
    first = records(path)[0]
    assert first["event"] == "audit-log-opened" and first["reason"] == "reopen"
    assert first["prev"] == records(rotated)[-1]["sha256"]
    assert verify_audit_log([str(rotated), str(path)]).ok
    assert verify_audit_log([str(path)]).ok
    wrong_order = verify_audit_log([str(path), str(rotated)])
    assert not wrong_order.ok and (wrong_order.path, wrong_order.line) == (str(rotated), 1)


def test_copytruncate_is_noticed_and_the_chain_kept(tmp_path: Path) -> None:
    path, rotated = tmp_path / "audit.log", tmp_path / "audit.log.1"
    log = AuditLog(str(path))
    log.write(rejected(1))
    shutil.copyfile(path, rotated)
    os.truncate(path, 0)
    log.write(rejected(2))
    log.close()
    lines = records(path)
    assert lines[0]["event"] == "audit-log-opened" and lines[0]["reason"] == "truncated"
    assert verify_audit_log([str(rotated), str(path)]).ok


def test_lines_lost_by_copytruncate_show_as_a_gap(tmp_path: Path) -> None:
    path, rotated = tmp_path / "audit.log", tmp_path / "audit.log.1"
    log = AuditLog(str(path))
    log.write(rejected(1))
    shutil.copyfile(path, rotated)
    log.write(rejected(2))  # between logrotate's copy and truncation
    os.truncate(path, 0)
    log.write(rejected(3))
    log.close()
    result = verify_audit_log([str(rotated), str(path)])
    assert not result.ok and (result.path, result.line) == (str(path), 1)


# Concurrency and crashes


def test_concurrent_writers_get_one_line_each_and_share_fsyncs(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    threads, per_thread = 32, 40
    acknowledged: list[int] = []
    start = threading.Barrier(threads)

    def writer(worker: int) -> None:
        start.wait()
        for number in range(per_thread):
            acknowledged.append(log.write(rejected(worker * 1000 + number)))

    workers = [threading.Thread(target=writer, args=(index,)) for index in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    syncs = log.sync_count
    log.close()
    lines = records(path)
    assert len(lines) == threads * per_thread + 2
    assert sorted(acknowledged) == list(range(2, threads * per_thread + 2))
    ids = sorted(int(str(line["csr_id"])) for line in lines if line["event"] == "csr-rejected")
    assert ids == sorted(w * 1000 + n for w in range(threads) for n in range(per_thread))
    assert verify_audit_log([str(path)]).ok
    assert syncs < threads * per_thread


_WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from caucase.audit import AuditLog, event
    log = AuditLog(sys.argv[1])
    lock = threading.Lock()
    def work(worker):
        for number in range(100000):
            seq = log.write(event("csr-rejected", authority="cas", csr_id=str(number),
                                  by_serial=str(worker), by_subject="CN=load"))
            with lock:
                sys.stdout.write(f"{seq}\\n")
                sys.stdout.flush()
    for worker in range(8):
        threading.Thread(target=work, args=(worker,), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.slow
def test_kill_9_under_load_leaves_no_acknowledged_line_unlogged(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER_SCRIPT, str(path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    acknowledged = []
    try:
        while len(acknowledged) < 500:
            line = process.stdout.readline()
            assert line, "writer died"
            acknowledged.append(int(line))
        process.send_signal(signal.SIGKILL)
        acknowledged += [int(line) for line in process.stdout.read().split()]
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    logged = {line["seq"] for line in records(path)}
    assert set(acknowledged) <= logged
    assert verify_audit_log([str(path)]).ok
    write_log(path, 1)
    assert verify_audit_log([str(path)]).ok


_FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import resource, signal, sys
    from caucase.audit import AuditLog, AuditLogError, event
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))
    log = AuditLog(sys.argv[1])
    written = 0
    try:
        while True:
            log.write(event("csr-rejected", authority="cas", csr_id=str(written),
                            by_serial="1", by_subject="CN=full"))
            written += 1
    except AuditLogError as error:
        print(written, error)
    try:
        log.write(event("audit-log-closed"))
    except AuditLogError as error:
        print("again:", error)
    """
)


def test_a_failed_write_fails_every_later_write_and_is_repaired_on_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    result = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    written, message = result.stdout.splitlines()[0].split(" ", 1)
    assert "audit log write failed: File too large" in message
    assert result.stdout.splitlines()[1].startswith("again: ")
    assert not path.read_bytes().endswith(b"\n")  # a line cut at the size limit
    write_log(path, 1)
    lines = records(path)
    assert lines[int(written) + 1]["discarded_bytes"] > 0
    assert verify_audit_log([str(path)]).ok


def test_manage_verifies_the_chain_and_names_the_first_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = write_log(path, 3)
    manage = [str(OUR_BIN / "caucased-manage"), "--verify-audit-log", str(path)]
    intact = subprocess.run(manage, capture_output=True, text=True)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("5 lines, chain intact, last sha256 ")
    del lines[2]
    path.write_bytes(b"".join(lines))
    broken = subprocess.run(manage, capture_output=True, text=True)
    assert broken.returncode == 1
    assert broken.stderr == (
        f"caucased-manage: error: {path}:3: seq 4 follows 2: lines removed, added or reordered\n"
    )
