"""The sd_notify protocol: readiness, status, watchdog and reload messages to systemd.

systemd passes the socket in NOTIFY_SOCKET (a filesystem path, or "@name" for the Linux
abstract namespace) and the watchdog in WATCHDOG_USEC / WATCHDOG_PID. Each message is one
datagram of newline-separated KEY=VALUE assignments (see sd_notify(3)). We speak it with the
stdlib so the daemon does not depend on libsystemd or a binding.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType

log = logging.getLogger(__name__)

# A blocked sendto (PID 1 busy, its queue full) must not wedge the inference thread forever;
# a dropped WATCHDOG=1 is harmless because we ping at half the interval.
_SEND_TIMEOUT_S = 5.0

# SOCK_CLOEXEC keeps the socket out of the retrain subprocess; it is Linux-only, and Python
# already creates sockets non-inheritable, so elsewhere 0 is equivalent.
_SOCK_TYPE = socket.SOCK_DGRAM | getattr(socket, "SOCK_CLOEXEC", 0)


def _socket_address(value: str) -> str | None:
    """Map NOTIFY_SOCKET to a sendto address ("@name" is abstract: a leading NUL byte)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    # sd_notify accepts only absolute paths (and "@"); anything else is not ours to guess at.
    if not value.startswith("/"):
        return None
    return value


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    """Return WATCHDOG_USEC if the watchdog applies to this process, else None."""
    raw = environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid_raw = environ.get("WATCHDOG_PID")
    if pid_raw is not None:
        # A WATCHDOG_PID for another process means systemd expects pings from it, not us
        # (e.g. we inherited the environment from a supervising parent).
        try:
            pid = int(pid_raw)
        except ValueError:
            return None
        if pid != os.getpid():
            return None
    return usec


def _one_line(text: str) -> str:
    """Flatten text so it cannot inject extra KEY=VALUE assignments into a message."""
    return " ".join(text.splitlines())


class Notifier:
    """Sends sd_notify messages; a silent no-op when not started by systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        """Notify `address` (sendto form; None disables) with an optional watchdog in µs."""
        self._address = address
        self._watchdog_usec = watchdog_usec if address is not None else None
        self._sock: socket.socket | None = None
        self._closed = False
        # One lock for the socket and the error flag: the inference thread pings the watchdog
        # while the main thread sends status.
        self._lock = threading.Lock()
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build a notifier from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID."""
        env = os.environ if environ is None else environ
        address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        return cls(address, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        """True if messages go somewhere (NOTIFY_SOCKET was set and usable)."""
        return self._address is not None and not self._closed

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if disabled."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        # sd_watchdog_enabled(3) advises pinging at half the timeout to absorb scheduling jitter.
        return self._watchdog_usec / 2 / 1_000_000

    def notify(self, *fields: str) -> bool:
        """Send KEY=VALUE fields as one datagram; True if it was sent."""
        for field in fields:
            # Malformed fields are a caller bug, not a systemd outage, so they do raise.
            if "=" not in field or "\n" in field:
                raise ValueError(f"sd_notify field must be one KEY=VALUE line: {field!r}")
        if not fields or not self.enabled:
            return False
        return self._send("\n".join(fields).encode())

    def ready(self, status: str = "") -> bool:
        """Tell systemd start-up is complete (READY=1), with an optional status line."""
        # STATUS is sent even when empty: it clears a stale "loading model..." status.
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        """Set the free-form status shown by `systemctl status`."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Ping the watchdog (WATCHDOG=1)."""
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """Announce a reload (RELOADING=1 with the MONOTONIC_USEC systemd >= 253 requires)."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self, status: str = "") -> bool:
        """Announce a clean shutdown has begun (STOPPING=1), with an optional status line."""
        if status:
            return self.notify("STOPPING=1", f"STATUS={_one_line(status)}")
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Close the socket; later messages are dropped silently."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        """Return self, so `with Notifier.from_environ() as n:` closes the socket."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the socket."""
        self.close()

    def _send(self, payload: bytes) -> bool:
        """Send one datagram; swallow and log (once per outage) any OS error."""
        with self._lock:
            if self._closed or self._address is None:
                return False
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, _SOCK_TYPE)
                    self._sock.settimeout(_SEND_TIMEOUT_S)
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                # systemd's socket can vanish (PID 1 re-exec, a test harness exiting); the
                # daemon must keep sorting, so log the outage once and keep trying quietly.
                if not self._failing:
                    log.debug("sd_notify to %r failed: %s", self._address, exc)
                    self._failing = True
                return False
            self._failing = False
            return True
