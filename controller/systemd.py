"""systemd's service notification protocol (sd_notify) and its watchdog (logging: controller.logs).

The protocol is one datagram of `KEY=value` lines to the socket named by `NOTIFY_SOCKET`
(a path, or an abstract name written with a leading `@`). It is small enough that a
dependency on libsystemd's Python binding, which needs a compiler and headers to install,
would cost more than these lines.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends READY, STATUS, WATCHDOG and STOPPING to systemd; does nothing when not under systemd."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A full receive queue must never stall the control loop: drop the message instead.
            self._sock.setblocking(False)
            self._target = "\0" + address[1:] if address.startswith("@") else address

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str | int) -> bool:
        """Send `READY=1`-style fields in one datagram; False if systemd could not be told."""
        if self._sock is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(msg, self._target)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between watchdog pets (half systemd's WatchdogSec), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 2e6)
    except ValueError:
        return None
