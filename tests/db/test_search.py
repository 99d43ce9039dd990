"""inboxsort.db.search: the SELECT behind `inboxsort query`, on the eight rows of querysite."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from inboxsort.db import Database
from inboxsort.db.search import ImageQuery, build_select, glob_to_like, search_images
from tests.helpers.querysite import AGE, BY_AGE, NOW, populate


@pytest.fixture
def session(db: Database):
    populate(db, NOW)
    with db.session() as s:
        yield s


def ids(session: Session, **fields: object) -> list[int]:
    return [image.id for image in search_images(session, ImageQuery(**fields))]


def test_glob_to_like_escapes_like_wildcards() -> None:
    assert glob_to_like("a*b?c") == "a%b_c"
    assert glob_to_like("100%_x\\") == "100\\%\\_x\\\\"


def test_no_filter_is_every_image_oldest_first(session: Session) -> None:
    assert ids(session) == BY_AGE


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"label": "cats"}, [5, 3, 1]),
        ({"status": "filed", "label": "dogs"}, [7, 8, 2]),
        ({"since": NOW - AGE(days=3), "until": NOW - AGE(hours=1)}, [3, 2]),
        ({"model": 2}, [7, 8]),
        ({"min_score": 0.7, "max_score": 0.95}, [8, 5, 3, 1]),
        ({"name": "100%_*"}, [7]),  # % and _ are literal
        ({"name": "IMG_*"}, [5, 2, 1]),  # any case
        ({"corrected": True}, [7, 3]),
        ({"sort": "score", "descending": True, "limit": 3}, [7, 5, 1]),  # ties by id, descending
        ({"sort": "id", "limit": 2}, [1, 2]),
    ],
)
def test_search_images_applies_each_field(
    session: Session, fields: dict[str, object], expected: list[int]
) -> None:
    assert ids(session, **fields) == expected


def test_build_select_is_the_statement_search_images_runs(session: Session) -> None:
    query = ImageQuery(status="filed", sort="received_at", descending=True)
    assert list(session.scalars(build_select(query))) == search_images(session, query)
    assert [i.id for i in search_images(session, query)] == [1, 2, 3, 8, 7]
