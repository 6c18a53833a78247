"""caucased out of file descriptors: it says so once, does not spin while it lasts, and
serves again as soon as descriptors are freed.

A real caucased runs under a small RLIMIT_NOFILE (prlimit) and a crowd of stalled
connections takes every descriptor it has left."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import OUR_BIN, RunningServer, start_caucased
from tests.support.wait import poll

DESCRIPTORS = 64
CROWD = 80  # more connections than the server has descriptors left
SHORTAGE = "cannot accept connections on 127.0.0.1:{port}: Too many open files"
RECOVERED = "accepting connections on 127.0.0.1:{port} again"


def cpu_seconds(pid: int) -> float:
    """User plus system time of a process (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # USER_HZ is 100 on Linux


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    command = ["prlimit", f"--nofile={DESCRIPTORS}:{DESCRIPTORS}", OUR_BIN / "caucased"]
    running = start_caucased(command, tmp_path)
    yield running
    running.stop()


def get(server: RunningServer, timeout: float) -> bytes:
    with socket.create_connection((server.host, server.http_port), timeout=timeout) as sock:
        sock.sendall(b"GET /cas/crt/ca.crt.pem HTTP/1.0\r\n\r\n")
        data = bytearray()
        while piece := sock.recv(65536):
            data += piece
    return bytes(data)


def test_a_server_out_of_descriptors_waits_quietly_and_recovers(server: RunningServer) -> None:
    port = server.http_port
    crowd = []
    try:
        for _ in range(CROWD):
            sock = socket.create_connection((server.host, port), timeout=30)
            sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
            crowd.append(sock)
        poll(lambda: SHORTAGE.format(port=port) in server.stderr(), "the shortage logged", 30)
        before = cpu_seconds(server.process.pid)
        with pytest.raises(TimeoutError):  # queued behind the shortage: 2 s of waiting
            get(server, timeout=2)
        spent = cpu_seconds(server.process.pid) - before
        assert spent < 0.5, f"{spent:.2f} s of CPU in 2 s: the accept loop spins"
    finally:
        for sock in crowd:
            sock.close()

    assert get(server, timeout=10).startswith(b"HTTP/1.0 200 ")
    poll(lambda: RECOVERED.format(port=port) in server.stderr(), "the recovery logged", 10)
    assert server.stderr().count(SHORTAGE.format(port=port)) == 1
