"""What the running daemon's log says: one line per event, counts that match the rows."""

from __future__ import annotations

import re
import shutil
import signal

from inboxsort.db import STATUS_FAILED, STATUS_FILED
from tests.helpers.daemonkit import WAIT_SECONDS, Site
from tests.helpers.imagegen import TEXT_BYTES

BATCH = re.compile(r"batch of (\d+) in \d+ ms: (\d+) filed, (\d+) failed, (\d+) duplicates, ")


def batch_counts(log: str) -> list[tuple[int, ...]]:
    """(size, filed, failed, duplicates) of every batch line."""
    return [tuple(int(n) for n in m.groups()) for m in BATCH.finditer(log)]


def test_a_kept_duplicate_counts_as_a_duplicate_in_the_batch_line(
    new_site, spawn, validation_jpegs
):
    site: Site = new_site(filing={"duplicates": "keep"})
    daemon = spawn(site)
    daemon.wait_ready()
    source = validation_jpegs["dogs"][80]
    shutil.copyfile(source, site.inbox / "first.jpg")
    daemon.until(lambda: site.settled(1), "first.jpg filed", describe=site.describe)
    shutil.copyfile(source, site.inbox / "again.jpg")
    daemon.until(lambda: site.settled(2), "again.jpg filed", describe=site.describe)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(WAIT_SECONDS) == 0, daemon.log()

    again = site.row_by_name("again.jpg")
    assert again.status == STATUS_FILED and again.duplicate_of == site.row_by_name("first.jpg").id
    log = daemon.log()
    assert batch_counts(log) == [(1, 1, 0, 0), (1, 0, 0, 1)], log
    # The totals keep their meaning: both images were processed, none failed.
    assert "stopped: model v1; 2 filed, 0 failed" in log


def test_a_newline_in_a_file_name_cannot_forge_a_log_line(new_site, spawn, validation_jpegs):
    site: Site = new_site()
    daemon = spawn(site)
    daemon.wait_ready()
    forged = "a\nINFO forged \x1b[31mred\\.jpg"
    (site.inbox / forged).write_bytes(TEXT_BYTES)  # not an image: its failure is logged by name
    shutil.copyfile(validation_jpegs["cats"][81], site.inbox / "b\nINFO forged.jpg")
    daemon.until(lambda: site.settled(2), "both files done", describe=site.describe)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(WAIT_SECONDS) == 0, daemon.log()

    assert site.row_by_name(forged).status == STATUS_FAILED
    assert site.row_by_name("b\nINFO forged.jpg").status == STATUS_FILED
    log = daemon.log()
    assert not [line for line in log.splitlines() if line.startswith("INFO forged")], log
    assert "\x1b" not in log
    # The name is still there to read, escaped: the newline, the escape and the backslash.
    assert "a\\nINFO forged \\x1b[31mred\\\\.jpg" in log
