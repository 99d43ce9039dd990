"""A deleted database beside a full library: the daemon says so at start, and the way README
"A library without records" gives to rebuild the records works. Real `inboxsort run --once`.
"""

from __future__ import annotations

import shutil

from inboxsort.config import DEFAULT_IGNORE
from inboxsort.db import STATUS_FILED
from inboxsort.files import Ignore, scan
from inboxsort.service.checks import RECORDS_SECTION
from tests.helpers.daemonkit import READY_SECONDS, files_under


def test_a_deleted_database_is_named_at_start_and_refiling_the_library_rebuilds_it(
    new_site, spawn, validation_jpegs
):
    site = new_site()
    for i, jpeg in enumerate(validation_jpegs["cats"][40:42] + validation_jpegs["dogs"][40:41]):
        shutil.copyfile(jpeg, site.inbox / f"{i}.jpg")
    assert spawn(site, "--once", log_name="first").wait(READY_SECONDS) == 0
    filed = files_under(site.library)
    assert len(filed) == 3

    site.database_file.unlink()  # the records are gone; the images are not
    again = spawn(site, "--once", log_name="no-records")
    assert again.wait(READY_SECONDS) == 0, again.log()
    [warning] = [line for line in again.log().splitlines() if "no image rows" in line]
    assert " WARNING inboxsort.service.run: records: " in warning
    assert "the library holds 3 files" in warning and RECORDS_SECTION in warning

    # README: move the library's folders into the inbox, then start again.
    refile = site.inbox / "refile"
    refile.mkdir()
    for folder in sorted(site.library.iterdir()):
        folder.rename(refile / folder.name)
    rebuilt = spawn(site, "--once", log_name="refile")
    assert rebuilt.wait(READY_SECONDS) == 0, rebuilt.log()
    assert "no image rows" not in rebuilt.log()
    rows = site.rows()
    assert sorted(r.original_name for r in rows) == ["0.jpg", "1.jpg", "2.jpg"]
    assert all(r.status == STATUS_FILED for r in rows)
    assert sorted(p.name for p in files_under(site.library)) == ["0.jpg", "1.jpg", "2.jpg"]
    assert list(scan(site.inbox, recursive=True, ignore=Ignore(site.inbox, DEFAULT_IGNORE))) == []
