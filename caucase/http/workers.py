"""Reusable connection threads for the listeners: no thread start per connection.

Every connection still gets a thread of its own at once, so a slow or stalled client
never delays another: the accept loop hands the connection to an idle worker when one
waits, and starts a new thread otherwise (no queue in front of the workers, so nothing
ever waits for a busy one). A worker whose connection is done waits for the next one;
at most `max_idle` wait at a time and each only for `idle_timeout`, after which it
exits, so a burst leaves no lasting crowd of threads behind it.

Starting a thread per connection cost a clone, a stack mapping and a handshake with the
accept loop (Thread.start waits until the thread runs) on every new connection; reused
threads also keep the malloc arenas they use, instead of spreading allocations of
short-lived threads over many.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import threading
from typing import Callable, Optional

MAX_IDLE_WORKERS = 32
IDLE_TIMEOUT = 60.0
# glibc's mallopt parameter for the number of malloc arenas (malloc.h).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2

Job = Callable[[], None]
# What an idle worker waits on: its next connection, or None to exit.
_Slot = queue.SimpleQueue[Optional[Job]]


class WorkerPool:
    """Threads running one job at a time, reused while jobs keep coming."""

    def __init__(
        self, name: str, max_idle: int = MAX_IDLE_WORKERS, idle_timeout: float = IDLE_TIMEOUT
    ) -> None:
        self._name = name
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        # Most recently idle last: reusing it first keeps the fewest threads busy.
        self._idle: list[_Slot] = []
        self._threads = 0
        self._closed = False

    def submit(self, job: Job) -> None:
        """Run `job` now in an idle worker, or in a new thread when none is idle."""
        with self._lock:
            slot = self._idle.pop() if self._idle else None
            if slot is None:
                self._threads += 1
        if slot is not None:
            slot.put(job)
            return
        try:
            threading.Thread(target=self._work, args=(job,), name=self._name, daemon=True).start()
        except BaseException:
            self._exited()
            raise

    def idle_count(self) -> int:
        """Workers waiting for a job."""
        with self._lock:
            return len(self._idle)

    def thread_count(self) -> int:
        """Workers alive, busy or idle."""
        with self._lock:
            return self._threads

    def _exited(self) -> None:
        with self._lock:
            self._threads -= 1

    def close(self) -> None:
        """Dismiss the idle workers; busy ones exit once their job is done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for slot in idle:
            slot.put(None)

    def _work(self, job: Job | None) -> None:
        slot: _Slot = queue.SimpleQueue()
        try:
            while job is not None:
                job()
                job = None  # drop the finished connection before waiting for the next
                job = self._next_job(slot)
        finally:
            self._exited()

    def _next_job(self, slot: _Slot) -> Job | None:
        """Wait idle for the next job; None when the pool is full, closed or idle too long."""
        with self._lock:
            if self._closed or len(self._idle) >= self._max_idle:
                return None
            self._idle.append(slot)
        try:
            return slot.get(timeout=self._idle_timeout)
        except queue.Empty:
            with self._lock:
                if slot in self._idle:
                    self._idle.remove(slot)
                    return None
            # submit() took this worker just as it timed out: its job is on the way.
            return slot.get()


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before the connection threads start; True if done.

    glibc gives threads arenas of their own (up to 8 per core): memory freed in one stays
    there, so under churn (revocations, big CRLs) a long-running server grew to twice the
    RSS of a fresh one on the same database. Requests run one at a time under the
    interpreter lock anyway, so a few arenas cost no throughput. A MALLOC_ARENA_MAX set by
    the operator wins; other C libraries are left alone."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt is not None and mallopt(_M_ARENA_MAX, count) == 1)


__all__ = ["WorkerPool", "limit_malloc_arenas"]
