"""A writer that appends and closes again and again, and an inbox replaced under the daemon
(issue 14): real writer processes, real inotify, the tiny model."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time

import pytest

from inboxsort.db import STATUS_FILED, STATUS_PENDING
from tests.helpers.daemonkit import running_daemon, sha256_of, wait_for

# Appends one chunk and closes the file, CHUNKS times, PAUSE seconds apart.
APPENDER = """
import sys, time
source, dest, chunks, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
data = open(source, "rb").read()
step = -(-len(data) // chunks)
for start in range(0, len(data), step):
    with open(dest, "ab") as handle:
        handle.write(data[start : start + step])
    time.sleep(pause)
"""
CHUNKS, PAUSE = 20, 0.25


def test_a_writer_that_closes_after_each_append_leaves_one_whole_file(new_site, validation_jpegs):
    site = new_site()
    source = validation_jpegs["cats"][3]
    dest = site.inbox / "slow.jpg"
    with running_daemon(site) as daemon:
        wait_for(daemon.intake.idle, "the start-up scan to finish")
        writer = subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(source), str(dest), str(CHUNKS), str(PAUSE)]
        )
        try:
            assert writer.wait(60) == 0
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait(10)

        def finished() -> bool:
            rows = site.rows()
            return (
                not site.inbox_files()
                and bool(rows)
                and STATUS_PENDING not in {r.status for r in rows}
            )

        wait_for(finished, "the written file filed", describe=site.describe)
        time.sleep(1.0)  # anything still on its way would show now
    rows = site.rows()
    assert [(r.original_name, r.status) for r in rows] == [("slow.jpg", STATUS_FILED)], rows
    assert list(site.failed.iterdir()) == []
    assert site.outputs() == [site.library / rows[0].label / "slow.jpg"]
    assert sha256_of(site.outputs()[0]) == sha256_of(source)


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_an_inbox_replaced_while_the_daemon_runs_is_watched_again(
    new_site, validation_jpegs, caplog, how
):
    caplog.set_level(logging.INFO, logger="inboxsort")
    site = new_site(watch={"rescan_seconds": 300.0})  # the default: no rescan to save the day
    with running_daemon(site) as daemon:
        wait_for(daemon.intake.idle, "the start-up scan to finish")
        if how == "moved":
            site.inbox.rename(site.inbox.with_name("inbox.old"))
        else:
            shutil.rmtree(site.inbox)
        site.inbox.mkdir()
        shutil.copyfile(validation_jpegs["dogs"][4], site.inbox / "after.jpg")
        wait_for(
            lambda: site.settled(1),
            "the image in the new inbox filed",
            timeout=20,
            describe=site.describe,
        )
    row = site.row_by_name("after.jpg")
    assert row.status == STATUS_FILED and row.source_path == str(site.inbox / "after.jpg")
    replaced = [
        r for r in caplog.records if r.levelno == logging.WARNING and "was replaced" in r.message
    ]
    assert replaced, caplog.text
