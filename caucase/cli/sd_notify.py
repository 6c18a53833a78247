"""systemd's notification protocol (sd_notify(3)), in plain socket code.

When systemd starts a service with ``Type=notify`` it passes ``NOTIFY_SOCKET``, a datagram
socket to which the service sends ``READY=1``, ``STATUS=...`` and, with ``WatchdogSec=``
(``WATCHDOG_USEC``), ``WATCHDOG=1`` at least every half of that interval. Without
``NOTIFY_SOCKET`` there is no notifier and nothing is sent.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Mapping


class SystemdNotifier:
    """Messages to the service manager; a failed send is dropped (systemd may be gone)."""

    def __init__(self, address: str, watchdog: datetime.timedelta | None) -> None:
        # An address starting with "@" is in the abstract namespace (unix(7)).
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = watchdog

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier | None:
        """The notifier systemd asked for, None when not started by it."""
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if not address.startswith(("/", "@")):
            return None
        return cls(address, _watchdog_interval(environ))

    def notify(self, *fields: str) -> None:
        """Send one message made of `fields` (e.g. "READY=1", "STATUS=...")."""
        message = "\n".join(field.replace("\n", " ") for field in fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError:
            pass

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def ping(self) -> None:
        """Tell the watchdog this process is alive (nothing without a watchdog)."""
        if self.watchdog_interval is not None:
            self.notify("WATCHDOG=1")


def _watchdog_interval(environ: Mapping[str, str]) -> datetime.timedelta | None:
    """WATCHDOG_USEC, when it is meant for this process (WATCHDOG_PID, if set, is ours)."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        microseconds = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return datetime.timedelta(microseconds=microseconds) if microseconds > 0 else None
