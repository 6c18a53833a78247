"""Group commit under failure: every step that can fail ends every writer of the batch.

Failures are injected with an SQLite authorizer on real connections (statement cache off,
so every statement is prepared, and authorized, again): a denied BEGIN, SAVEPOINT,
ROLLBACK TO, RELEASE, COMMIT or ROLLBACK fails exactly as SQLite reports it. Batches of
several writers are built with real threads: the first writer's COMMIT is held until the
others have queued behind it, so they all join the next batch, where the failure strikes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from caucase.exceptions import StorageError
from caucase.storage.group_commit import GroupCommitter, SQLiteDialect
from tests.support.wait import poll

JOIN_TIMEOUT = 30.0
Committer = GroupCommitter[sqlite3.Connection]


class WriterFailure(Exception):
    """A writer's own error, raised from inside its transaction."""


def step_of(action: int, first: str | None) -> str | None:
    """The committer step an authorizer call belongs to."""
    if action == sqlite3.SQLITE_TRANSACTION:
        return first  # BEGIN, COMMIT, ROLLBACK
    if action == sqlite3.SQLITE_SAVEPOINT:
        return {"BEGIN": "SAVEPOINT", "RELEASE": "RELEASE", "ROLLBACK": "ROLLBACK TO"}[first or ""]
    return None


@dataclass
class Faults:
    """Steps to deny, in order: each the next time it runs (in the given writer's thread,
    if one is named)."""

    planned: list[tuple[str, str | None]] = field(default_factory=list)
    hold_first_commit: threading.Event = field(default_factory=threading.Event)
    commit_held: threading.Event = field(default_factory=threading.Event)
    holding: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def authorizer(self, action: int, first: str | None, *_: object) -> int:
        step = step_of(action, first)
        with self.lock:
            hold = step == "COMMIT" and self.holding
            self.holding = self.holding and not hold
        if hold:
            self.commit_held.set()
            self.hold_first_commit.wait(JOIN_TIMEOUT)
            return sqlite3.SQLITE_OK
        with self.lock:
            if self.planned and self.planned[0][0] == step:
                thread = self.planned[0][1]
                if thread is None or thread == threading.current_thread().name:
                    self.planned.pop(0)
                    return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


class Connector:
    """Real connections to the test file, with the fault authorizer; counts open ones."""

    def __init__(self, path: str, faults: Faults) -> None:
        self.path = path
        self.faults = faults
        self.live = 0

    def open_connection(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=5,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=0,
        )
        connection.set_authorizer(self.faults.authorizer)
        self.live += 1
        return connection

    def close_connection(self, connection: sqlite3.Connection) -> None:
        connection.close()
        self.live -= 1


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    path = str(tmp_path / "db.sqlite")
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (name TEXT PRIMARY KEY)")
    setup.close()
    return path


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def connector(db_path: str, faults: Faults) -> Connector:
    return Connector(db_path, faults)


@pytest.fixture
def committer(connector: Connector) -> Iterator[Committer]:
    committer = GroupCommitter(connector, SQLiteDialect())
    yield committer
    committer.close()
    assert connector.live == 0


def rows(db_path: str) -> set[str]:
    connection = sqlite3.connect(db_path)
    try:
        return {name for (name,) in connection.execute("SELECT name FROM t")}
    finally:
        connection.close()


def write(committer: Committer, name: str, fail: bool = False) -> None:
    with committer.transaction() as connection:
        connection.execute("INSERT INTO t VALUES (?)", (name,))
        if fail:
            raise WriterFailure(name)


class Writer(threading.Thread):
    def __init__(self, committer: Committer, name: str, fail: bool = False) -> None:
        super().__init__(name=name, daemon=True)
        self.committer = committer
        self.fail = fail
        self.outcome: BaseException | str | None = "not finished"

    def run(self) -> None:
        try:
            write(self.committer, self.name, self.fail)
            self.outcome = None
        except BaseException as error:
            self.outcome = error


def run_batch(
    committer: Committer, faults: Faults, failing_writer: str | None = None
) -> dict[str, BaseException | str | None]:
    """Writer `a` commits alone, its COMMIT held until b, c and d queue behind it; they
    form the next batch, where the planned faults strike. Returns each writer's outcome
    once every writer has finished (the test fails if one hangs)."""
    planned, faults.planned = faults.planned, []
    faults.holding = True
    first = Writer(committer, "a")
    first.start()
    assert faults.commit_held.wait(JOIN_TIMEOUT)
    others = [Writer(committer, name, fail=name == failing_writer) for name in "bcd"]
    for writer in others:
        writer.start()
    poll(lambda: committer._queued == len(others), "b, c and d queued behind a's commit")
    faults.planned = planned
    faults.hold_first_commit.set()
    writers = [first, *others]
    for writer in writers:
        writer.join(JOIN_TIMEOUT)
    assert [writer.name for writer in writers if writer.is_alive()] == [], "writers hang"
    return {writer.name: writer.outcome for writer in writers}


def check_consistent(
    outcomes: dict[str, BaseException | str | None], db_path: str, committer: Committer
) -> None:
    """Acknowledged writers are in the file, failed ones are not; every failure is a
    StorageError or the writer's own error; the committer still works."""
    succeeded = {name for name, outcome in outcomes.items() if outcome is None}
    for name, outcome in outcomes.items():
        assert outcome is None or isinstance(outcome, (StorageError, WriterFailure)), (
            name,
            outcome,
        )
    assert rows(db_path) == succeeded
    write(committer, "after")
    assert "after" in rows(db_path)


def test_a_batch_of_several_writers_commits_once(
    committer: Committer, faults: Faults, db_path: str
) -> None:
    outcomes = run_batch(committer, faults)
    assert outcomes == dict.fromkeys("abcd")
    assert committer._last_batch == 2  # a alone, then b, c and d together
    check_consistent(outcomes, db_path, committer)


ALL = "bcd"


@pytest.mark.parametrize(
    ("denied", "failing_writer", "expected"),
    [
        pytest.param([("BEGIN", None)], None, "one", id="begin"),
        pytest.param([("SAVEPOINT", "c")], None, "c", id="savepoint"),
        pytest.param([("RELEASE", "c")], None, "c", id="release"),
        pytest.param([("RELEASE", "c"), ("ROLLBACK", None)], None, "c", id="release-rollback"),
        pytest.param([("ROLLBACK TO", "c")], "c", "c", id="rollback-to"),
        pytest.param(
            [("ROLLBACK TO", "c"), ("ROLLBACK", None)], "c", "c", id="rollback-to-rollback"
        ),
        pytest.param([("RELEASE", "c")], "c", "c", id="release-after-rollback-to"),
        pytest.param(
            [("RELEASE", "c"), ("ROLLBACK", None)],
            "c",
            "c",
            id="release-after-rollback-to-rollback",
        ),
        pytest.param([("COMMIT", None)], None, ALL, id="commit"),
        pytest.param([("COMMIT", None), ("ROLLBACK", None)], None, ALL, id="commit-rollback"),
    ],
)
def test_every_failure_ends_every_writer(
    committer: Committer,
    faults: Faults,
    db_path: str,
    denied: list[tuple[str, str | None]],
    failing_writer: str | None,
    expected: str,
) -> None:
    """`expected`: the writers that must fail ("one": exactly one of them). Writers that
    shared the failing batch fail too, which check_consistent verifies."""
    faults.planned = list(denied)
    outcomes = run_batch(committer, faults, failing_writer)
    assert faults.planned == [], "every planned fault struck"
    assert outcomes["a"] is None
    failed = [name for name, outcome in outcomes.items() if outcome is not None]
    if expected == "one":
        assert len(failed) == 1, outcomes
    else:
        assert set(expected) <= set(failed), outcomes
    if failing_writer is not None:
        assert isinstance(outcomes[failing_writer], WriterFailure)
    check_consistent(outcomes, db_path, committer)


def test_a_writer_failure_undoes_that_writer_only(
    committer: Committer, faults: Faults, db_path: str
) -> None:
    outcomes = run_batch(committer, faults, failing_writer="c")
    assert isinstance(outcomes.pop("c"), WriterFailure)
    assert outcomes == dict.fromkeys("abd")
    check_consistent({**outcomes, "c": WriterFailure("c")}, db_path, committer)


def test_close_refuses_new_writers_and_closes_the_connection(
    committer: Committer, connector: Connector
) -> None:
    write(committer, "before")
    assert connector.live == 1
    committer.close()
    assert connector.live == 0
    with pytest.raises(StorageError, match="closed"):
        write(committer, "after")


def test_close_during_a_commit_lets_the_batch_finish(
    committer: Committer, faults: Faults, connector: Connector, db_path: str
) -> None:
    faults.holding = True
    writer = Writer(committer, "a")
    writer.start()
    assert faults.commit_held.wait(JOIN_TIMEOUT)
    committer.close()
    assert connector.live == 1  # the batch under way keeps its connection
    faults.hold_first_commit.set()
    writer.join(JOIN_TIMEOUT)
    assert writer.outcome is None
    assert connector.live == 0
    assert rows(db_path) == {"a"}


def test_write_soon_rides_the_batch_of_a_waiting_writer(
    committer: Committer, faults: Faults, db_path: str
) -> None:
    statement = "INSERT INTO t VALUES (?)"
    assert not committer.write_soon(statement, ("idle",))  # no batch is sure to come
    faults.holding = True
    first = Writer(committer, "a")
    first.start()
    assert faults.commit_held.wait(JOIN_TIMEOUT)
    assert not committer.write_soon(statement, ("alone",))  # nobody waits behind a
    second = Writer(committer, "b")
    second.start()
    poll(lambda: committer._queued == 1, "b queued behind a's commit")
    assert committer.write_soon(statement, ("soon",))
    faults.hold_first_commit.set()
    for writer in (first, second):
        writer.join(JOIN_TIMEOUT)
        assert writer.outcome is None
    assert rows(db_path) == {"a", "b", "soon"}
    assert committer._last_batch == 2  # the statement cost no transaction of its own


def test_a_failing_deferred_statement_spares_the_batch(
    committer: Committer, faults: Faults, db_path: str
) -> None:
    write(committer, "taken")
    faults.holding = True
    first = Writer(committer, "a")
    first.start()
    assert faults.commit_held.wait(JOIN_TIMEOUT)
    second = Writer(committer, "b")
    second.start()
    poll(lambda: committer._queued == 1, "b queued behind a's commit")
    assert committer.write_soon("INSERT INTO t VALUES (?)", ("taken",))  # a duplicate
    faults.hold_first_commit.set()
    for writer in (first, second):
        writer.join(JOIN_TIMEOUT)
        assert writer.outcome is None
    assert rows(db_path) == {"taken", "a", "b"}
