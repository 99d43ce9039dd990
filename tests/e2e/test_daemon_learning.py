"""The learning loop inside a running daemon: the scheduled job, the user's moves, the swap.

Real daemon, real watchdog on inbox and library, real SQLite, the tiny Keras model, and the real
retrain job started by APScheduler (it trains in a child process).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tests.helpers.daemonkit import running_daemon, wait_for

OTHER = {"cats": "dogs", "dogs": "cats"}
RETRAIN_SECONDS = 300.0  # a child process imports TensorFlow and trains, on 2 busy cores


def test_the_scheduled_job_skips_below_the_threshold_then_learns_the_users_moves(
    new_site, validation_jpegs, caplog, db_url
):
    caplog.set_level(logging.INFO, logger="inboxsort")
    wanted = 6
    site = new_site(
        database_url=db_url,
        # every 1.8 s: the job runs many times during the test; one run at a time.
        retrain={"every_minutes": 0.03, "min_new_corrections": wanted, "epochs": 1},
        filing={"review_below": 0.0},
    )
    images = validation_jpegs["cats"][40:52] + validation_jpegs["dogs"][40:52]
    with running_daemon(site) as daemon:
        assert daemon._scheduler is not None and daemon._scheduler.get_job("retrain")
        for source in images:
            shutil.copyfile(source, site.inbox / source.name)
        wait_for(lambda: site.settled(len(images)), "the images filed", describe=site.describe)
        skipped = f"retrain: skipped: 0 new correction(s) for version 1, {wanted} needed"
        wait_for(lambda: skipped in caplog.text, "the job skipping with too few corrections")

        # The user fixes images by moving them into the other class folder, as with `mv`.
        rows = site.rows()
        for row in rows[:wanted]:
            path = Path(row.path)
            path.rename(site.library / OTHER[row.label] / path.name)
        wait_for(
            lambda: len(site.query("SELECT id FROM corrections")) == wanted,
            f"{wanted} corrections recorded",
        )
        wait_for(
            lambda: site.query("SELECT version FROM model_versions WHERE version = 2"),
            "the scheduled job registering candidate version 2",
            timeout=RETRAIN_SECONDS,
        )
        (promoted, active), *_ = site.query(
            "SELECT promoted, active FROM model_versions WHERE version = 2"
        )
        serving = 2 if promoted else 1
        assert bool(active) == bool(promoted)
        # A promoted candidate is served within seconds, with no restart.
        wait_for(lambda: daemon.model.version() == serving, f"serving v{serving}")
        late = validation_jpegs["dogs"][60]
        shutil.copyfile(late, site.inbox / late.name)
        wait_for(lambda: site.settled(len(images) + 1), "a later image filed")

    (metrics,) = site.query("SELECT metrics FROM model_versions WHERE version = 2")[0]
    assert '"gate"' in metrics
    assert site.row_by_name(late.name).model_version == serving
    used = site.query("SELECT used_in_version FROM corrections")
    assert all(u in (None, 2) for (u,) in used) and any(u == 2 for (u,) in used)
    # A rejected candidate's corrections are not new again: the job skips from then on.
    if not promoted:
        assert "not promoted" in caplog.text
