"""sd_notify(3), the datagram protocol, without libsystemd.

``NOTIFY_SOCKET`` names a Unix datagram socket: a path, or an abstract socket when it
starts with ``@`` (the ``@`` stands for the leading NUL byte). Each notification is one
datagram of newline-separated ``KEY=VALUE`` lines. Without ``NOTIFY_SOCKET`` (not run by
systemd, or Type= is not notify) every call is a no-op. Sending never blocks the loop.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, address: str | None = None, *, min_watchdog_interval_s: float = 0.0) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        self._min_interval = min_watchdog_interval_s
        self._last_watchdog = -float("inf")
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram; False when disabled or the socket is gone (never raises)."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        """WATCHDOG=1, at most once per ``min_watchdog_interval_s``."""
        now = time.monotonic()
        if now - self._last_watchdog < self._min_interval:
            return False
        self._last_watchdog = now
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
