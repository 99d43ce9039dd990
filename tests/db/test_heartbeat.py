"""The daemon_state rows (one per node) of inboxsort.db.heartbeat, against a real SQLite file."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from inboxsort.db import DaemonState, Database, utcnow
from inboxsort.db.heartbeat import read_heartbeat, read_heartbeats, write_heartbeat


def test_heartbeat_upsert_keeps_one_row(db: Database) -> None:
    with db.session() as s:
        assert read_heartbeat(s, "a") is None
        write_heartbeat(s, node="a", pid=100, hostname="box", state="starting", started_at=utcnow())
        s.commit()
    with db.session() as s:
        row = write_heartbeat(
            s, node="a", state="running", queue_depth=3, processed=10, last_batch_ms=12.5
        )
        s.commit()
        assert row.node == "a"
    with db.session() as s:
        beat = read_heartbeat(s, "a")
        assert beat is not None
        assert (beat.pid, beat.hostname, beat.state) == (100, "box", "running")
        assert (beat.queue_depth, beat.processed, beat.failed) == (3, 10, 0)
        assert beat.heartbeat_at is not None and beat.heartbeat_at.tzinfo is not None
        assert s.scalar(select(func.count()).select_from(DaemonState)) == 1


def test_read_heartbeat_sees_fresh_values_in_a_long_session(db: Database) -> None:
    with db.session() as reader:
        with db.session() as s:
            write_heartbeat(s, node="a", state="running")
            s.commit()
        assert (beat := read_heartbeat(reader, "a")) is not None and beat.state == "running"
        reader.rollback()  # end the read snapshot, as a polling CLI would between reads
        with db.session() as s:
            write_heartbeat(s, node="a", state="stopped")
            s.commit()
        assert (beat := read_heartbeat(reader, "a")) is not None and beat.state == "stopped"


def test_write_heartbeat_rejects_unknown_fields(db: Database) -> None:
    with db.session() as session, pytest.raises(TypeError, match="bogus"):
        write_heartbeat(session, node="a", bogus=1)


def test_each_node_has_its_own_row(db: Database) -> None:
    with db.session() as s:
        write_heartbeat(s, node="scanner", state="running", processed=5)
        write_heartbeat(s, node="nas", state="running", processed=7)
        write_heartbeat(s, node="scanner", state="stopped")
        s.commit()
    with db.session() as s:
        rows = read_heartbeats(s)
        assert [(r.node, r.state, r.processed) for r in rows] == [
            ("nas", "running", 7),
            ("scanner", "stopped", 5),
        ]
