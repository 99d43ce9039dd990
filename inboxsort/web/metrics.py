"""Counts and the daemon's state, for the dashboard, /api/stats and Prometheus's /metrics.

The daemon opens no socket of its own: it already writes its live counters (queue depth, in
flight, processed, failed, last batch) into the database's heartbeat row every few seconds,
and every other figure is a count over the images, corrections and model_versions tables.
So the web process reads the same rows `inboxsort stats` reads, and the two cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from inboxsort.db import DAEMON_STOPPED, Database
from inboxsort.db.counts import (
    count_by_label,
    count_by_status,
    count_corrections,
    received_since,
)
from inboxsort.db.heartbeat import read_heartbeat
from inboxsort.db.review import (
    corrections_by_source,
    count_by_status_label,
    failed_errors,
    retrain_outcomes,
)
from inboxsort.model.registry import ModelStore

# The same age as `inboxsort stats` allows before it calls a heartbeat stale.
HEARTBEAT_STALE_SECONDS = 30.0


def failure_reason(error: str | None) -> str:
    """The kind of a failure: its error text up to the first colon ("not an image", ...)."""
    if not error:
        return "unknown"
    return error.split(":", 1)[0].strip()[:60] or "unknown"


def daemon_summary(db: Database, *, now: dt.datetime) -> dict[str, Any]:
    """The heartbeat row as JSON-ready data, and whether the daemon is running now."""
    with db.session() as session:
        row = read_heartbeat(session)
        if row is None:
            return {"running": False, "reason": "no daemon has run on this database"}
        age = None if row.heartbeat_at is None else (now - row.heartbeat_at).total_seconds()
        if row.state == DAEMON_STOPPED:
            reason: str | None = "stopped"
        elif age is None or age > HEARTBEAT_STALE_SECONDS:
            reason = f"no heartbeat for over {HEARTBEAT_STALE_SECONDS:.0f} s"
        else:
            reason = None
        return {
            "running": reason is None,
            "reason": reason,
            "state": row.state,
            "pid": row.pid,
            "hostname": row.hostname,
            "heartbeat_age_seconds": None if age is None else round(age, 1),
            "queue_depth": row.queue_depth,
            "in_flight": row.in_flight,
            "processed": row.processed,
            "failed": row.failed,
            "last_batch_size": row.last_batch_size,
            "last_batch_ms": row.last_batch_ms,
            "model_version": row.model_version,
        }


def collect(db: Database, store: ModelStore, *, now: dt.datetime) -> dict[str, Any]:
    """Counts by status, label and reason, corrections, the active model and the daemon."""
    active = store.active_version()
    with db.session() as session:
        by_status = count_by_status(session)
        by_label = count_by_label(session)
        pairs = count_by_status_label(session)
        reasons: dict[str, int] = {}
        for error, count in failed_errors(session):
            reason = failure_reason(error)
            reasons[reason] = reasons.get(reason, 0) + count
        corrections = count_corrections(session)
        sources = corrections_by_source(session)
        outcomes = retrain_outcomes(session)
        last_hour = len(received_since(session, now - dt.timedelta(hours=1)))
    return {
        "images": {
            "total": sum(by_status.values()),
            "by_status": dict(sorted(by_status.items())),
            "by_label": dict(sorted(by_label.items())),
            "by_status_label": [
                {"status": s, "label": label, "count": n} for s, label, n in sorted(pairs, key=str)
            ],
            "failed_by_reason": dict(sorted(reasons.items())),
            "received_last_hour": last_hour,
        },
        "corrections": {"total": corrections, "by_source": dict(sorted(sources.items()))},
        "model": {"active_version": active},
        "retrains": outcomes,
        "daemon": daemon_summary(db, now=now),
    }


class _StatsCollector(Collector):
    """Reads the database at each scrape: the exposition is always the database's truth now."""

    def __init__(self, db: Database, store: ModelStore) -> None:
        self.db = db
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = collect(self.db, self.store, now=dt.datetime.now(dt.UTC))
        images = GaugeMetricFamily(
            "inboxsort_images",
            "Images in the database by status and label",
            labels=["status", "label"],
        )
        for pair in stats["images"]["by_status_label"]:
            images.add_metric([pair["status"], pair["label"] or ""], pair["count"])
        yield images
        failed = GaugeMetricFamily(
            "inboxsort_images_failed", "Failed images by reason", labels=["reason"]
        )
        for reason, count in stats["images"]["failed_by_reason"].items():
            failed.add_metric([reason], count)
        yield failed
        corrections = CounterMetricFamily(
            "inboxsort_corrections", "Corrections recorded, by source", labels=["source"]
        )
        for source, count in stats["corrections"]["by_source"].items():
            corrections.add_metric([source], count)
        yield corrections
        retrains = CounterMetricFamily(
            "inboxsort_model_versions", "Model versions by gate outcome", labels=["outcome"]
        )
        for outcome, count in stats["retrains"].items():
            retrains.add_metric([outcome], count)
        yield retrains
        yield GaugeMetricFamily(
            "inboxsort_active_model_version",
            "The model version the database marks active (0: shipped)",
            value=stats["model"]["active_version"],
        )
        yield from _daemon_metrics(stats["daemon"])


def _daemon_metrics(daemon: dict[str, Any]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    yield GaugeMetricFamily(
        "inboxsort_daemon_up",
        "1 while the daemon's heartbeat is fresh",
        value=int(daemon["running"]),
    )
    if "processed" not in daemon:
        return
    counters = (("processed", "Images processed"), ("failed", "Images failed"))
    for key, text in counters:
        yield CounterMetricFamily(
            f"inboxsort_daemon_{key}", f"{text} since the daemon started", value=daemon[key]
        )
    gauges = (
        ("queue_depth", "Decoded images waiting for the model"),
        ("in_flight", "Images claimed and not yet filed"),
        ("last_batch_size", "Images in the last batch"),
    )
    for key, text in gauges:
        yield GaugeMetricFamily(f"inboxsort_daemon_{key}", text, value=daemon[key] or 0)
    ms = daemon["last_batch_ms"]
    yield GaugeMetricFamily(
        "inboxsort_daemon_last_batch_seconds",
        "How long the last batch took",
        value=0.0 if ms is None else ms / 1000,
    )


def exposition(db: Database, store: ModelStore) -> bytes:
    """The Prometheus text format of every metric, read from the database now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(db, store))
    return generate_latest(registry)
