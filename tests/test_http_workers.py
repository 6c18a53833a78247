"""The listeners' connection threads are reused, never waited for, and do not pile up."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from caucase.http.server import CaucasedServer, start_serving, stop_serving
from caucase.http.workers import WorkerPool
from tests.support.wait import poll


class _Gate:
    """Jobs that block until released, counting how many have started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self._lock = threading.Lock()

    def job(self) -> None:
        with self._lock:
            self.started += 1
        self.release.wait(30)


def test_a_finished_worker_takes_the_next_job() -> None:
    pool = WorkerPool("test")
    threads: list[threading.Thread] = []

    def job() -> None:
        threads.append(threading.current_thread())

    try:
        for count in range(1, 21):
            pool.submit(job)
            poll(lambda: len(threads) == count and pool.idle_count() == 1, "the job to run")  # noqa: B023
        assert len(set(threads)) == 1
        assert pool.thread_count() == 1
    finally:
        pool.close()


def test_busy_workers_never_delay_a_new_job() -> None:
    """No queue in front of the workers: with every worker blocked, a job still runs."""
    pool = WorkerPool("test", max_idle=2)
    gate = _Gate()
    try:
        for _ in range(10):
            pool.submit(gate.job)
        poll(lambda: gate.started == 10, "every blocked job to start")
        ran = threading.Event()
        pool.submit(ran.set)
        assert ran.wait(10)
    finally:
        gate.release.set()
        pool.close()


def test_idle_workers_are_bounded_and_expire() -> None:
    pool = WorkerPool("test", max_idle=3, idle_timeout=0.5)
    gate = _Gate()
    try:
        for _ in range(10):
            pool.submit(gate.job)
        poll(lambda: gate.started == 10, "every job to start")
        assert pool.thread_count() == 10
        gate.release.set()
        poll(lambda: pool.thread_count() == 3, "the workers beyond the idle bound to exit")
        assert pool.idle_count() == 3
        poll(lambda: pool.thread_count() == 0, "the idle workers to expire")
        assert pool.idle_count() == 0
    finally:
        gate.release.set()
        pool.close()


def test_close_dismisses_the_idle_workers() -> None:
    pool = WorkerPool("test")
    done = threading.Event()
    pool.submit(done.set)
    done.wait(10)
    poll(lambda: pool.idle_count() == 1, "the worker to be idle")
    pool.close()
    poll(lambda: pool.thread_count() == 0, "the idle worker to exit")


def _app(served_by: list[threading.Thread]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        served_by.append(threading.current_thread())
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return app


@pytest.fixture
def listener() -> Iterator[tuple[CaucasedServer, list[threading.Thread]]]:
    served_by: list[threading.Thread] = []
    server = CaucasedServer(("127.0.0.1", 0), socket.AF_INET)
    server.listen()
    start_serving([server], _app(served_by))
    try:
        yield server, served_by
    finally:
        stop_serving([server])


def test_new_connections_reuse_the_connection_threads(
    listener: tuple[CaucasedServer, list[threading.Thread]],
) -> None:
    server, served_by = listener
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert sock.makefile("rb").read().endswith(b"ok")
        poll(lambda: server.workers.idle_count() >= 1, "the connection thread to be idle")
    assert len(served_by) == 20
    assert len(set(served_by)) == 1
