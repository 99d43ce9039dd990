"""`inboxsort stats`: counts by label and status, corrections, the model, the daemon's health.

Read-only and TensorFlow-free like `query`; `daemon.running` is judged from the heartbeat row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inboxsort.cli.common import open_readonly, write_out
from inboxsort.config import Config
from inboxsort.service.status import fleet_status

if TYPE_CHECKING:
    from inboxsort.db import Database


def add_commands(sub: Any) -> None:
    """Register stats on the CLI's subparsers."""
    stats = sub.add_parser("stats", help="counts, the active model and the daemon's health")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(handler=cmd_stats)


def collect_stats(
    db: Database,
    models_dir: Path,
    *,
    now: dt.datetime,
    node: str | None = None,
    stale_seconds: float = 30.0,
) -> dict[str, Any]:
    """Everything `inboxsort stats` reports, as JSON-ready data.

    `daemon` is the node `node` (this config's), or with none the one that beat last;
    `nodes` has every node of the fleet sharing the database.
    """
    from inboxsort.db.counts import (
        count_by_label,
        count_by_status,
        count_corrections,
        received_since,
    )
    from inboxsort.db.heartbeat import read_heartbeats
    from inboxsort.db.queries import corrections_since
    from inboxsort.model.registry import ModelStore

    versions = ModelStore(models_dir, db).versions()
    active = next(v for v in versions if v.active)
    first_hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=23)
    with db.session() as session:
        by_status = count_by_status(session)
        by_label = count_by_label(session)
        corrections = count_corrections(session)
        # Same rule as the retrainer: not yet seen by a model trained from the active one.
        unused = len(corrections_since(session, active.version))
        per_hour = [0] * 24
        for received in received_since(session, first_hour):
            per_hour[min(23, int((received - first_hour).total_seconds() // 3600))] += 1
        daemon, nodes = fleet_status(
            read_heartbeats(session), node, now=now, stale_seconds=stale_seconds
        )
    return {
        "images": {
            "total": sum(by_status.values()),
            "by_status": dict(sorted(by_status.items())),
            "by_label": dict(sorted(by_label.items())),
        },
        "corrections": {"total": corrections, "unused": unused},
        "model": {
            "active_version": active.version,
            "builtin": active.builtin,
            "path": active.path,
            "image_size": active.image_size,
            "classes": active.classes,
            "metrics": active.metrics,
        },
        "per_hour": [
            {"hour": (first_hour + dt.timedelta(hours=n)).isoformat(), "count": count}
            for n, count in enumerate(per_hour)
        ],
        "daemon": daemon,
        "nodes": nodes,
    }


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def render_stats(stats: dict[str, Any]) -> str:
    """`inboxsort stats` as lines of text."""
    images, model, daemon = stats["images"], stats["model"], stats["daemon"]
    counts = ", ".join(f"{k} {v}" for k, v in images["by_status"].items())
    labels = ", ".join(f"{k} {v}" for k, v in images["by_label"].items())
    acc = ((model["metrics"] or {}).get("test") or {}).get("accuracy")
    hours = [h["count"] for h in stats["per_hour"]]
    lines = [
        f"images: {images['total']}" + (f" ({counts})" if counts else ""),
        f"labels: {labels or 'none yet'}",
        f"corrections: {stats['corrections']['total']} "
        f"({stats['corrections']['unused']} not yet used for training)",
        f"model: version {model['active_version']}"
        + (" (shipped)" if model["builtin"] else "")
        + f", {model['image_size'] or '?'}px"
        + ("" if acc is None else f", test accuracy {acc:.4f}"),
        f"last 24 h: {sum(hours)} images; per hour, oldest first: {' '.join(map(str, hours))}",
    ]
    if len(stats.get("nodes", [])) > 1:
        lines.append("nodes:")
        lines += [f"  {_node_line(n)}" for n in stats["nodes"]]
    if not daemon["running"]:
        age = daemon["heartbeat_age_seconds"]
        last = "" if age is None else f"; last heartbeat {_ago(age)} ago"
        lines.append(f"daemon: not running ({daemon['reason']}{last})")
        return "\n".join(lines) + "\n"
    batch = (
        "no batch yet"
        if daemon["last_batch_size"] is None
        else f"last batch {daemon['last_batch_size']} images in "
        f"{daemon['last_batch_ms'] or 0:.0f} ms at {daemon['last_batch_at']}"
    )
    uptime = daemon["uptime_seconds"]
    lines += [
        f"daemon: {daemon['state']}, pid {daemon['pid']} on {daemon['hostname'] or '?'}"
        + ("" if uptime is None else f", up {_ago(uptime)}")
        + f", model version {daemon['model_version']}",
        f"  queue {daemon['queue_depth']}, in flight {daemon['in_flight']}, "
        f"processed {daemon['processed']}, failed {daemon['failed']}; {batch}",
    ]
    return "\n".join(lines) + "\n"


def _node_line(node: dict[str, Any]) -> str:
    """One node of the fleet: state, last heartbeat, queue, rate; STALE when it went silent."""
    age = node["heartbeat_age_seconds"]
    beat = "never" if age is None else f"{_ago(age)} ago"
    state = "STALE" if node["stale"] else node["state"]
    rate = "" if node["rate"] is None else f", {node['rate']:.1f} images/s"
    return (
        f"{node['node']}: {state}, last heartbeat {beat}, queue {node['queue_depth']}, "
        f"processed {node['processed']}{rate}"
    )


def cmd_stats(config: Config, args: argparse.Namespace) -> int:
    """Print counts, the active model and whether the daemon is alive."""
    with open_readonly(config) as db:
        stats = collect_stats(
            db,
            config.paths.models,
            now=dt.datetime.now(dt.UTC),
            node=config.node.name,
            stale_seconds=config.node.stale_seconds,
        )
    write_out(json.dumps(stats, indent=2) + "\n" if args.json else render_stats(stats))
    return 0
