"""One daemon per database and per inbox: flock'd lock files, held by real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from inboxsort.config import Config, load_config
from inboxsort.errors import ConfigError
from inboxsort.service.lock import INBOX_LOCK_NAME, DaemonLock, lock_files

HOLDER = textwrap.dedent(
    """
    import sys, time
    from inboxsort.config import load_config
    from inboxsort.service.lock import DaemonLock
    lock = DaemonLock.acquire(load_config(__import__("pathlib").Path(sys.argv[1])))
    print("locked", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def holders():
    """holder(config_path) -> a python process holding the daemon lock; SIGKILLed at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(config_path: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(config_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == "locked\n"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()


def config_at(root: Path, config_writer, **kwargs: str) -> Config:
    return load_config(config_writer(root, **kwargs))


def test_a_second_holder_is_refused_naming_the_first_ones_pid(tmp_path, config_writer, holders):
    path = config_writer(tmp_path)
    first = holders(path)
    with pytest.raises(ConfigError) as info:
        DaemonLock.acquire(load_config(path))
    message = str(info.value)
    assert f"pid {first.pid}" in message
    assert "\n" not in message
    assert str(tmp_path / "db.sqlite3") in message  # the database is checked first


def test_sharing_only_the_inbox_or_only_the_database_is_refused_too(
    tmp_path, config_writer, holders
):
    first = holders(config_writer(tmp_path / "a"))
    inbox = tmp_path / "a" / "inbox"
    database = f"sqlite:///{tmp_path / 'a' / 'db.sqlite3'}"
    same_inbox = config_at(tmp_path / "b", config_writer, inbox=str(inbox))
    same_database = config_at(tmp_path / "c", config_writer, database_url=database)
    for config, names in ((same_inbox, str(inbox)), (same_database, database.split("///")[1])):
        with pytest.raises(ConfigError) as info:
            DaemonLock.acquire(config)
        assert f"pid {first.pid}" in str(info.value) and names in str(info.value)
    # Nothing shared: no conflict.
    DaemonLock.acquire(config_at(tmp_path / "d", config_writer)).release()


def test_a_lock_does_not_outlive_kill_9_and_names_its_new_holder(tmp_path, config_writer, holders):
    path = config_writer(tmp_path)
    first = holders(path)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    lock = DaemonLock.acquire(load_config(path))
    try:
        for _what, lock_path in lock_files(load_config(path)):
            assert lock_path.read_text() == f"{os.getpid()}\n"
        # Held for as long as this process wants it: a third one is refused, naming us.
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            DaemonLock.acquire(load_config(path))
    finally:
        lock.release()
    DaemonLock.acquire(load_config(path)).release()  # released: free again


def test_the_lock_files_sit_next_to_the_database_and_hidden_in_the_inbox(tmp_path, config_writer):
    config = config_at(tmp_path, config_writer)
    assert [p for _what, p in lock_files(config)] == [
        tmp_path / "db.sqlite3.lock",
        tmp_path / "inbox" / INBOX_LOCK_NAME,
    ]
    assert INBOX_LOCK_NAME.startswith(".")  # ignored by the watcher's default patterns


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_without_a_database_file_only_the_inbox_is_locked(tmp_path, config_writer, url):
    config = config_at(tmp_path, config_writer, database_url=url)
    assert [p for _what, p in lock_files(config)] == [tmp_path / "inbox" / INBOX_LOCK_NAME]


def test_a_fleet_database_locks_no_file(tmp_path, config_writer):
    """PostgreSQL: daemons may share the inbox (claims in the database); tests/e2e/test_fleet.py
    shows a second daemon under one node name refused by its advisory lock."""
    url = "postgresql+psycopg://u:p@db.example/inboxsort"
    config = config_at(tmp_path, config_writer, database_url=url)
    assert lock_files(config) == []


def test_folders_that_do_not_exist_yet_are_created_for_their_lock(tmp_path, config_writer):
    config = config_at(tmp_path, config_writer, database_url="sqlite:///state/db.sqlite3")
    DaemonLock.acquire(config).release()
    assert (tmp_path / "inbox" / INBOX_LOCK_NAME).is_file()
    assert (tmp_path / "state" / "db.sqlite3.lock").is_file()


@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_a_link_planted_as_the_inbox_lock_is_refused_and_its_file_kept(
    tmp_path, config_writer, link
):
    """The inbox is writable by others, and a lock file is truncated: only a file of its own."""
    config = config_at(tmp_path, config_writer)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (tmp_path / "inbox").mkdir()
    planted = tmp_path / "inbox" / INBOX_LOCK_NAME
    if link == "symlink":
        planted.symlink_to(precious)
    else:
        planted.hardlink_to(precious)
    with pytest.raises(ConfigError, match=r"^cannot use the lock file .*/\.inboxsort\.lock: "):
        DaemonLock.acquire(config)
    assert precious.read_text() == "keep me"
