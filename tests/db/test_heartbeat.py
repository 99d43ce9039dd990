"""The daemon_state row of inboxsort.db.heartbeat, against a real SQLite file."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from inboxsort.db import DAEMON_ROW_ID, DaemonState, Database, utcnow
from inboxsort.db.heartbeat import read_heartbeat, write_heartbeat


def test_heartbeat_upsert_keeps_one_row(db: Database) -> None:
    with db.session() as s:
        assert read_heartbeat(s) is None
        write_heartbeat(s, pid=100, hostname="box", state="starting", started_at=utcnow())
        s.commit()
    with db.session() as s:
        row = write_heartbeat(s, state="running", queue_depth=3, processed=10, last_batch_ms=12.5)
        s.commit()
        assert row.id == DAEMON_ROW_ID
    with db.session() as s:
        beat = read_heartbeat(s)
        assert beat is not None
        assert (beat.pid, beat.hostname, beat.state) == (100, "box", "running")
        assert (beat.queue_depth, beat.processed, beat.failed) == (3, 10, 0)
        assert beat.heartbeat_at is not None and beat.heartbeat_at.tzinfo is not None
        assert s.scalar(select(func.count()).select_from(DaemonState)) == 1


def test_read_heartbeat_sees_fresh_values_in_a_long_session(db: Database) -> None:
    with db.session() as reader:
        with db.session() as s:
            write_heartbeat(s, state="running")
            s.commit()
        assert (beat := read_heartbeat(reader)) is not None and beat.state == "running"
        reader.rollback()  # end the read snapshot, as a polling CLI would between reads
        with db.session() as s:
            write_heartbeat(s, state="stopped")
            s.commit()
        assert (beat := read_heartbeat(reader)) is not None and beat.state == "stopped"


def test_write_heartbeat_rejects_unknown_fields(db: Database) -> None:
    with db.session() as session, pytest.raises(TypeError, match="bogus"):
        write_heartbeat(session, bogus=1)
