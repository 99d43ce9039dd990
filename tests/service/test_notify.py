"""sd_notify against a real AF_UNIX datagram socket, as systemd would receive it."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxsort.service.notify import Notifier


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and its NOTIFY_SOCKET value."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    # A missing datagram must fail the test, not hang it.
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def recv(sock: socket.socket) -> str:
    """Receive one datagram as text."""
    return sock.recv(65536).decode()


def test_messages_arrive_in_order_and_exactly(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("sorting /srv/photos")
    assert notifier.status("classified 32 images")
    assert notifier.watchdog()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.stopping("draining")
    assert notifier.stopping()
    assert notifier.notify("EXTEND_TIMEOUT_USEC=10000000", "STATUS=loading model")

    assert recv(sock) == "READY=1\nSTATUS=sorting /srv/photos"
    assert recv(sock) == "STATUS=classified 32 images"
    assert recv(sock) == "WATCHDOG=1"
    reload_fields = recv(sock).split("\n")
    assert reload_fields[0] == "RELOADING=1"
    key, _, value = reload_fields[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert value.isdigit()
    assert before <= int(value) <= after
    assert len(reload_fields) == 2
    assert recv(sock) == "STOPPING=1\nSTATUS=draining"
    assert recv(sock) == "STOPPING=1"
    assert recv(sock) == "EXTEND_TIMEOUT_USEC=10000000\nSTATUS=loading model"
    notifier.close()


def test_ready_without_status_clears_it(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    with Notifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        notifier.ready()
    assert recv(sock) == "READY=1\nSTATUS="


def test_status_newlines_cannot_inject_fields(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    with Notifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        notifier.status("bad name\nREADY=1")
    assert recv(sock) == "STATUS=bad name READY=1"


def test_malformed_field_raises() -> None:
    notifier = Notifier.from_environ({})
    with pytest.raises(ValueError):
        notifier.notify("READY")
    with pytest.raises(ValueError):
        notifier.notify("STATUS=a\nb=c")


def test_abstract_namespace_socket() -> None:
    name = f"inboxsort-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        with Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.enabled
            assert notifier.ready("up")
            assert notifier.watchdog()
        assert recv(sock) == "READY=1\nSTATUS=up"
        assert recv(sock) == "WATCHDOG=1"
    finally:
        sock.close()


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative.sock"}])
def test_without_notify_socket_is_a_noop(env: dict[str, str]) -> None:
    notifier = Notifier.from_environ({**env, "WATCHDOG_USEC": "4000000"})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.reloading() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_interval() is None
    notifier.close()


def test_reads_os_environ_by_default(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    with Notifier.from_environ() as notifier:
        assert notifier.watchdog()
        assert notifier.watchdog_interval() is None
    assert recv(sock) == "WATCHDOG=1"


def test_vanished_socket_does_not_raise(
    receiver: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.ready()
    assert recv(sock) == "READY=1\nSTATUS="
    sock.close()
    Path(path).unlink()
    caplog.set_level("DEBUG", logger="inboxsort.service.notify")
    for _ in range(3):
        assert notifier.watchdog() is False
        assert notifier.status("still sorting") is False
    # One debug line per outage, not one per ping.
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1
    notifier.close()
    assert notifier.watchdog() is False


def test_socket_path_never_existed_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert notifier.enabled
    assert notifier.ready() is False
    assert notifier.stopping() is False


def test_watchdog_interval_is_half_the_timeout(receiver: tuple[socket.socket, str]) -> None:
    _, path = receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert notifier.watchdog_interval() == 2.0
    own = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(own).watchdog_interval() == 2.0


@pytest.mark.parametrize("usec", ["", "0", "-5", "soon"])
def test_watchdog_interval_disabled_for_bad_usec(
    receiver: tuple[socket.socket, str], usec: str
) -> None:
    _, path = receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec})
    assert notifier.watchdog_interval() is None


@pytest.mark.parametrize("pid", [str(os.getpid() + 1), "1", "nope"])
def test_watchdog_pid_of_another_process_disables_it(
    receiver: tuple[socket.socket, str], pid: str
) -> None:
    _, path = receiver
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": pid}
    assert Notifier.from_environ(env).watchdog_interval() is None


def test_concurrent_senders_keep_every_datagram_intact(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, path = receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    threads_n, per_thread = 8, 200
    expected = threads_n * per_thread
    received: list[str] = []

    # The kernel queues only ~10 datagrams per socket, so drain while the senders run.
    def drain() -> None:
        while len(received) < expected:
            received.append(recv(sock))

    def send(worker: int) -> None:
        for i in range(per_thread):
            if i % 2:
                assert notifier.watchdog()
            else:
                assert notifier.status(f"worker {worker} item {i} " + "x" * 200)

    drainer = threading.Thread(target=drain)
    drainer.start()
    senders = [threading.Thread(target=send, args=(w,)) for w in range(threads_n)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    drainer.join(timeout=10)
    assert not drainer.is_alive()
    notifier.close()

    assert len(received) == expected
    statuses = [m for m in received if m != "WATCHDOG=1"]
    assert len(statuses) == expected // 2
    assert sorted(statuses) == sorted(
        f"STATUS=worker {w} item {i} " + "x" * 200
        for w in range(threads_n)
        for i in range(0, per_thread, 2)
    )
    # Per sender, its messages keep their order.
    for w in range(threads_n):
        mine = [m for m in statuses if m.startswith(f"STATUS=worker {w} ")]
        assert mine == [f"STATUS=worker {w} item {i} " + "x" * 200 for i in range(0, per_thread, 2)]
