"""A real daemon run leaves its batch histograms in its heartbeat: every image counted once."""

from __future__ import annotations

import re
import shutil

from inboxsort.db.histograms import BATCH_SIZE_BOUNDS, Histogram
from tests.helpers.daemonkit import READY_SECONDS, Site


def test_the_heartbeat_histograms_count_every_batch_and_image_of_a_run(
    new_site, spawn, validation_jpegs
):
    site: Site = new_site(batch={"max_size": 4})
    for path in validation_jpegs["cats"][:5] + validation_jpegs["dogs"][:5]:
        shutil.copy(path, site.inbox / path.name)
    (site.inbox / "notes.jpg").write_text("not a picture")

    once = spawn(site, "--once", log_name="once")
    assert once.wait(READY_SECONDS) == 0, once.log()

    beat = site.heartbeat()
    assert beat is not None and beat.batch_histograms is not None, once.log()
    sizes = Histogram.from_json(beat.batch_histograms["batch_size"])
    latency = Histogram.from_json(beat.batch_histograms["batch_latency_seconds"])
    # The daemon's own word for each batch it did: one log line each.
    logged = [int(n) for n in re.findall(r"batch of (\d+) in \d+ ms", once.log())]
    assert sizes.sum == sum(logged) == beat.processed + beat.failed == 11
    assert (beat.processed, beat.failed) == (10, 1)
    assert sizes.count == latency.count == len(logged) >= 3  # 11 images, 4 at most a batch
    # No batch above max_size: every one at or below the bound 4.
    assert sizes.cumulative()[BATCH_SIZE_BOUNDS.index(4)] == sizes.count
    assert latency.sum > 0
    assert sizes.bounds == tuple(float(b) for b in BATCH_SIZE_BOUNDS)
