"""The tamper-evident audit log: one JSON object per line, each chained to the line before.

A line is ``{"seq":N,"time":T,"event":E,<fields of E>,"prev":P,"sha256":H}`` where H is the
SHA-256 of the line's text without its ``,"sha256":...`` member (``{...,"prev":P}``) and P is
the H of the line before it. ``seq`` counts every line of the chain, across files. Removing,
inserting, reordering or editing a line therefore shows at that line: its own hash no longer
matches, its ``seq`` does not follow, or it does not name the hash of the line before. Only
the newest line can be cut silently; anchor the head elsewhere (the verifier prints it).

Every file starts with an ``audit-log-opened`` line naming the hash of the line before it,
in this file (a restart) or in the previous file (a rotation), so a chain verifies across
rotated files. Rotation: rename the file and send SIGHUP (``AuditLog.reopen``), or let
logrotate ``copytruncate`` it, which the writer notices at its next line (lines written
between logrotate's copy and its truncation are lost: that gap shows in the verification).

``AuditLog.write`` returns only once its lines are on disk (fdatasync: an append's new
size is flushed with the data; its mtime need not be). Concurrent writers
share fsyncs: while one thread syncs, the others append their lines, and the next sync
covers them all, as ``caucase.storage.group_commit`` shares database commits.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Union

from caucase.clock import Clock, utcnow
from caucase.exceptions import CaucaseError

JSONValue = Union[str, int, bool, None, Sequence[str]]

# Every event and its fields, beyond the common seq/time/event/prev/sha256. Serials and
# CSR ids are decimal strings (serials exceed what JSON numbers carry exactly); subjects
# are RFC 4514 strings; the "by_*" fields name the user certificate that authorised it.
EVENTS: Mapping[str, tuple[str, ...]] = {
    "audit-log-opened": ("reason", "discarded_bytes"),
    "audit-log-closed": (),
    "csr-received": ("authority", "csr_id", "subject", "sans", "key_type", "client"),
    "csr-auto-signed": ("authority", "csr_id", "serial", "subject"),
    "csr-signed": (
        "authority",
        "csr_id",
        "serial",
        "subject",
        "with_template",
        "by_serial",
        "by_subject",
    ),
    "csr-rejected": ("authority", "csr_id", "by_serial", "by_subject"),
    "crt-renewed": ("authority", "csr_id", "serial", "subject", "previous_serial"),
    "crt-revoked": ("authority", "serial", "subject", "method", "by_serial", "by_subject"),
    "ca-generated": ("authority", "serial", "subject", "not_after"),
    "backup-written": ("path", "recipients"),
    "database-restored": ("backup", "db"),
    "acme-issued": ("authority", "csr_id", "serial", "subject"),
    "acme-eab-minted": ("kid", "scope", "by_serial", "by_subject"),
    "acme-eab-revoked": ("kid", "by_serial", "by_subject"),
}
# Who revoked: the key holder (signed envelope), a user giving the certificate, a user
# giving only its serial, or caucased-manage --restore-backup revoking user certificates.
REVOKE_METHODS = ("key-holder", "user", "serial", "restore")
# Why a file gets an audit-log-opened line.
OPEN_REASONS = ("start", "reopen", "truncated")
GENESIS = "0" * 64
MAX_LINE = 1 << 20
_COMMON = ("seq", "time", "event", "prev")
_FIELDS = {name: frozenset(fields) for name, fields in EVENTS.items()}
# The one encoder of every line (json.dumps with these options would make one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)
_SEAL = re.compile(rb',"sha256":"([0-9a-f]{64})"\}\n\Z')
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class AuditLogError(CaucaseError):
    """The audit log cannot be written: the change it should record is not acknowledged."""


@dataclass(frozen=True)
class AuditEvent:
    """One change of state to record, checked against the vocabulary when made."""

    name: str
    fields: Mapping[str, JSONValue]

    def __post_init__(self) -> None:
        expected = _FIELDS.get(self.name)
        if expected is None:
            raise ValueError(f"unknown audit event {self.name!r}")
        if self.fields.keys() != expected:
            raise ValueError(
                f"audit event {self.name!r} takes {EVENTS[self.name]}, not {tuple(self.fields)}"
            )


def event(name: str, **fields: JSONValue) -> AuditEvent:
    """An audit event, e.g. ``event("csr-rejected", authority="cas", csr_id="12", ...)``."""
    return AuditEvent(name, fields)


def seal(record: Mapping[str, object]) -> tuple[bytes, str]:
    """The line of a record (without its sha256 member) and that line's hash."""
    body = _ENCODER.encode(record).encode("ascii")
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"sha256":"' + digest.encode("ascii") + b'"}\n', digest


@dataclass(frozen=True)
class ParsedLine:
    """A line whose own hash and shape are right; whether it chains is checked apart."""

    seq: int
    event: str
    prev: str
    sha256: str


def parse_line(line: bytes) -> ParsedLine | str:
    """The parsed line, or why it is not a well-formed, unaltered audit line."""
    if not line.endswith(b"\n"):
        return "incomplete line (no newline at its end)"
    match = _SEAL.search(line)
    if match is None:
        return "not an audit line (no sha256 member at its end)"
    body = line[: match.start()] + b"}"
    digest = match.group(1).decode("ascii")
    if hashlib.sha256(body).hexdigest() != digest:
        return "line altered: its sha256 does not match its content"
    try:
        record = json.loads(body.decode("ascii"))
    except ValueError:
        return "not a JSON object"
    if not isinstance(record, dict):
        return "not a JSON object"
    return _check_record(record, digest)


def _check_record(record: dict[str, object], digest: str) -> ParsedLine | str:
    name = record.get("event")
    if not isinstance(name, str) or name not in EVENTS:
        return f"unknown event {name!r}"
    if sorted(record) != sorted((*_COMMON, *EVENTS[name])):
        return f"fields do not match event {name!r}"
    seq, prev = record["seq"], record["prev"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return "seq is not a positive integer"
    if not isinstance(prev, str) or not _HEX64.match(prev):
        return "prev is not a SHA-256 hex digest"
    if not isinstance(record["time"], str):
        return "time is not a string"
    return ParsedLine(seq, name, prev, digest)


@dataclass(frozen=True)
class Verification:
    """Outcome of a chain check: ok, or the first bad line (path, 1-based number, why)."""

    ok: bool
    lines: int
    last_sha256: str
    path: str = ""
    line: int = 0
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"{self.lines} lines, chain intact, last sha256 {self.last_sha256}"
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"


def verify_audit_log(paths: Sequence[str]) -> Verification:
    """Check the chain of one audit log file, or of rotated files given oldest first."""
    count = 0
    last: ParsedLine | None = None
    for path in paths:
        try:
            with open(path, "rb") as stream:
                number = 0
                for number, line in enumerate(_lines(stream), 1):
                    checked = _check_line(line, last, number == 1)
                    if isinstance(checked, str):
                        return Verification(False, count, _head(last), path, number, checked)
                    last = checked
                    count += 1
            if number == 0:  # the writer starts every file with a line: all were removed
                return Verification(False, count, _head(last), path, 1, "empty file")
        except OSError as error:
            return Verification(False, count, _head(last), path, 0, error.strerror or str(error))
    return Verification(True, count, _head(last))


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines of at most MAX_LINE bytes (a longer one is cut, and so fails as incomplete)."""
    while line := stream.readline(MAX_LINE):
        yield line


def _check_line(line: bytes, last: ParsedLine | None, first_of_file: bool) -> ParsedLine | str:
    """The parsed line if it is sound and follows `last`, else why not."""
    parsed = parse_line(line)
    if isinstance(parsed, str):
        return parsed
    if first_of_file and parsed.event != "audit-log-opened":
        return "file does not start with an audit-log-opened line (lines removed before it)"
    if last is None:
        return parsed  # the start of what is given: its predecessor is not here to check
    if parsed.seq != last.seq + 1:
        return f"seq {parsed.seq} follows {last.seq}: lines removed, added or reordered"
    if parsed.prev != last.sha256:
        return "does not name the hash of the line before it (that line was rewritten)"
    return parsed


def _head(last: ParsedLine | None) -> str:
    return GENESIS if last is None else last.sha256


class AuditLog:
    """The audit log file of one caucased process: append-only, 0600, thread-safe.

    An exclusive lock on the open file keeps a second process from interleaving lines."""

    def __init__(self, path: str, clock: Clock = utcnow) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._synced = threading.Condition(self._lock)
        self._fd = -1
        self._end = 0
        self._seq = 0
        self._head = GENESIS
        self._durable = 0
        self._syncing = False
        self._broken: str | None = None
        self.sync_count = 0
        with self._lock:
            self._open("start")

    @property
    def path(self) -> str:
        return self._path

    def write(self, *events: AuditEvent) -> int:
        """Append the events' lines, in order; return the last seq once they are on disk."""
        with self._lock:
            self._check_usable()
            size = os.fstat(self._fd).st_size
            if size < self._end:  # copytruncate: the new file starts with an opened line
                self._end = size
                opened = event("audit-log-opened", reason="truncated", discarded_bytes=0)
                events = (opened, *events)
            self._append(*events)
            seq = self._seq
            self._wait_durable(seq)
            return seq

    def check(self) -> None:
        """Raise AuditLogError when a write would fail for a known reason (an earlier
        failure, not yet reopened; the log closed)."""
        with self._lock:
            self._check_usable()

    def reopen(self) -> None:
        """Close the file and open the path again (after a rename, on SIGHUP)."""
        with self._lock:
            self._release()
            self._broken = None
            try:
                self._open("reopen")
            except AuditLogError as error:
                self._broken = str(error)
                raise

    def close(self) -> None:
        """Write the audit-log-closed line and close the file; later writes fail."""
        with self._lock:
            if self._fd < 0:
                return
            try:
                if self._broken is None:
                    self._append(event("audit-log-closed"))
            finally:
                self._release()

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise AuditLogError(self._broken)
        if self._fd < 0:
            raise AuditLogError(f"{self._path}: audit log closed")

    def _open(self, reason: str) -> None:
        """Open and lock the file, continue its chain, and mark the start with an
        audit-log-opened line on disk before anything else is logged."""
        try:
            fd = _open_locked(self._path)
            try:
                discarded = self._continue_chain(fd)
            except BaseException:
                os.close(fd)
                raise
        except OSError as error:
            raise AuditLogError(f"{self._path}: {error.strerror or error}") from None
        self._fd = fd
        self._end = os.fstat(fd).st_size
        self._append(event("audit-log-opened", reason=reason, discarded_bytes=discarded))
        self._sync_now()

    def _continue_chain(self, fd: int) -> int:
        """Take the chain head from the file's last line, if any; a line cut short by a
        crash was never acknowledged: it is removed, and its length is logged."""
        size = os.fstat(fd).st_size
        tail = _read_tail(fd, size)
        cut = tail.rfind(b"\n") + 1
        discarded = len(tail) - cut
        if discarded:
            os.ftruncate(fd, size - discarded)
        last_line = tail[tail.rfind(b"\n", 0, cut - 1) + 1 : cut]
        if last_line:
            parsed = parse_line(last_line)
            if isinstance(parsed, str):
                raise AuditLogError(
                    f"{self._path}: last line is not an audit line ({parsed}); "
                    "check it with caucased-manage --verify-audit-log and move it aside"
                )
            self._seq, self._head = parsed.seq, parsed.sha256
            self._durable = max(self._durable, parsed.seq)
        return discarded

    def _append(self, *items: AuditEvent) -> None:
        """Write the items' lines in one write, stamped with one reading of the clock."""
        time = self._clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        seq, head, lines = self._seq, self._head, []
        for item in items:
            seq += 1
            record = {"seq": seq, "time": time, "event": item.name, **item.fields, "prev": head}
            line, head = seal(record)
            lines.append(line)
        data = b"".join(lines)
        try:
            _write_all(self._fd, data)
        except OSError as error:  # the chain goes on from the file's last line once reopened
            self._broken = f"{self._path}: audit log write failed: {error.strerror or error}"
            raise AuditLogError(self._broken) from None
        self._end += len(data)
        self._seq, self._head = seq, head

    def _wait_durable(self, seq: int) -> None:
        """Return once an fsync started after line `seq` was written has succeeded; the
        first writer to find no sync running runs one for every line written so far."""
        while self._durable < seq:
            if self._broken is not None:
                raise AuditLogError(self._broken)
            if self._syncing:
                self._synced.wait()
            else:
                self._sync_unlocked()

    def _sync_unlocked(self) -> None:
        self._syncing = True
        target, fd = self._seq, self._fd
        self._lock.release()
        error: OSError | None = None
        try:
            os.fdatasync(fd)
        except OSError as sync_error:
            error = sync_error
        finally:
            self._lock.acquire()
            self._syncing = False
            self._synced_through(target, error)

    def _sync_now(self) -> None:
        """fsync holding the lock (opening, closing): no writer runs meanwhile."""
        try:
            os.fdatasync(self._fd)
        except OSError as error:
            self._synced_through(self._seq, error)
            raise AuditLogError(self._broken or str(error)) from None
        self._synced_through(self._seq, None)

    def _synced_through(self, target: int, error: OSError | None) -> None:
        # After a failed fsync the kernel may have dropped the dirty pages: a later fsync
        # could succeed without them, so the log stays unusable until reopened.
        self.sync_count += 1
        if error is not None:
            self._broken = f"{self._path}: audit log fsync failed: {error.strerror or error}"
        else:
            self._durable = max(self._durable, target)
        self._synced.notify_all()

    def _release(self) -> None:
        """Sync what is written and close the file, once no sync is running outside."""
        while self._syncing:
            self._synced.wait()
        if self._fd < 0:
            return
        if self._broken is None and self._durable < self._seq:
            self._sync_now()
        os.close(self._fd)
        self._fd = -1


def _open_locked(path: str) -> int:
    """The file open for appending, created 0600 (its name made durable), locked."""
    existed = os.path.exists(path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AuditLogError(f"{path}: audit log in use by another process") from None
        if not existed:
            _sync_directory(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_tail(fd: int, size: int) -> bytes:
    """The end of the file, enough of it to hold its last two line ends."""
    chunk = 65536
    while True:
        start = max(0, size - chunk)
        tail = os.pread(fd, size - start, start)
        if start == 0 or tail.count(b"\n") >= 2 or chunk > 2 * MAX_LINE:
            return tail
        chunk *= 4


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_directory(path: str) -> None:
    """Make a newly created file's name durable too."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "EVENTS",
    "OPEN_REASONS",
    "REVOKE_METHODS",
    "AuditEvent",
    "AuditLog",
    "AuditLogError",
    "Verification",
    "event",
    "parse_line",
    "verify_audit_log",
]
