"""Waiting on a condition: the one polling helper of the test suite."""

from __future__ import annotations

import subprocess
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def poll(
    condition: Callable[[], T],
    what: str,
    timeout: float = 30.0,
    interval: float = 0.05,
    *,
    process: subprocess.Popen[Any] | None = None,
) -> T:
    """Call `condition` until it returns something truthy and return that, or fail naming
    `what` after `timeout` seconds, or as soon as `process` (the one expected to bring the
    condition about) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        exited = process is not None and process.poll() is not None  # before the last look
        value = condition()
        if value:
            return value
        if exited:
            assert process is not None
            raise AssertionError(f"exited with {process.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
