"""Counts and the daemon's state, for the dashboard, /api/stats and Prometheus's /metrics.

The daemon opens no socket of its own: it already writes its live counters (queue depth, in
flight, processed, failed, last batch, batch histograms) into its heartbeat row every few
seconds, and every other figure is a count over the images, corrections and model_versions
tables (retrain durations: the wall seconds each retrained version's metrics recorded).
So the web process reads the same rows `inboxsort stats` reads, and the two cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from inboxsort.config import NodeConfig
from inboxsort.db import Database
from inboxsort.db.counts import (
    count_by_label,
    count_by_status,
    count_corrections,
    received_since,
)
from inboxsort.db.heartbeat import read_heartbeats
from inboxsort.db.histograms import (
    BATCH_LATENCY,
    BATCH_SIZE,
    RETRAIN_SECONDS_BOUNDS,
    Histogram,
)
from inboxsort.db.review import (
    corrections_by_source,
    count_by_status_label,
    failed_errors,
    retrain_durations,
    retrain_outcomes,
)
from inboxsort.model.registry import ModelStore
from inboxsort.service.status import fleet_status

log = logging.getLogger(__name__)


def failure_reason(error: str | None) -> str:
    """The kind of a failure: its error text up to the first colon ("not an image", ...)."""
    if not error:
        return "unknown"
    return error.split(":", 1)[0].strip()[:60] or "unknown"


def collect(
    db: Database, store: ModelStore, *, now: dt.datetime, node: NodeConfig
) -> dict[str, Any]:
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
        # The node `inboxsort stats` shows with this config: this host's, or the last to beat.
        daemon, nodes = fleet_status(
            read_heartbeats(session), node.name, now=now, stale_seconds=node.stale_seconds
        )
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
        "daemon": daemon,
        "nodes": nodes,
    }


class _StatsCollector(Collector):
    """Reads the database at each scrape: the exposition is always the database's truth now."""

    def __init__(self, db: Database, store: ModelStore, node: NodeConfig) -> None:
        self.db = db
        self.store = store
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        yield from _histograms(self.db)
        stats = collect(self.db, self.store, now=dt.datetime.now(dt.UTC), node=self.node)
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


def _family(name: str, text: str, label: str, by: dict[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, text, labels=[label])
    for value, histogram in sorted(by.items()):
        bounds = [str(b) for b in histogram.bounds] + ["+Inf"]  # 1.0, 0.025: as Go writes them
        family.add_metric(
            [value], list(zip(bounds, histogram.cumulative(), strict=True)), histogram.sum
        )
    return family


def _histograms(db: Database) -> Iterator[HistogramMetricFamily]:
    """Each node's batch histograms from its heartbeat row, and the retrains' durations."""
    sizes: dict[str, Histogram] = {}
    latencies: dict[str, Histogram] = {}
    retrains = {"promoted": Histogram(RETRAIN_SECONDS_BOUNDS)}
    retrains["refused"] = Histogram(RETRAIN_SECONDS_BOUNDS)
    with db.session() as session:
        for row in read_heartbeats(session):
            stored = row.batch_histograms
            if not stored:
                continue  # a daemon from before revision 0005, or one that has not started
            try:
                size = Histogram.from_json(stored[BATCH_SIZE])
                latency = Histogram.from_json(stored[BATCH_LATENCY])
            except (KeyError, TypeError, ValueError) as exc:
                # One node's damaged row must not cost the whole scrape.
                log.warning("node %s: unreadable batch_histograms left out: %r", row.node, exc)
                continue
            sizes[row.node], latencies[row.node] = size, latency
        for outcome, seconds in retrain_durations(session):
            retrains[outcome].observe(seconds)
    yield _family(
        "inboxsort_batch_size", "Images per batch since the daemon started", "node", sizes
    )
    yield _family(
        "inboxsort_batch_latency_seconds",
        "Seconds per batch, from its start to its last image filed, since the daemon started",
        "node",
        latencies,
    )
    yield _family(
        "inboxsort_retrain_duration_seconds",
        "Wall seconds of each gated retrain's worker, by the gate's outcome",
        "outcome",
        retrains,
    )


def exposition(db: Database, store: ModelStore, node: NodeConfig) -> bytes:
    """The Prometheus text format of every metric, read from the database now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(db, store, node))
    return generate_latest(registry)
