"""A library of real JPEG files with their rows, and the web app over it through the test client."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from inboxsort.config import Config, load_config
from inboxsort.db import Database, open_database
from inboxsort.model.registry import ModelStore
from inboxsort.web.app import create_app
from tests.helpers.filedrows import file_image
from tests.helpers.imagegen import noise, save

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@dataclass
class WebSite:
    """A config, its migrated database and a library with images filed in it."""

    root: Path
    config: Config
    db: Database
    ids: dict[str, int]

    @property
    def library(self) -> Path:
        return self.config.paths.library

    def file(self, folder: str, name: str, *, label: str | None, score: float, seed: int) -> int:
        """A real JPEG at library/folder/name, recorded as filed; returns its id."""
        path = save(noise((64, 48), seed=seed), self.library / folder / name, quality=90)
        return file_image(self.db, path, label, score=score)

    @contextmanager
    def client(self, **web: object) -> Iterator[TestClient]:
        """The app over this site (web settings overridden by `web`) in Starlette's test client."""
        config = self.config
        if web:
            import dataclasses

            config = dataclasses.replace(config, web=dataclasses.replace(config.web, **web))
        app = create_app(config, db=self.db, store=ModelStore(config.paths.models, self.db))
        with TestClient(app, base_url="http://127.0.0.1:8470") as client:
            yield client


def csrf_of(client: TestClient, page: str = "/review") -> str:
    """Load a page (which sets the CSRF cookie) and return the token it embeds."""
    response = client.get(page)
    assert response.status_code == 200, response.text
    match = CSRF_META.search(response.text)
    assert match, "the page carries no CSRF token"
    return match[1]


@pytest.fixture
def site(tmp_path: Path, make_config: Callable[..., Path]) -> Iterator[WebSite]:
    """Four filed images (2 cats, 1 dog, 1 in _review), one failed file, on the shipped model."""
    config = load_config(make_config())
    for folder in (config.paths.inbox, config.paths.library, config.paths.failed):
        folder.mkdir(parents=True, exist_ok=True)
    db = open_database(config.database.url)
    web = WebSite(tmp_path, config, db, {})
    web.ids["cat1"] = web.file("cats", "cat1.jpg", label="cats", score=0.97, seed=1)
    web.ids["cat2"] = web.file("cats", "cat2.jpg", label="cats", score=0.61, seed=2)
    web.ids["dog1"] = web.file("dogs", "dog1.jpg", label="dogs", score=0.88, seed=3)
    web.ids["unsure"] = web.file("_review", "unsure.jpg", label="dogs", score=0.52, seed=4)
    try:
        yield web
    finally:
        db.close()
