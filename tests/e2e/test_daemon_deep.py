"""A folder tree deeper than PATH_MAX in the inbox no longer kills the daemon at every start.

Before: the start-up scan raised ENAMETOOLONG in the intake thread ("a daemon thread died",
exit 1), every time. Now the daemon reaches the bottom of the tree through folder descriptors
and files what is there, as it files everything else. A real `inboxsort run --once`.
"""

from __future__ import annotations

import shutil

from inboxsort.config import DEFAULT_IGNORE
from inboxsort.db import STATUS_FILED
from inboxsort.files import Ignore, scan
from tests.helpers.daemonkit import READY_SECONDS
from tests.intake.test_deep_inbox import make_deep_tree, remove_deep


def test_run_once_files_an_image_at_the_bottom_of_a_tree_deeper_than_path_max(
    new_site, spawn, validation_jpegs
):
    site = new_site()
    shutil.copyfile(validation_jpegs["cats"][30], site.inbox / "top.jpg")
    deep_bytes = validation_jpegs["dogs"][30].read_bytes()
    make_deep_tree(site.inbox, deep_bytes)

    daemon = spawn(site, "--once", log_name="once")
    assert daemon.wait(READY_SECONDS) == 0, daemon.log()

    assert "a daemon thread died" not in daemon.log()
    assert list(scan(site.inbox, recursive=True, ignore=Ignore(site.inbox, DEFAULT_IGNORE))) == []
    rows = site.rows()
    assert sorted(r.original_name for r in rows) == ["deep.jpg", "top.jpg"]
    assert all(r.status == STATUS_FILED for r in rows)
    deep = site.row_by_name("deep.jpg")
    assert len(deep.source_path.encode()) > 4096  # the row keeps where it arrived, all of it
    with open(deep.path, "rb") as handle:
        assert handle.read() == deep_bytes
    remove_deep(site.inbox)
