"""The db tests run on both backends: `db` here is the root fixture's, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inboxsort.db import Database, open_database


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database, once on SQLite and once on PostgreSQL (test_session.py and
    test_migrations.py keep their own SQLite-file fixture)."""
    database = open_database(db_url)
    yield database
    database.close()
