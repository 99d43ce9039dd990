"""The daemon against a database it cannot write for now or at all (issue 14): a full disk is
waited out, a held lock does not delay a stop past 10 s, a read-only database is refused at
the start in one line. Real daemon subprocesses, a real tmpfs, real locks.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from inboxsort.db import utcnow
from tests.helpers.daemonkit import DaemonProcess, Site, make_site, sha256_of
from tests.helpers.disklimits import fill_up, refusing_writes, small_tmpfs

STOP_SECONDS = 10.0  # README: a clean stop "well inside 10 s" (the unit's budget)


def _site_with_database_in(
    root: Path, db_folder: Path, tiny_model: Path, config_writer: Callable[..., Path]
) -> Site:
    url = f"sqlite:///{db_folder / 'inboxsort.db'}"

    def writer(folder: Path, extra: str = "") -> Path:
        return config_writer(folder, extra, database_url=url)

    return make_site(root, tiny_model, writer)


def _drop(sources: list[Path], inbox: Path) -> dict[str, str]:
    """Copy images into the inbox; their names and SHA-256."""
    for source in sources:
        shutil.copyfile(source, inbox / source.name)
    return {source.name: sha256_of(source) for source in sources}


def _assert_all_filed(site: Site, expected: dict[str, str]) -> None:
    rows = {row.original_name: row for row in site.rows()}
    assert sorted(rows) == sorted(expected)
    for name, sha in expected.items():
        row = rows[name]
        assert row.status == "filed" and row.sha256 == sha, row
        assert Path(row.path).is_file() and sha256_of(Path(row.path)) == sha


def _stop(daemon: DaemonProcess) -> int:
    daemon.signal(signal.SIGTERM)
    return daemon.wait(30)


def test_a_full_disk_under_the_database_is_waited_out_with_images_kept_in_the_inbox(
    tmp_path, tiny_model, config_writer, spawn, validation_jpegs
):
    root = tmp_path / "site"
    with small_tmpfs(root / "state", "4m") as state:
        site = _site_with_database_in(root, state, tiny_model, config_writer)
        daemon = spawn(site)
        daemon.wait_ready()
        filler = fill_up(state)
        expected = _drop(validation_jpegs["cats"][:3] + validation_jpegs["dogs"][:3], site.inbox)
        daemon.wait_log("database or disk is full", "the daemon to meet the full disk")
        held_until = time.monotonic() + 6.0  # five batch failures used to stop it by now
        while time.monotonic() < held_until:
            assert daemon.alive(), f"the daemon exited on a full disk:\n{daemon.log()}"
            assert len(site.inbox_files()) == len(expected)
            assert site.rows() == [] and site.outputs() == []
            time.sleep(0.1)
        full_lines = [
            line
            for line in daemon.log().splitlines()
            if "WARNING" in line and "database or disk is full" in line
        ]
        # Said once when it started, not once per batch or per retry.
        assert len(full_lines) == 1, full_lines
        filler.unlink()  # space comes back
        freed_at = utcnow()
        daemon.until(lambda: site.settled(len(expected)), "the images to be filed")
        _assert_all_filed(site, expected)
        daemon.wait_log("database writable again", "the daemon to say it can write again")

        def beating() -> bool:
            state = site.heartbeat()
            return (
                state is not None
                and state.heartbeat_at is not None
                and (state.heartbeat_at > freed_at)
            )

        # The heartbeat may have been waiting for space too: it resumes on its own.
        daemon.until(beating, "a heartbeat after the space came back")
        assert _stop(daemon) == 0, daemon.log()


def test_sigterm_while_another_process_holds_the_write_lock_stops_within_10_s(
    new_site, spawn, validation_jpegs
):
    site = new_site()
    daemon = spawn(site)
    daemon.wait_ready()
    expected: dict[str, str] = {}
    with closing(sqlite3.connect(site.database_file, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")  # the write lock, held by another process
        expected = _drop(validation_jpegs["cats"][:4], site.inbox)
        daemon.wait_log("database busy during recording images", "the daemon to meet the lock")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code: int | None = None
        try:
            code = daemon.wait(STOP_SECONDS * 3)
        except subprocess.TimeoutExpired:
            daemon.kill9()
        took = time.monotonic() - started
        assert took < STOP_SECONDS, f"stopped in {took:.1f} s:\n{daemon.log()}"
        # A clean stop, although the last heartbeat could not be written: systemd must not
        # mark the unit failed for a lock another program held.
        assert code == 0, daemon.log()
        # Nothing recorded while the lock was held, nothing lost: the images wait in the inbox.
        assert len(site.inbox_files()) == len(expected), daemon.log()
        other.execute("ROLLBACK")
    again = spawn(site, log_name="restart")
    again.until(lambda: site.settled(len(expected)), "the restart to file every image")
    _assert_all_filed(site, expected)
    assert _stop(again) == 0, again.log()


def test_a_read_only_database_is_refused_in_one_line_before_the_model_loads(
    tmp_path, tiny_model, config_writer, spawn
):
    root = tmp_path / "site"
    state = root / "state"
    site = _site_with_database_in(root, state, tiny_model, config_writer)
    # The file alone: a folder that refuses new files is refused earlier, by the daemon's
    # lock file beside the database (also one line, exit 2).
    with refusing_writes(site.database_file) as how:
        daemon = spawn(site)
        code = daemon.wait(120)
        output = daemon.log().strip()
    assert code == 2, f"({how}) {output}"
    lines = output.splitlines()
    assert len(lines) == 1, output  # no SQL dump, no traceback, no model loading
    assert str(site.database_file) in lines[0] and "not writable" in lines[0], output
    assert "writable by this user" in lines[0], output
