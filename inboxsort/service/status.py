"""A node's health judged from its heartbeat row: one rule for `stats` and the web page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from inboxsort.db import DAEMON_LOST, DAEMON_STOPPED, DaemonState
from inboxsort.db.heartbeat import HEARTBEAT_STALE_SECONDS


def daemon_status(
    row: DaemonState | None, *, now: dt.datetime, stale_seconds: float = HEARTBEAT_STALE_SECONDS
) -> dict[str, Any]:
    """A node's heartbeat row as JSON-ready data, with `running` and `stale` judged from its
    age and state, and `rate` (images per second since it started)."""
    keys = [c.key for c in DaemonState.__table__.columns]
    out: dict[str, Any] = dict.fromkeys(keys)
    out.update(running=False, stale=False, heartbeat_age_seconds=None, uptime_seconds=None)
    out["rate"] = None
    if row is None:
        out["reason"] = "no daemon has run on this database"
        return out
    for key in keys:
        value = getattr(row, key)
        out[key] = value.isoformat() if isinstance(value, dt.datetime) else value
    age = None if row.heartbeat_at is None else (now - row.heartbeat_at).total_seconds()
    out["heartbeat_age_seconds"] = None if age is None else round(age, 1)
    if row.started_at is not None and row.heartbeat_at is not None:
        span = (row.heartbeat_at - row.started_at).total_seconds()
        out["rate"] = round((row.processed + row.failed) / span, 2) if span > 0 else None
    if row.state == DAEMON_STOPPED:
        out["reason"] = "stopped"
    elif row.state == DAEMON_LOST:
        out["reason"] = "lost: silent too long, its files were taken over by another node"
    elif age is None or age > stale_seconds:
        # A state other than stopped with an old heartbeat: killed or crashed, not stopped.
        out["stale"] = True
        out["reason"] = f"state {row.state} but no heartbeat for over {stale_seconds:.0f} s"
    else:
        out["running"], out["reason"] = True, None
        if row.started_at is not None:
            out["uptime_seconds"] = round((now - row.started_at).total_seconds())
    return out


def fleet_status(
    beats: list[DaemonState], node: str | None, *, now: dt.datetime, stale_seconds: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`node`'s status (or, with no row for it, the node that beat last's), and every node's."""
    nodes = [daemon_status(b, now=now, stale_seconds=stale_seconds) for b in beats]
    mine = [b for b in beats if b.node == node]
    latest = sorted(beats, key=lambda b: b.heartbeat_at or now - dt.timedelta(days=36500))
    heartbeat = mine[0] if mine else (latest[-1] if latest else None)
    return daemon_status(heartbeat, now=now, stale_seconds=stale_seconds), nodes
