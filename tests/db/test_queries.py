"""Query helpers of inboxsort.db.queries, against real rows in a SQLite file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from inboxsort.db import (
    SOURCE_LABEL,
    SOURCE_MOVE,
    STATUS_DELETED,
    STATUS_DUPLICATE,
    STATUS_FAILED,
    STATUS_FILED,
    STATUS_PENDING,
    Correction,
    Database,
    Image,
    ModelVersion,
)
from inboxsort.db.queries import (
    FiledFile,
    corrections_since,
    delete_correction,
    filed_files,
    filed_paths,
    find_by_location,
    images_by_id,
    latest_correction,
    newest_filed_at,
    oldest_by_sha256,
    other_filed_at,
    pending_at,
    pending_by_sources,
    pending_images,
    with_sha256,
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


def test_model_version_defaults(session: Session) -> None:
    session.add(ModelVersion(version=3, path="/m/3", classes=["cats", "dogs"]))
    session.flush()
    mv = session.get(ModelVersion, 3, populate_existing=True)
    assert mv is not None
    assert mv.active is False and mv.metrics == {} and mv.classes == ["cats", "dogs"]


def test_filed_files_are_the_filed_rows_as_plain_values(session: Session) -> None:
    a = _add(session, "a.jpg", device=7, inode=1, size=10, sha256="ab" * 32)
    b = _add(session, "b.jpg")  # read before its size and inode were known
    _add(session, "c.jpg", status=STATUS_DELETED, device=7, inode=3)
    _add(session, "d.jpg", status=STATUS_PENDING)
    found = sorted(filed_files(session))
    assert found == [
        FiledFile(a.id, "/lib/a.jpg", 7, 1, 10, "ab" * 32),
        FiledFile(b.id, "/lib/b.jpg", None, None, None, None),
    ]
    assert all(isinstance(f, FiledFile) for f in found)


def test_filed_paths_at_a_path_or_below_a_folder(session: Session) -> None:
    top = _add(session, "cats", path="/lib/cats")  # a file named like the folder
    a = _add(session, "a.jpg", path="/lib/cats/a.jpg")
    deep = _add(session, "b.jpg", path="/lib/cats/2024/b.jpg")
    _add(session, "c.jpg", path="/lib/cats2/c.jpg")  # a sibling whose name only begins alike
    _add(session, "d.jpg", path="/lib/cats.jpg")
    _add(session, "e.jpg", path="/lib/cats/e.jpg", status=STATUS_DELETED)
    _add(session, "f.jpg", path="/lib/cats/f.jpg", status=STATUS_PENDING)
    assert filed_paths(session, "/lib/cats") == [(top.id, "/lib/cats")]
    assert filed_paths(session, "/lib/cats/a.jpg") == [(a.id, "/lib/cats/a.jpg")]
    assert sorted(filed_paths(session, "/lib/cats", below=True)) == [
        (a.id, "/lib/cats/a.jpg"),
        (deep.id, "/lib/cats/2024/b.jpg"),
    ]
    assert filed_paths(session, "/lib/cats/a.jpg", below=True) == []
    assert filed_paths(session, "/lib/nowhere") == []


def test_other_filed_at_leaves_out_the_given_image(session: Session) -> None:
    mover = _add(session, "a.jpg", path="/lib/dogs/a.jpg")
    first = _add(session, "x.jpg", path="/lib/dogs/a.jpg")
    second = _add(session, "y.jpg", path="/lib/dogs/a.jpg")
    _add(session, "z.jpg", path="/lib/dogs/a.jpg", status=STATUS_DELETED)
    _add(session, "w.jpg", path="/lib/dogs/w.jpg")
    assert other_filed_at(session, "/lib/dogs/a.jpg", besides=mover.id) == [first, second]
    assert other_filed_at(session, "/lib/dogs/a.jpg", besides=first.id) == [mover, second]
    assert other_filed_at(session, "/lib/dogs/w.jpg", besides=10**9) != []
    assert other_filed_at(session, "/lib/cats/a.jpg", besides=mover.id) == []


def test_pending_at_its_destination_or_still_at_its_path(session: Session) -> None:
    row = _add(session, "a.jpg", status=STATUS_PENDING, path="/inbox/a.jpg")
    row.dest_path = "/lib/cats/a.jpg"
    _add(session, "b.jpg", path="/lib/cats/b.jpg")  # filed, not pending
    _add(session, "c.jpg", status=STATUS_FAILED, path="/failed/c.jpg", dest_path="/x/c.jpg")
    session.flush()
    assert pending_at(session, "/lib/cats/a.jpg") is True
    assert pending_at(session, "/inbox/a.jpg") is True
    assert pending_at(session, "/lib/cats/b.jpg") is False
    assert pending_at(session, "/x/c.jpg") is False
    row.status = STATUS_FILED
    assert pending_at(session, "/lib/cats/a.jpg") is False


def test_with_sha256_is_newest_first_and_filters_by_status(session: Session) -> None:
    digest = "ef" * 32
    old = _add(session, "old.jpg", sha256=digest)
    gone = _add(session, "gone.jpg", sha256=digest, status=STATUS_DELETED)
    _add(session, "bad.jpg", sha256=digest, status=STATUS_FAILED)
    new = _add(session, "new.jpg", sha256=digest, minutes=-5)  # received earlier, newer id
    _add(session, "other.jpg", sha256="01" * 32)
    assert with_sha256(session, digest) == [new, old]
    assert with_sha256(session, digest, statuses=(STATUS_FILED, STATUS_DELETED)) == [
        new,
        gone,
        old,
    ]
    assert with_sha256(session, "99" * 32) == []


def test_latest_correction_and_delete_correction(session: Session) -> None:
    image = _add(session, "a.jpg", label="cats")
    other = _add(session, "b.jpg", label="dogs")
    assert latest_correction(session, image.id) is None
    first = Correction(image_id=image.id, old_label="cats", new_label="dogs", source=SOURCE_MOVE)
    second = Correction(image_id=image.id, old_label="dogs", new_label="cats", source=SOURCE_LABEL)
    theirs = Correction(image_id=other.id, new_label="cats", source=SOURCE_LABEL)
    session.add_all([first, second, theirs])
    session.flush()
    assert latest_correction(session, image.id) is second
    assert latest_correction(session, other.id) is theirs
    delete_correction(session, second.id)
    assert latest_correction(session, image.id) is first
    delete_correction(session, 10**9)  # none with that id: nothing happens
    assert latest_correction(session, other.id) is theirs
    assert session.get(Correction, second.id) is None
