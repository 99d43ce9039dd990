"""/metrics parses as Prometheus text and agrees with `inboxsort stats`; the JSON series."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from inboxsort.db import DAEMON_RUNNING, STATUS_FAILED, Correction, utcnow
from inboxsort.db import Image as Row
from inboxsort.db.heartbeat import write_heartbeat
from inboxsort.db.versions import add_version
from inboxsort.intake.inference import BatchHistograms
from inboxsort.trainer.retrain.records import Judged, PlanSummary, RetrainMetrics
from tests.web.conftest import WebSite, csrf_of


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _fail(site: WebSite, name: str, error: str, seed: int) -> None:
    image_id = site.file("cats", name, label=None, score=0.0, seed=seed)
    with site.db.begin() as session:
        row = session.get(Row, image_id)
        assert row is not None
        row.status, row.error = STATUS_FAILED, error


def test_metrics_parse_and_match_inboxsort_stats(
    site: WebSite, run_cli: Callable[..., Any]
) -> None:
    _fail(site, "a.jpg", "not an image: text", 20)
    _fail(site, "b.jpg", "not an image: HTML", 21)
    _fail(site, "c.jpg", "cannot decode: image file is truncated", 22)
    with site.db.begin() as session:
        write_heartbeat(
            session,
            node="box",
            state=DAEMON_RUNNING,
            pid=4242,
            hostname="box",
            started_at=utcnow(),
            queue_depth=7,
            in_flight=3,
            processed=120,
            failed=3,
            last_batch_size=16,
            last_batch_ms=250.0,
            model_version=0,
        )
    with site.client() as client:
        headers = {"X-CSRF-Token": csrf_of(client)}
        client.post(
            f"/api/images/{site.ids['cat1']}/label", json={"label": "dogs"}, headers=headers
        )
        text = client.get("/metrics").text
    assert site.config.source is not None
    cli = run_cli("--config", site.config.source, "stats", "--json")
    assert cli.returncode == 0, cli.stderr
    stats = json.loads(cli.stdout)
    samples = _samples(text)

    images = {k[1]: v for k, v in samples.items() if k[0] == "inboxsort_images"}
    by_status: dict[str, float] = {}
    by_label: dict[str, float] = {}
    for labels, value in images.items():
        d = dict(labels)
        by_status[d["status"]] = by_status.get(d["status"], 0) + value
        if d["label"]:
            by_label[d["label"]] = by_label.get(d["label"], 0) + value
    assert by_status == stats["images"]["by_status"] == {"filed": 4, "failed": 3}
    assert by_label == stats["images"]["by_label"]
    corrections = sum(v for k, v in samples.items() if k[0] == "inboxsort_corrections_total")
    assert corrections == stats["corrections"]["total"] == 1
    assert samples[("inboxsort_corrections_total", (("source", "review"),))] == 1
    reasons = {
        dict(k[1])["reason"]: v for k, v in samples.items() if k[0] == "inboxsort_images_failed"
    }
    assert reasons == {"not an image": 2, "cannot decode": 1}
    assert samples[("inboxsort_active_model_version", ())] == stats["model"]["active_version"]
    daemon = stats["daemon"]
    assert samples[("inboxsort_daemon_up", ())] == int(daemon["running"]) == 1
    assert samples[("inboxsort_daemon_processed_total", ())] == daemon["processed"] == 120
    assert samples[("inboxsort_daemon_failed_total", ())] == daemon["failed"] == 3
    assert samples[("inboxsort_daemon_queue_depth", ())] == daemon["queue_depth"] == 7
    assert samples[("inboxsort_daemon_last_batch_seconds", ())] == 0.25
    assert samples[("inboxsort_model_versions_total", (("outcome", "promoted"),))] == 0


def test_metrics_without_a_daemon_say_it_is_down(site: WebSite) -> None:
    with site.client() as client:
        samples = _samples(client.get("/metrics").text)
    assert samples[("inboxsort_daemon_up", ())] == 0
    assert not any(name.startswith("inboxsort_daemon_processed") for name, _ in samples)


def test_series_buckets_images_per_hour_and_corrections_per_day(site: WebSite) -> None:
    now = dt.datetime.now(dt.UTC)
    with site.db.begin() as session:
        old = session.get(Row, site.ids["cat1"])
        assert old is not None
        old.received_at = now - dt.timedelta(days=3)
        for days in (0, 0, 2, 40):
            session.add(
                Correction(
                    image_id=site.ids["dog1"],
                    old_label="cats",
                    new_label="dogs",
                    source="label",
                    created_at=now - dt.timedelta(days=days),
                )
            )
    with site.client() as client:
        week = client.get("/api/series?days=7").json()
        bad = client.get("/api/series?days=1000")
        words = client.get("/api/series?days=week")
    assert len(week["hours"]) == len(week["images_per_hour"]) == 24 * 7
    # The fixture's rows were made seconds ago: this hour, or the last one at an hour's turn.
    assert sum(week["images_per_hour"][-2:]) == 3
    assert week["images_per_hour"][-1 - 72] == 1
    assert sum(week["images_per_hour"]) == 4
    assert week["corrections_per_day"][-1] == 2 and week["corrections_per_day"][-3] == 1
    assert sum(week["corrections_per_day"]) == 3
    assert week["hours"][1] - week["hours"][0] == 3600
    assert bad.status_code == 400 and words.status_code == 400
    assert "expected an integer from 1 to 90" in bad.json()["error"]


def test_stats_json_endpoint(site: WebSite) -> None:
    with site.client() as client:
        stats = client.get("/api/stats").json()
        page = client.get("/dashboard")
    assert stats["images"]["by_label"] == {"cats": 2, "dogs": 2}
    assert stats["images"]["received_last_hour"] == 4
    assert stats["daemon"]["running"] is False
    assert page.status_code == 200 and 'id="hourly-chart"' in page.text


def _retrained(session: Any, version: int, *, promoted: bool | None, total: float | None) -> None:
    """A version row as a retrain registers it: its metrics carry the worker's wall seconds."""
    plan = PlanSummary(
        corrections=8, replay=0, held_out_corrections=2, gate_set=10, gate_source="x", ignored={}
    )
    metrics = RetrainMetrics(
        active=Judged(None, None),
        candidate=Judged(None, None),
        gate_source="x",
        tolerance=0.01,
        started_at=utcnow(),
        plan=plan,
        wall_seconds={} if total is None else {"load": 1.0, "fit": total - 2, "total": total},
    ).to_json()
    add_version(
        session,
        version=version,
        path=f"/models/{version:04d}",
        metrics=metrics,
        active=False,
        parent=0,
        promoted=promoted,
        note=None,
        image_size=96,
        classes=["cats", "dogs"],
    )


def test_metrics_have_batch_histograms_per_node_and_retrain_durations(site: WebSite) -> None:
    a, b = BatchHistograms(), BatchHistograms()
    for size, seconds in ((1, 0.02), (16, 0.2), (32, 0.4)):
        a.observe(size, seconds)
    b.observe(5, 3.0)
    with site.db.begin() as session:
        write_heartbeat(session, node="a", state=DAEMON_RUNNING, batch_histograms=a.to_json())
        write_heartbeat(session, node="b", state=DAEMON_RUNNING, batch_histograms=b.to_json())
        write_heartbeat(session, node="old", state=DAEMON_RUNNING)  # an older daemon: none
        damaged = {"batch_size": {"bounds": [1], "buckets": [5], "sum": 1, "count": 5}}
        write_heartbeat(session, node="zz", state=DAEMON_RUNNING, batch_histograms=damaged)
        _retrained(session, 1, promoted=True, total=45.0)
        _retrained(session, 2, promoted=False, total=700.0)
        _retrained(session, 3, promoted=False, total=50.0)
        _retrained(session, 4, promoted=True, total=None)  # from before durations were kept
        _retrained(session, 5, promoted=None, total=9.0)  # trained by hand: not a retrain
    with site.client() as client:
        text = client.get("/metrics").text
    samples = _samples(text)

    def buckets(name: str, label: str, value: str) -> dict[str, float]:
        return {
            dict(labels)["le"]: v
            for (sample, labels), v in samples.items()
            if sample == f"{name}_bucket" and (label, value) in labels
        }

    assert buckets("inboxsort_batch_size", "node", "a") == {
        "1.0": 1, "2.0": 1, "4.0": 1, "8.0": 1, "16.0": 2, "32.0": 3, "64.0": 3, "+Inf": 3
    }  # fmt: skip
    assert samples[("inboxsort_batch_size_sum", (("node", "a"),))] == 49
    assert samples[("inboxsort_batch_size_count", (("node", "a"),))] == 3
    assert buckets("inboxsort_batch_size", "node", "b")["4.0"] == 0
    assert buckets("inboxsort_batch_size", "node", "b")["8.0"] == 1
    latency = buckets("inboxsort_batch_latency_seconds", "node", "a")
    assert [latency[le] for le in ("0.01", "0.025", "0.25", "0.5", "+Inf")] == [0, 1, 2, 3, 3]
    assert samples[("inboxsort_batch_latency_seconds_sum", (("node", "a"),))] == 0.62
    assert samples[("inboxsort_batch_latency_seconds_count", (("node", "b"),))] == 1
    assert not buckets("inboxsort_batch_size", "node", "old")
    assert not buckets("inboxsort_batch_size", "node", "zz")  # left out, the rest still served

    promoted = buckets("inboxsort_retrain_duration_seconds", "outcome", "promoted")
    refused = buckets("inboxsort_retrain_duration_seconds", "outcome", "refused")
    assert (promoted["30.0"], promoted["60.0"], promoted["+Inf"]) == (0, 1, 1)
    assert (refused["30.0"], refused["60.0"], refused["600.0"], refused["1200.0"]) == (0, 1, 1, 2)
    key = "inboxsort_retrain_duration_seconds"
    assert samples[(f"{key}_sum", (("outcome", "promoted"),))] == 45
    assert samples[(f"{key}_sum", (("outcome", "refused"),))] == 750
    assert samples[(f"{key}_count", (("outcome", "refused"),))] == 2
