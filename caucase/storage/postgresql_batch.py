"""Group commit on PostgreSQL: this node's writers naming one lock share a transaction.

A transaction naming a lock (the "csr" lock of each authority above all) holds that
advisory lock through its commit, so the cluster's writers of that lock commit one after
the other, each waiting for its own fsync. Batching them per node (caucase.storage.
group_commit, with one SAVEPOINT per writer) commits many of them with one fsync under one
lock hold. A batch takes only the one lock its writers name: batches of two locks never
wait on each other in an order that could deadlock across nodes. Writers naming no lock
keep their own transactions (nothing serialises them: PostgreSQL already flushes
concurrent commits together).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from caucase.exceptions import StorageError
from caucase.storage.group_commit import GroupCommitter


class LockingConnection(Protocol):
    """What a batch needs of the engine's connection (caucase.storage.postgresql)."""

    @property
    def in_transaction(self) -> bool: ...

    @property
    def failed(self) -> bool: ...

    @property
    def dropped(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def begin(
        self, isolation: str = "", lock: str | None = None, then: Sequence[str] = ()
    ) -> None: ...

    def run_script(self, statements: Sequence[str]) -> None: ...

    def close(self) -> None: ...


L = TypeVar("L", bound=LockingConnection)


class LockDialect:
    """Batches whose transaction begins by taking one advisory lock."""

    release_with_next = True

    def __init__(self, lock: str, errors: tuple[type[Exception], ...]) -> None:
        self._lock = lock
        self.errors = errors

    def begin(self, connection: LockingConnection, then: Sequence[str]) -> None:
        connection.begin(lock=self._lock, then=then)

    def run(self, connection: LockingConnection, statements: Sequence[str]) -> None:
        connection.run_script(statements)

    def usable(self, connection: LockingConnection) -> bool:
        return not connection.dropped and not connection.in_transaction

    def statement_failed(self, connection: LockingConnection) -> bool:
        return connection.failed


class _Connector(Generic[L]):
    """Each batcher's own connection, opened when first needed, closed with it."""

    def __init__(self, connect: Callable[[], L]) -> None:
        self._connect = connect

    def open_connection(self) -> L:
        return self._connect()

    def close_connection(self, connection: L) -> None:
        connection.close()


class LockBatches(Generic[L]):
    """One group committer per lock name, each with its own connection."""

    def __init__(self, connect: Callable[[], L], errors: tuple[type[Exception], ...]) -> None:
        """`errors`: what the driver raises."""
        self._connector = _Connector(connect)
        self._errors = errors
        self._committers: dict[str, GroupCommitter[L]] = {}
        self._guard = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def transaction(self, lock: str) -> Iterator[L]:
        """A writer's share of the batch holding `lock`; returns once it is committed."""
        with self._committer(lock).transaction() as connection:
            yield connection

    def _committer(self, lock: str) -> GroupCommitter[L]:
        with self._guard:
            if self._closed:
                raise StorageError("database is closed")
            committer = self._committers.get(lock)
            if committer is None:
                committer = GroupCommitter(self._connector, LockDialect(lock, self._errors))
                self._committers[lock] = committer
            return committer

    def close(self) -> None:
        """Refuse new writers; each connection closes once its batch under way ends."""
        with self._guard:
            self._closed = True
            committers = list(self._committers.values())
        for committer in committers:
            committer.close()
