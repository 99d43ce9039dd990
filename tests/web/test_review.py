"""The review grid, its filters and pages, and thumbnails (only of files inside the library)."""

from __future__ import annotations

import io
import re

from PIL import Image

from inboxsort.db import STATUS_FAILED
from inboxsort.db import Image as Row
from tests.helpers.filedrows import file_image, get_image
from tests.helpers.imagegen import noise, save
from tests.web.conftest import WebSite

TILE = re.compile(r'<li class="tile[^"]*" tabindex="0" data-id="(\d+)" data-label="([^"]*)">')


def tiles(html: str) -> list[tuple[int, str]]:
    return [(int(i), label) for i, label in TILE.findall(html)]


def test_grid_shows_filed_images_newest_first_with_label_and_score(site: WebSite) -> None:
    with site.client() as client:
        response = client.get("/review")
    assert response.status_code == 200
    ids = site.ids
    assert tiles(response.text) == [
        (ids["unsure"], "dogs"),
        (ids["dog1"], "dogs"),
        (ids["cat2"], "cats"),
        (ids["cat1"], "cats"),
    ]
    assert "0.610" in response.text and "0.970" in response.text
    assert f'src="/thumb/{ids["cat1"]}"' in response.text
    # One click away: a button to the other class on each tile.
    assert f'action="/api/images/{ids["cat1"]}/label"' in response.text


def test_filters_label_score_uncertain_and_review_folder(site: WebSite) -> None:
    ids = site.ids
    with site.client() as client:
        cats = tiles(client.get("/review?label=cats").text)
        sure = tiles(client.get("/review?min_score=0.8").text)
        unsure = tiles(client.get("/review?uncertain=1").text)
        review = tiles(client.get("/review?review=1").text)
        model = tiles(client.get("/review?model=5").text)
        today = tiles(client.get("/review?since=2000-01-01&until=2999-01-01").text)
        day = get_image(site.db, ids["cat1"]).received_at.date().isoformat()
        this_day = tiles(client.get(f"/review?since={day}&until={day}").text)
        before = tiles(client.get(f"/review?until={day}T00:00:00").text)
    assert [i for i, _ in cats] == [ids["cat2"], ids["cat1"]]
    assert {i for i, _ in sure} == {ids["cat1"], ids["dog1"]}
    assert [i for i, _ in unsure] == [ids["unsure"], ids["cat2"], ids["dog1"], ids["cat1"]]
    assert [i for i, _ in review] == [ids["unsure"]]
    assert model == []
    assert len(today) == 4
    # `until` a date alone takes in that whole day; a date and time is the moment itself.
    assert ids["cat1"] in [i for i, _ in this_day] and before == []


def test_pages_and_out_of_range_page(site: WebSite) -> None:
    with site.client(page_size=3) as client:
        first = client.get("/review")
        second = client.get("/review?page=2")
        beyond = client.get("/review?page=3")
        zero = client.get("/review?page=0")
        api = client.get("/api/images?page=2").json()
    assert len(tiles(first.text)) == 3 and 'rel="next"' in first.text
    assert tiles(second.text) == [(site.ids["cat1"], "cats")]
    assert beyond.status_code == 404 and "page 3 does not exist" in beyond.text
    assert zero.status_code == 400 and "page = &#39;0&#39;" in zero.text
    assert api["total"] == 4 and api["pages"] == 2
    assert [r["id"] for r in api["images"]] == [site.ids["cat1"]]


def test_bad_filter_values_are_clear_400s(site: WebSite) -> None:
    with site.client() as client:
        for query, text in [
            ("min_score=abc", "min_score = 'abc': expected a number"),
            ("max_score=1.5", "max_score = '1.5': expected a number from 0 to 1"),
            ("model=x", "model = 'x': expected an integer"),
            ("since=yesterday", "since = 'yesterday': expected a date"),
            ("uncertain=maybe", "uncertain = 'maybe': expected 1 or 0"),
        ]:
            response = client.get(f"/api/images?{query}")
            assert response.status_code == 400, query
            assert response.json()["error"] == text or text in response.json()["error"]


def test_thumbnail_is_a_small_jpeg_with_exif_orientation_applied_and_cached(
    site: WebSite,
) -> None:
    # 80 wide, 40 high, with EXIF orientation 6 (rotate 90° clockwise to view): 40 wide, 80 high.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(noise((80, 40), seed=9), site.library / "cats" / "turned.jpg", exif=exif)
    image_id = file_image(site.db, path, "cats")
    with site.client() as client:
        response = client.get(f"/thumb/{image_id}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        shown = Image.open(io.BytesIO(response.content))
        assert shown.format == "JPEG" and shown.size == (40, 80)
        cached = list(site.config.web.thumbnails.iterdir())
        assert [p.name for p in cached] == [f"{image_id}-{_sha(site, image_id)}-256.jpg"]
        # Served from the cache: the library file is no longer read.
        path.chmod(0)
        try:
            again = client.get(f"/thumb/{image_id}")
        finally:
            path.chmod(0o644)
    assert again.status_code == 200 and again.content == response.content


def _sha(site: WebSite, image_id: int) -> str:
    with site.db.session() as session:
        row = session.get(Row, image_id)
        assert row is not None and row.sha256
        return row.sha256


def test_thumbnail_refuses_unknown_ids_forged_paths_and_files_outside(site: WebSite) -> None:
    outside = save(noise(seed=5), site.root / "secret.jpg")
    secret_id = site.file("cats", "elsewhere.jpg", label="cats", score=0.9, seed=6)
    link_id = site.file("cats", "link.jpg", label="cats", score=0.9, seed=7)
    failed_id = site.file("cats", "failed.jpg", label=None, score=0.0, seed=8)
    with site.db.begin() as session:
        # A row pointing out of the library (as if the database had been tampered with).
        row = session.get(Row, secret_id)
        assert row is not None
        row.path = str(site.library / "cats" / ".." / ".." / "secret.jpg")
        failed = session.get(Row, failed_id)
        assert failed is not None
        failed.status = STATUS_FAILED
    link = site.library / "cats" / "link.jpg"
    link.unlink()
    link.symlink_to(outside)
    with site.client() as client:
        answers = {
            "unknown": client.get("/thumb/999999"),
            "outside": client.get(f"/thumb/{secret_id}"),
            "symlink": client.get(f"/thumb/{link_id}"),
            "failed": client.get(f"/thumb/{failed_id}"),
            "dotdot": client.get("/thumb/..%2F..%2Fsecret.jpg"),
            "path": client.get("/thumb/%2Fetc%2Fpasswd"),
            "negative": client.get("/thumb/-1"),
        }
    for what, response in answers.items():
        assert response.status_code == 404, what
        assert response.headers["content-type"].startswith("text/html"), what
    assert "no image 999999" in answers["unknown"].text
    assert "no plain library path" in answers["outside"].text, answers["outside"].text[-600:]
    assert "cannot open its file" in answers["symlink"].text
    assert not site.config.web.thumbnails.exists() or not any(
        p.name.startswith(f"{link_id}-") for p in site.config.web.thumbnails.iterdir()
    )


def test_failed_page_lists_reasons(site: WebSite) -> None:
    failed_id = site.file("cats", "broken.jpg", label=None, score=0.0, seed=10)
    with site.db.begin() as session:
        row = session.get(Row, failed_id)
        assert row is not None
        row.status, row.error = STATUS_FAILED, "not an image: text"
    with site.client() as client:
        response = client.get("/failed")
        beyond = client.get("/failed?page=2")
    assert response.status_code == 200
    assert "broken.jpg" in response.text and "not an image: text" in response.text
    assert f'action="/api/failed/{failed_id}/send-back"' in response.text
    assert beyond.status_code == 404


def test_unknown_pages_and_methods(site: WebSite) -> None:
    with site.client() as client:
        missing = client.get("/nothing-here")
        api_missing = client.get("/api/nothing")
        wrong = client.get("/api/images/1/label")
    assert missing.status_code == 404 and "no such page" in missing.text
    assert api_missing.status_code == 404 and api_missing.json()["status"] == 404
    assert wrong.status_code == 405


def test_a_filed_file_that_is_no_image_gets_a_422_and_no_cache(site: WebSite) -> None:
    path = site.library / "cats" / "notes.jpg"
    path.write_text("not a photo at all\n")
    image_id = file_image(site.db, path, "cats")
    with site.client() as client:
        response = client.get(f"/thumb/{image_id}")
    assert response.status_code == 422 and "not an image: text" in response.text
    assert path.read_text() == "not a photo at all\n"
    cache = site.config.web.thumbnails
    assert not cache.exists() or not list(cache.iterdir())
