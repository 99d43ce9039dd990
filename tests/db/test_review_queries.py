"""db/review.py: the review grid's filters and orders, and the counts the web page reads."""

from __future__ import annotations

from pathlib import Path

from inboxsort.db import STATUS_DELETED, STATUS_FAILED, Database, Image, ModelVersion, utcnow
from inboxsort.db.review import (
    ReviewFilter,
    count_by_status_label,
    failed_errors,
    filter_choices,
    mark_sent_back,
    retrain_outcomes,
    review_count,
    review_page,
)
from tests.helpers.filedrows import file_image


def _ids(db: Database, f: ReviewFilter, *, offset: int = 0, limit: int = 10) -> list[int]:
    with db.session() as session:
        return [r.id for r in review_page(session, f, offset=offset, limit=limit)]


def test_under_is_a_literal_prefix_not_a_like_pattern(db: Database, tmp_path: Path) -> None:
    library = tmp_path / "lib_1"
    inside = file_image(db, library / "_review" / "a.jpg", "cats")
    # `_` in LIKE matches any one character: unescaped, these two would match too.
    file_image(db, library / "xreview" / "b.jpg", "cats")
    file_image(db, tmp_path / "libX1" / "_review" / "c.jpg", "cats")
    f = ReviewFilter(under=f"{library}/_review/")
    assert _ids(db, f) == [inside]
    with db.session() as session:
        assert review_count(session, f) == 1


def test_uncertain_order_skips_unscored_and_pages_are_stable(db: Database, tmp_path: Path) -> None:
    ids = [
        file_image(db, tmp_path / f"{n}.jpg", "cats", score=s)
        for n, s in enumerate([0.9, 0.6, 0.6, 0.7])
    ]
    unscored = file_image(db, tmp_path / "x.jpg", "cats")
    with db.begin() as session:
        row = session.get(Image, unscored)
        assert row is not None
        row.score = None
    f = ReviewFilter(uncertain=True)
    # Equal scores: the newer (higher id) first, so pages never repeat or skip an image.
    assert _ids(db, f) == [ids[2], ids[1], ids[3], ids[0]]
    assert _ids(db, f, offset=1, limit=2) == [ids[1], ids[3]]
    with db.session() as session:
        assert review_count(session, f) == 4
        assert review_count(session, ReviewFilter()) == 5


def test_choices_counts_reasons_and_outcomes(db: Database, tmp_path: Path) -> None:
    file_image(db, tmp_path / "a.jpg", "cats", model_version=1)
    file_image(db, tmp_path / "b.jpg", "dogs", model_version=2)
    bad = file_image(db, tmp_path / "c.jpg", None)
    with db.begin() as session:
        row = session.get(Image, bad)
        assert row is not None
        row.status, row.error, row.node = STATUS_FAILED, "not an image: text", "n1"
        for version, promoted in [(1, True), (2, False), (3, None), (4, True)]:
            session.add(
                ModelVersion(
                    version=version, created_at=utcnow(), path="/m", metrics={}, promoted=promoted
                )
            )
    with db.session() as session:
        choices = filter_choices(session)
        pairs = sorted(count_by_status_label(session), key=str)
        errors = failed_errors(session)
        outcomes = retrain_outcomes(session)
    assert choices == {
        "labels": ["cats", "dogs"],
        "models": [0, 1, 2],
        "statuses": ["failed", "filed"],
        "nodes": ["n1"],
    }
    assert pairs == [("failed", None, 1), ("filed", "cats", 1), ("filed", "dogs", 1)]
    assert errors == [("not an image: text", 1)]
    assert outcomes == {"promoted": 2, "refused": 1, "not_gated": 1}
    with db.begin() as session:
        mark_sent_back(session, bad, note="sent back")
    with db.session() as session:
        sent = session.get(Image, bad)
        assert sent is not None
        assert (sent.status, sent.error) == (
            STATUS_DELETED,
            "sent back; failed before: not an image: text",
        )
