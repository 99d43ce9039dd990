"""Query helpers of inboxsort.db.queries, against real rows in a SQLite file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inboxsort.db import (
    DAEMON_ROW_ID,
    SOURCE_LABEL,
    SOURCE_MOVE,
    STATUS_DELETED,
    STATUS_DUPLICATE,
    STATUS_FAILED,
    STATUS_FILED,
    STATUS_PENDING,
    Correction,
    DaemonState,
    Database,
    Image,
    ModelVersion,
    utcnow,
)
from inboxsort.db.queries import (
    corrections_since,
    find_by_location,
    images_by_id,
    newest_filed_at,
    oldest_by_sha256,
    pending_by_sources,
    pending_images,
    read_heartbeat,
    write_heartbeat,
)

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    with db.session() as s:
        yield s


def _add(session: Session, name: str, *, minutes: int = 0, **kw: object) -> Image:
    kw.setdefault("status", STATUS_FILED)
    kw.setdefault("path", f"/lib/{name}")
    image = Image(
        original_name=name,
        source_path=f"/inbox/{name}",
        received_at=T0 + dt.timedelta(minutes=minutes),
        **kw,
    )
    session.add(image)
    session.flush()
    return image


def test_pending_images_are_the_pending_ones_oldest_first(session: Session) -> None:
    a = _add(session, "a.jpg", status=STATUS_PENDING)
    _add(session, "b.jpg", status=STATUS_FAILED, error="truncated")
    _add(session, "c.jpg")
    d = _add(session, "d.jpg", status=STATUS_PENDING)
    assert pending_images(session) == [a, d]
    d.status = STATUS_FILED
    assert pending_images(session) == [a]


def test_oldest_by_sha256_returns_the_oldest_matching_status(session: Session) -> None:
    digest = "ab" * 32

    def oldest(sha: str, **kwargs: Any) -> Image | None:
        return oldest_by_sha256(session, [sha], **kwargs).get(sha)

    newer = _add(session, "new.jpg", minutes=5, sha256=digest)
    older = _add(session, "old.jpg", minutes=1, sha256=digest)
    dup = _add(session, "dup.jpg", minutes=0, sha256=digest, status=STATUS_DUPLICATE)
    assert oldest(digest) is older
    assert oldest(digest, statuses=(STATUS_DUPLICATE,)) is dup
    assert oldest(digest, statuses=[STATUS_FILED, STATUS_DUPLICATE]) is dup
    assert oldest("cd" * 32) is None
    assert newer.id is not None


def test_the_batch_lookups_answer_each_key_past_sqlites_parameter_limit(
    session: Session,
) -> None:
    # 40,000 keys: more than SQLite's 32,766 bound parameters in one statement.
    keys = [f"{i:064x}" for i in range(40_000)]
    old = _add(session, "old.jpg", minutes=1, sha256=keys[-1])
    _add(session, "new.jpg", minutes=9, sha256=keys[-1])
    first = _add(session, "first.jpg", sha256=keys[0])
    gone = _add(session, "gone.jpg", sha256=keys[1], status=STATUS_FAILED)
    assert oldest_by_sha256(session, keys) == {keys[0]: first, keys[-1]: old}
    assert oldest_by_sha256(session, keys, statuses=(STATUS_FAILED,)) == {keys[1]: gone}

    pending = _add(session, "p.jpg", status=STATUS_PENDING)
    sources = [f"/inbox/{i}.jpg" for i in range(40_000)] + ["/inbox/p.jpg"]
    newer = _add(session, "p.jpg", status=STATUS_PENDING, minutes=-5)  # received earlier
    assert pending_by_sources(session, sources) == {"/inbox/p.jpg": newer}  # the highest id
    assert pending.id < newer.id
    assert images_by_id(session, [old.id, gone.id, 10**9]) == {old.id: old, gone.id: gone}


def test_find_by_location_and_path_return_the_newest(session: Session) -> None:
    first = _add(session, "x.jpg", device=7, inode=42, path="/lib/cats/x.jpg")
    second = _add(session, "y.jpg", device=7, inode=42, path="/lib/cats/x.jpg")
    _add(session, "z.jpg", device=8, inode=42, path="/lib/dogs/z.jpg")
    assert find_by_location(session, device=7, inode=42) is second
    assert find_by_location(session, device=7, inode=43) is None
    assert newest_filed_at(session, "/lib/cats/x.jpg") is second
    assert newest_filed_at(session, "/lib/nowhere.jpg") is None
    second.status = STATUS_DELETED  # only a filed row counts: the older one is the answer
    assert newest_filed_at(session, "/lib/cats/x.jpg") is first
    assert first.id < second.id


def test_pending_by_sources(session: Session) -> None:
    _add(session, "p.jpg", status=STATUS_FILED)
    pending = _add(session, "p.jpg", status=STATUS_PENDING, path="/inbox/p.jpg")
    assert pending_by_sources(session, ["/inbox/p.jpg", "/inbox/other.jpg"]) == {
        "/inbox/p.jpg": pending
    }
    pending.status = STATUS_FILED
    assert pending_by_sources(session, ["/inbox/p.jpg"]) == {}


def test_corrections_since(session: Session) -> None:
    image = _add(session, "a.jpg", label="cats")
    session.add(ModelVersion(version=1, path="/models/1", metrics={"acc": 0.9}))
    unused = Correction(image_id=image.id, old_label="cats", new_label="dogs", source=SOURCE_MOVE)
    used_by_1 = Correction(image_id=image.id, new_label="dogs", source=SOURCE_LABEL)
    used_by_2 = Correction(image_id=image.id, new_label="birds", source=SOURCE_LABEL)
    used_by_1.used_in_version = 1
    used_by_2.used_in_version = 2
    session.add_all([unused, used_by_1, used_by_2])
    session.flush()
    assert corrections_since(session, None) == [unused]
    assert corrections_since(session, 1) == [unused, used_by_2]
    assert corrections_since(session, 2) == [unused]
    assert unused.created_at.tzinfo is not None


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


def test_write_heartbeat_rejects_unknown_fields(session: Session) -> None:
    with pytest.raises(TypeError, match="bogus"):
        write_heartbeat(session, bogus=1)


def test_model_version_defaults(session: Session) -> None:
    session.add(ModelVersion(version=3, path="/m/3", classes=["cats", "dogs"]))
    session.flush()
    mv = session.get(ModelVersion, 3, populate_existing=True)
    assert mv is not None
    assert mv.active is False and mv.metrics == {} and mv.classes == ["cats", "dogs"]
