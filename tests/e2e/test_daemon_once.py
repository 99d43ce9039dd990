"""`inboxsort run --once` also reconciles the library: corrections made while no daemon ran."""

from __future__ import annotations

from pathlib import Path

from inboxsort.db import STATUS_DELETED, STATUS_FILED, open_database
from tests.helpers.daemonkit import READY_SECONDS, Site
from tests.helpers.filedrows import file_image


def test_run_once_records_moves_and_deletions_made_while_no_daemon_ran(
    new_site, spawn, validation_jpegs
):
    site: Site = new_site()
    cats = site.library / "cats"
    with open_database(site.config.database.url) as db:
        moved_id = file_image(db, cats / "moved.jpg", "cats", source=validation_jpegs["cats"][70])
        kept_id = file_image(db, cats / "kept.jpg", "cats", source=validation_jpegs["cats"][71])
        gone_id = file_image(db, cats / "gone.jpg", "cats", source=validation_jpegs["cats"][72])
    # While no daemon runs: the user corrects one image and deletes another.
    (site.library / "dogs").mkdir()
    (cats / "moved.jpg").rename(site.library / "dogs" / "moved.jpg")
    (cats / "gone.jpg").unlink()

    once = spawn(site, "--once", log_name="once")
    assert once.wait(READY_SECONDS) == 0, once.log()

    rows = {r.id: r for r in site.rows()}
    assert (rows[moved_id].status, rows[moved_id].label) == (STATUS_FILED, "dogs")
    assert Path(rows[moved_id].path) == site.library / "dogs" / "moved.jpg"
    assert (rows[kept_id].status, Path(rows[kept_id].path)) == (STATUS_FILED, cats / "kept.jpg")
    assert rows[gone_id].status == STATUS_DELETED
    corrections = site.query("SELECT image_id, old_label, new_label, source FROM corrections")
    assert corrections == [(moved_id, "cats", "dogs", "move")]
    assert "library reconciled" in once.log()
    # Nothing else changed on disk, and no observer was left to watch the library.
    assert sorted(p.relative_to(site.library).as_posix() for p in site.outputs()) == [
        "cats/kept.jpg",
        "dogs/moved.jpg",
    ]
