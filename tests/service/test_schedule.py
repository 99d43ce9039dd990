"""The retrain schedule: a real BackgroundScheduler, run briefly and always shut down."""

from __future__ import annotations

import itertools
import threading
import time

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from inboxsort.config import load_config
from inboxsort.service.schedule import MISFIRE_GRACE_SECONDS, RETRAIN_JOB_ID, make_scheduler


def test_interval_job_runs_repeatedly_and_stops_with_the_scheduler(make_config):
    # 0.005 minutes = 0.3 s between runs.
    config = load_config(make_config("[retrain]\nevery_minutes = 0.005\n"))
    runs: list[float] = []
    enough = threading.Event()

    def job() -> None:
        runs.append(time.monotonic())
        if len(runs) >= 3:
            enough.set()

    scheduler = make_scheduler(config, job)
    assert not scheduler.running and runs == []
    try:
        scheduler.start()
        assert enough.wait(timeout=10), f"only {len(runs)} run(s) in 10 s"
    finally:
        scheduler.shutdown(wait=True)
    count = len(runs)
    time.sleep(0.5)
    assert len(runs) == count, "the job ran after shutdown"
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert all(gap > 0.2 for gap in gaps), gaps


def test_job_options_and_a_cron_trigger(make_config):
    config = load_config(make_config('[retrain]\ncron = "30 3 * * *"\n'))
    scheduler = make_scheduler(config, lambda: None)
    (job,) = scheduler.get_jobs()
    assert job.id == RETRAIN_JOB_ID
    assert isinstance(job.trigger, CronTrigger)
    assert str(job.trigger.fields[5]) == "3" and str(job.trigger.fields[6]) == "30"
    assert (job.max_instances, job.coalesce) == (1, True)
    assert job.misfire_grace_time == MISFIRE_GRACE_SECONDS
    assert not scheduler.running


def test_without_cron_the_interval_is_every_minutes(make_config):
    scheduler = make_scheduler(load_config(make_config()), lambda: None)
    (job,) = scheduler.get_jobs()
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval.total_seconds() == 60 * 60


def test_disabled_retraining_schedules_nothing(make_config):
    config = load_config(make_config("[retrain]\nenabled = false\n"))
    scheduler = make_scheduler(config, lambda: None)
    assert scheduler.get_jobs() == []
