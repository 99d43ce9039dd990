"""`inboxsort stats` on a real SQLite file: counts, the model, and the daemon's heartbeat.

A live daemon's stats are tested with the daemon; here the heartbeat row is written directly
with write_heartbeat, as the daemon writes it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

import pytest

from inboxsort.cli.stats import collect_stats, render_stats
from inboxsort.config import Config, load_config
from inboxsort.db import DAEMON_RUNNING, DAEMON_STOPPED, DaemonState, open_database, utcnow
from inboxsort.db.heartbeat import write_heartbeat
from inboxsort.service.status import daemon_status
from tests.helpers.querysite import AGE, NOW, Site, build_site, run


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, tmp_path_factory, config_writer) -> Site:
    """The eight rows, in a SQLite file or in the module's PostgreSQL database."""
    url = request.getfixturevalue("pg_module_url") if request.param == "postgresql" else None
    return build_site(tmp_path_factory.mktemp("stats"), config_writer, url)


@pytest.fixture
def empty(make_config) -> Config:
    """A database at head with no images, no versions and no heartbeat."""
    config = load_config(make_config())
    open_database(config.database.url).close()
    return config


def test_stats_counts_model_and_hours(site: Site) -> None:
    with open_database(site.config.database.url, readonly=True, migrate=False) as db:
        stats = collect_stats(db, site.config.paths.models, now=site.now)
    assert stats["images"] == {
        "total": 8,
        "by_status": {"duplicate": 1, "failed": 1, "filed": 5, "pending": 1},
        "by_label": {"cats": 3, "dogs": 3},
    }
    # The correction used to train version 2 (the active one) no longer counts as new.
    assert stats["corrections"] == {"total": 2, "unused": 1}
    model = stats["model"]
    assert (model["active_version"], model["builtin"]) == (2, False)
    assert model["metrics"] == {"test": {"accuracy": 0.92}}
    hours = stats["per_hour"]
    assert len(hours) == 24 and sum(h["count"] for h in hours) == 3  # ids 1, 2 and 6
    starts = [dt.datetime.fromisoformat(h["hour"]) for h in hours]
    assert all(b - a == AGE(hours=1) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= site.now < starts[-1] + AGE(hours=1)
    assert stats["daemon"]["running"] is False


def test_stats_without_any_heartbeat(empty: Config, capsys) -> None:
    assert run(empty, "stats", "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    daemon = stats["daemon"]
    assert daemon["running"] is False and daemon["state"] is None and daemon["pid"] is None
    assert stats["images"] == {"total": 0, "by_status": {}, "by_label": {}}
    assert stats["model"]["active_version"] == 0 and stats["model"]["builtin"] is True
    assert run(empty, "stats") == 0
    text = capsys.readouterr().out
    assert "daemon: not running (no daemon has run on this database)" in text
    assert "model: version 0 (shipped)" in text


def _beat(config: Config, **fields: Any) -> None:
    with open_database(config.database.url) as db, db.begin() as session:
        write_heartbeat(session, node=config.node.name, **fields)


def test_stats_with_a_stale_heartbeat(empty: Config, capsys) -> None:
    now = utcnow()
    _beat(empty, state=DAEMON_RUNNING, pid=4242, heartbeat_at=now - AGE(seconds=45))
    assert run(empty, "stats", "--json") == 0
    daemon = json.loads(capsys.readouterr().out)["daemon"]
    assert daemon["running"] is False and daemon["state"] == "running" and daemon["pid"] == 4242
    assert daemon["heartbeat_age_seconds"] >= 45 and daemon["uptime_seconds"] is None
    assert run(empty, "stats") == 0
    assert (
        "daemon: not running (state running but no heartbeat for over 30 s; last heartbeat 4"
        in capsys.readouterr().out
    )


def test_stats_with_a_stopped_daemon(empty: Config) -> None:
    _beat(empty, state=DAEMON_STOPPED, pid=4242)  # fresh heartbeat, but stopped
    with open_database(empty.database.url, readonly=True) as db:
        stats = collect_stats(db, empty.paths.models, now=utcnow())
    assert stats["daemon"]["running"] is False and stats["daemon"]["reason"] == "stopped"


def test_stats_with_a_fresh_heartbeat(empty: Config, capsys) -> None:
    now = utcnow()
    fields = {
        "state": DAEMON_RUNNING,
        "pid": 4242,
        "hostname": "box",
        "started_at": now - AGE(hours=2),
        "heartbeat_at": now - AGE(seconds=3),
        "queue_depth": 5,
        "in_flight": 2,
        "processed": 120,
        "failed": 3,
        "last_batch_size": 8,
        "last_batch_ms": 61.5,
        "last_batch_at": now - AGE(seconds=4),
        "model_version": 0,
    }
    _beat(empty, **fields)
    assert run(empty, "stats", "--json") == 0
    daemon = json.loads(capsys.readouterr().out)["daemon"]
    assert daemon["running"] is True and daemon["reason"] is None
    for key, value in fields.items():
        shown = value.isoformat() if isinstance(value, dt.datetime) else value
        assert daemon[key] == shown, key
    assert 7200 <= daemon["uptime_seconds"] < 7300
    assert run(empty, "stats") == 0
    text = capsys.readouterr().out.splitlines()
    assert text[-2] == "daemon: running, pid 4242 on box, up 2 h 0 min, model version 0"
    assert text[-1].startswith(
        "  queue 5, in flight 2, processed 120, failed 3; last batch 8 images"
    )


def test_daemon_status_boundaries() -> None:
    row = DaemonState(state=DAEMON_RUNNING, heartbeat_at=NOW - AGE(seconds=30))
    assert daemon_status(row, now=NOW)["running"] is True
    row.heartbeat_at = NOW - AGE(seconds=31)
    assert daemon_status(row, now=NOW)["running"] is False
    row.heartbeat_at = None
    assert daemon_status(row, now=NOW)["running"] is False
    assert daemon_status(None, now=NOW)["running"] is False


def test_render_stats_of_the_site(site: Site) -> None:
    with open_database(site.config.database.url, readonly=True, migrate=False) as db:
        text = render_stats(collect_stats(db, site.config.paths.models, now=site.now))
    lines = text.splitlines()
    assert lines[0] == "images: 8 (duplicate 1, failed 1, filed 5, pending 1)"
    assert lines[1] == "labels: cats 3, dogs 3"
    assert lines[2] == "corrections: 2 (1 not yet used for training)"
    assert lines[3] == "model: version 2, 160px, test accuracy 0.9200"
    assert lines[4].startswith("last 24 h: 3 images; per hour, oldest first: ")


def test_cli_stats_json_end_to_end(site: Site, run_cli) -> None:
    result = run_cli("--config", site.config_path, "stats", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["images"]["total"] == 8 and stats["daemon"]["running"] is False


def test_stats_shows_every_node_and_marks_a_stale_one(empty: Config, capsys) -> None:
    now = utcnow()
    with open_database(empty.database.url) as db, db.begin() as session:
        write_heartbeat(
            session,
            node="scanner",
            state=DAEMON_RUNNING,
            started_at=now - AGE(seconds=100),
            heartbeat_at=now - AGE(seconds=1),
            processed=250,
            queue_depth=4,
        )
        write_heartbeat(
            session, node="nas", state=DAEMON_RUNNING, heartbeat_at=now - AGE(seconds=120)
        )
    assert run(empty, "stats", "--json") == 0
    nodes = {n["node"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert set(nodes) == {"scanner", "nas"}
    assert nodes["scanner"]["running"] is True and nodes["scanner"]["stale"] is False
    assert nodes["scanner"]["rate"] == pytest.approx(2.5, abs=0.1)
    assert nodes["nas"]["running"] is False and nodes["nas"]["stale"] is True
    assert run(empty, "stats") == 0
    text = capsys.readouterr().out
    assert "nodes:\n" in text
    assert (
        "  scanner: running, last heartbeat 1 s ago, queue 4, processed 250, 2.5 images/s" in text
    )
    assert "  nas: STALE, last heartbeat 2 min ago, queue 0, processed 0" in text
