"""What the real daemon tells systemd, read from a real AF_UNIX datagram socket (NOTIFY_SOCKET)."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.daemonkit import READY_SECONDS, WAIT_SECONDS, spawn_daemon


class Listener:
    """The systemd side of sd_notify: every datagram received, in order."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def until(self, found: Callable[[str], bool], what: str, *, timeout: float) -> str:
        """Receive until a message satisfies `found`; that message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(message)
            if found(message):
                return message
        raise AssertionError(f"no {what} within {timeout} s; received {self.messages}")

    def fields(self) -> list[str]:
        """Each message's first field name (READY, STATUS, WATCHDOG, ...)."""
        return [m.split("=", 1)[0] for m in self.messages]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    # A short path: AF_UNIX names are limited to 108 bytes and tmp_path can be long.
    folder = Path(f"/tmp/inboxsort-notify-{tmp_path.name}")
    folder.mkdir(exist_ok=True)
    listening = Listener(folder / "notify")
    yield listening
    listening.sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def test_ready_status_watchdog_reload_and_stopping_in_order(
    new_site, cli_env, listener, validation_jpegs
):
    site = new_site()
    env = {**cli_env, "NOTIFY_SOCKET": str(listener.sock.getsockname()), "WATCHDOG_USEC": "2000000"}
    daemon = spawn_daemon(site, env)
    try:
        ready = listener.until(lambda m: m.startswith("READY=1"), "READY=1", timeout=READY_SECONDS)
        # Before READY: status lines, and watchdog pings once the inference thread runs.
        assert listener.messages[0] == "STATUS=checking folders and loading the model"
        assert set(listener.fields()[:-1]) <= {"STATUS", "WATCHDOG"}, listener.messages
        assert "model v1" in ready
        image = validation_jpegs["cats"][0]
        shutil.copyfile(image, site.inbox / image.name)
        counted = listener.until(lambda m: "1 filed" in m, "a STATUS line counting it", timeout=60)
        assert re.search(r"\d+\.\d images/s; queue \d+", counted), counted
        # WATCHDOG_USEC=2 s: the inference loop pings at least every second, even when idle.
        listener.until(lambda m: m == "WATCHDOG=1", "WATCHDOG=1", timeout=10)
        watchdog_count = listener.messages.count("WATCHDOG=1")
        listener.until(lambda m: m == "WATCHDOG=1", "a second WATCHDOG=1", timeout=10)
        assert listener.messages.count("WATCHDOG=1") == watchdog_count + 1

        daemon.signal(signal.SIGHUP)
        reloading = listener.until(lambda m: m.startswith("RELOADING=1"), "RELOADING=1", timeout=30)
        assert "MONOTONIC_USEC=" in reloading
        listener.until(lambda m: m.startswith("READY=1"), "READY=1 after the reload", timeout=30)

        daemon.signal(signal.SIGTERM)
        stopping = listener.until(lambda m: m.startswith("STOPPING=1"), "STOPPING=1", timeout=30)
        assert "1 filed" in stopping
        assert daemon.wait(WAIT_SECONDS) == 0, daemon.log()
    finally:
        daemon.kill9()
    order = [f for f in listener.fields() if f in {"READY", "RELOADING", "STOPPING"}]
    assert order == ["READY", "RELOADING", "READY", "STOPPING"], listener.messages
