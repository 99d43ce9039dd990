"""Claims on a shared inbox and the takeover of dead nodes (inboxsort.db.claims), on a real
SQLite file and on the real PostgreSQL server; tests/e2e/test_fleet.py runs them under daemons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from inboxsort.db import (
    DAEMON_LOST,
    DAEMON_STOPPED,
    STATUS_PENDING,
    Database,
    Image,
    open_database,
    utcnow,
)
from inboxsort.db.claims import (
    claim_holders,
    pending_of,
    release_claims,
    take_over_stale,
    try_claim,
)
from inboxsort.db.heartbeat import read_heartbeat, write_heartbeat

KEY = "k" * 64


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database, once on SQLite and once on PostgreSQL."""
    with open_database(db_url) as database:
        yield database


def claim(db: Database, node: str, key: str = KEY) -> bool:
    with db.begin() as session:
        return try_claim(session, key=key, node=node, path=f"/inbox/{key[:4]}")


def test_one_claim_per_file_and_a_node_gets_its_own_back(db: Database) -> None:
    assert claim(db, "a")
    assert not claim(db, "b")
    assert claim(db, "a")  # its own claim whose release has not landed yet
    with db.begin() as session:
        release_claims(session, [KEY], node="b")  # not b's to release
        assert claim_holders(session) == {"a": 1}
        release_claims(session, [KEY], node="a")
        assert claim_holders(session) == {}
    assert claim(db, "b")


def test_a_stale_node_is_taken_over_once(db: Database) -> None:
    now = utcnow()
    with db.begin() as session:
        write_heartbeat(
            session, node="dead", state="running", heartbeat_at=now - dt.timedelta(seconds=60)
        )
        write_heartbeat(session, node="alive", state="running", heartbeat_at=now)
        write_heartbeat(session, node="gone", state=DAEMON_STOPPED, heartbeat_at=now)
        session.add(Image(source_path="/inbox/x", path="/inbox/x", original_name="x", node="dead"))
    assert claim(db, "dead", "1" * 64) and claim(db, "alive", "2" * 64)
    with db.begin() as session:
        assert take_over_stale(session, node="alive", stale_seconds=30, now=now) == ["dead"]
        assert [r.original_name for r in pending_of(session, ["dead"], unowned=False)] == ["x"]
    with db.begin() as session:
        assert claim_holders(session) == {"alive": 1}
        assert take_over_stale(session, node="other", stale_seconds=30, now=now) == []
        beat = read_heartbeat(session, "dead")
        assert beat is not None and beat.state == DAEMON_LOST
        row = session.query(Image).one()
        assert row.status == STATUS_PENDING  # the caller recovers it, in its transaction
    assert claim(db, "alive", "1" * 64)  # the dead node's file is free again


def test_a_node_that_beat_again_is_not_taken_over(db: Database) -> None:
    then = utcnow() - dt.timedelta(seconds=60)
    with db.begin() as session:
        write_heartbeat(session, node="slow", state="running", heartbeat_at=then)
    with db.begin() as session:
        write_heartbeat(session, node="slow", state="running")  # beat before the takeover
        assert take_over_stale(session, node="me", stale_seconds=30, now=utcnow()) == []
