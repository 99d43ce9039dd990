"""When retraining runs: an APScheduler BackgroundScheduler the daemon starts and stops."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from inboxsort.config import Config

log = logging.getLogger(__name__)

RETRAIN_JOB_ID = "retrain"
# A run missed by up to this much (the machine slept, the daemon was busy) still runs once.
MISFIRE_GRACE_SECONDS = 600


def retrain_trigger(config: Config) -> Any:
    """retrain.cron as a CronTrigger when set, else an IntervalTrigger of retrain.every_minutes."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if config.retrain.cron:
        return CronTrigger.from_crontab(config.retrain.cron)  # validated by config already
    return IntervalTrigger(seconds=config.retrain.every_minutes * 60)


def make_scheduler(config: Config, job: Callable[[], object]) -> Any:
    """A BackgroundScheduler, not started, with `job` on the retrain schedule.

    With retrain.enabled false it holds no job, so the daemon can start and stop it the same
    way either way. One run at a time (max_instances=1); runs missed while one was busy or the
    machine slept collapse into one (coalesce) if no later than MISFIRE_GRACE_SECONDS.
    """
    from apscheduler.schedulers.background import BackgroundScheduler

    # One worker thread: the only job trains in a child process and must never overlap itself.
    scheduler = BackgroundScheduler(executors={"default": {"type": "threadpool", "max_workers": 1}})
    if not config.retrain.enabled:
        log.info("retraining is off (retrain.enabled = false)")
        return scheduler
    trigger = retrain_trigger(config)
    scheduler.add_job(
        job,
        trigger,
        id=RETRAIN_JOB_ID,
        name="retrain on corrections",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=MISFIRE_GRACE_SECONDS,
        replace_existing=True,
    )
    when = (
        f"on cron {config.retrain.cron!r}"
        if config.retrain.cron
        else f"every {config.retrain.every_minutes:g} min"
    )
    log.info(
        "retraining scheduled %s, when %d or more new corrections are in",
        when,
        config.retrain.min_new_corrections,
    )
    return scheduler
