"""One daemon per database and per inbox: a second `inboxsort run` (or `run --once`) is refused.

Real subprocesses: the first daemon holds flock'd lock files (`<db>.lock`, `inbox/.inboxsort.lock`)
that the kernel releases when it dies, even by SIGKILL.
"""

from __future__ import annotations

import shutil
import signal
import time

from tests.helpers.daemonkit import READY_SECONDS, WAIT_SECONDS, DaemonProcess, Site

INBOX_LOCK_NAME = ".inboxsort.lock"  # the name README gives
REFUSED_SECONDS = 60.0  # refused before TensorFlow is imported: seconds, not a model load


def assert_refused(process: DaemonProcess, holder: int) -> str:
    """It exits 2 with one line naming the running daemon's pid, having loaded nothing."""
    start = time.monotonic()
    code = process.wait(REFUSED_SECONDS)
    log = process.log()
    assert code == 2, log
    assert log.startswith("inboxsort: ") and log.count("\n") == 1, log
    assert f"pid {holder}" in log, log
    assert "watching" not in log
    assert time.monotonic() - start < REFUSED_SECONDS
    return log


def test_a_second_daemon_and_run_once_exit_2_naming_the_running_one(
    new_site, spawn, config_writer, validation_jpegs
):
    # Without the hidden-name pattern the lock file is still never taken for an image.
    site: Site = new_site(watch={"ignore": ["*.part"]})
    first = spawn(site, log_name="first")
    first.wait_ready()

    assert_refused(spawn(site, log_name="second"), first.pid)
    assert_refused(spawn(site, "--once", log_name="once"), first.pid)
    # Another config on the same inbox (its own database: later PostgreSQL), and another on
    # the same database (its own inbox): both refused.
    same_inbox = Site(site.root / "b", config_writer(site.root / "b", inbox=str(site.inbox)))
    assert "inbox" in assert_refused(spawn(same_inbox, log_name="same-inbox"), first.pid)
    url = site.config.database.url
    same_db = Site(site.root / "c", config_writer(site.root / "c", database_url=url))
    assert "database" in assert_refused(spawn(same_db, log_name="same-db"), first.pid)

    # The first one never noticed: it files what arrives, and its lock file is not an image.
    shutil.copyfile(validation_jpegs["cats"][60], site.inbox / "after.jpg")
    first.until(lambda: site.settled(1), "after.jpg filed", describe=site.describe)
    assert (site.inbox / INBOX_LOCK_NAME).read_text() == f"{first.pid}\n"
    assert [r.original_name for r in site.rows()] == ["after.jpg"]
    first.signal(signal.SIGTERM)
    assert first.wait(WAIT_SECONDS) == 0, first.log()


def test_after_kill_9_of_the_daemon_a_new_one_starts(new_site, spawn, validation_jpegs):
    site: Site = new_site()
    first = spawn(site, log_name="first")
    first.wait_ready()
    assert_refused(spawn(site, log_name="refused"), first.pid)

    first.kill9()
    shutil.copyfile(validation_jpegs["dogs"][60], site.inbox / "while-down.jpg")
    again = spawn(site, log_name="again")
    again.wait_ready(READY_SECONDS)
    again.until(lambda: site.settled(1), "while-down.jpg filed", describe=site.describe)
    assert (site.inbox / INBOX_LOCK_NAME).read_text() == f"{again.pid}\n"
    assert_refused(spawn(site, "--once", log_name="once"), again.pid)
    again.signal(signal.SIGTERM)
    assert again.wait(WAIT_SECONDS) == 0, again.log()
