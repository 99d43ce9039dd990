"""Corrections, bulk moves, model activation and sending back, with CSRF, token and read-only."""

from __future__ import annotations

import shutil
from pathlib import Path

from inboxsort.db import SOURCE_LABEL, SOURCE_REVIEW, STATUS_DELETED, STATUS_FAILED
from inboxsort.db import Image as Row
from inboxsort.library.relabel import relabel
from inboxsort.model.artifact import BUILTIN_DIR
from inboxsort.model.registry import ModelStore
from tests.helpers.filedrows import corrections, get_image
from tests.web.conftest import WebSite, csrf_of

JSON = {"Accept": "application/json"}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_one_click_moves_the_file_and_records_a_review_correction(site: WebSite) -> None:
    image_id = site.ids["cat2"]
    with site.client() as client:
        token = csrf_of(client)
        response = client.post(
            f"/api/images/{image_id}/label", json={"label": "dogs"}, headers={"X-CSRF-Token": token}
        )
        page = client.get("/review?label=dogs")
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["label"] == "dogs" and done["old_label"] == "cats"
    assert done["path"] == str(site.library / "dogs" / "cat2.jpg")
    assert (site.library / "dogs" / "cat2.jpg").is_file()
    assert not (site.library / "cats" / "cat2.jpg").exists()
    [entry] = corrections(site.db)
    assert (entry.image_id, entry.source, entry.old_label, entry.new_label) == (
        image_id,
        SOURCE_REVIEW,
        "cats",
        "dogs",
    )
    assert f'data-id="{image_id}" data-label="dogs"' in page.text


def test_a_page_correction_is_the_same_as_inboxsort_label(site: WebSite) -> None:
    """Two identical images, one corrected on the page, one by relabel() as `label` runs it."""
    twin = site.file("cats", "twin.jpg", label="cats", score=0.61, seed=2)
    with site.client() as client:
        token = csrf_of(client)
        form = {"label": "dogs", "csrf": token, "next": "/review"}
        response = client.post(
            f"/api/images/{site.ids['cat2']}/label", data=form, follow_redirects=False
        )
    assert response.status_code == 303 and response.headers["location"] == "/review"
    relabel(
        site.db,
        image_path=site.library / "cats" / "twin.jpg",
        new_label="dogs",
        source=SOURCE_LABEL,
        library=site.library,
        classes=["cats", "dogs"],
    )
    page, cli = get_image(site.db, site.ids["cat2"]), get_image(site.db, twin)
    keys = ("label", "score", "model_label", "model_score", "model_version", "status")
    assert [getattr(page, k) for k in keys] == [getattr(cli, k) for k in keys]
    assert (page.label, page.score) == ("dogs", 1.0 - 0.61)
    assert Path(page.path).parent == Path(cli.path).parent == site.library / "dogs"
    by_image = {c.image_id: c for c in corrections(site.db)}
    a, b = by_image[site.ids["cat2"]], by_image[twin]
    assert (a.old_label, a.new_label, a.used_in_version) == (b.old_label, b.new_label, None)
    assert (a.source, b.source) == (SOURCE_REVIEW, SOURCE_LABEL)


def test_bulk_moves_a_selection_and_reports_each_failure(site: WebSite) -> None:
    ids = [site.ids["cat1"], site.ids["cat2"], 999999]
    with site.client() as client:
        token = csrf_of(client)
        response = client.post(
            "/api/images/label", json={"label": "dogs", "ids": ids}, headers={"X-CSRF-Token": token}
        )
        empty = client.post(
            "/api/images/label", json={"label": "dogs", "ids": []}, headers={"X-CSRF-Token": token}
        )
        bad = client.post(
            "/api/images/label",
            json={"label": "dogs", "ids": ["1/../2"]},
            headers={"X-CSRF-Token": token},
        )
    result = response.json()
    assert [d["id"] for d in result["done"]] == ids[:2]
    assert result["errors"] == [{"id": 999999, "error": "no image 999999"}]
    assert _files(site.library / "dogs") == ["cat1.jpg", "cat2.jpg", "dog1.jpg"]
    assert len(corrections(site.db)) == 2
    assert empty.status_code == 400 and "expected 1 to 500" in empty.json()["error"]
    assert bad.status_code == 400 and "'1/../2' is not an image id" in bad.json()["error"]


def test_state_changes_need_the_csrf_token_and_a_same_site_origin(site: WebSite) -> None:
    url = f"/api/images/{site.ids['cat1']}/label"
    before = _files(site.library)
    with site.client() as client:
        missing = client.post(url, json={"label": "dogs"})
        token = csrf_of(client)
        wrong = client.post(url, json={"label": "dogs"}, headers={"X-CSRF-Token": token + "x"})
        other_site = client.post(
            url,
            json={"label": "dogs"},
            headers={"X-CSRF-Token": token, "Origin": "http://evil.example"},
        )
        form_without = client.post(url, data={"label": "dogs"}, headers=JSON)
    assert missing.status_code == 403 and "missing CSRF token" in missing.json()["error"]
    assert wrong.status_code == 403 and "wrong CSRF token" in wrong.json()["error"]
    assert other_site.status_code == 403 and "another site" in other_site.json()["error"]
    # DNS rebinding: a page at evil.example resolved to 127.0.0.1 is same-origin with itself.
    with site.client() as client:
        rebound = client.get("/review", headers={"Host": "evil.example:8470"})
        local = client.get("/review", headers={"Host": "localhost:8470"})
    assert rebound.status_code == 403 and "evil.example:8470" in rebound.text
    assert local.status_code == 200
    assert form_without.status_code == 403
    assert _files(site.library) == before and corrections(site.db) == []


def test_bad_input_is_a_clear_4xx_and_moves_nothing(site: WebSite) -> None:
    before = _files(site.library)
    with site.client() as client:
        headers = {"X-CSRF-Token": csrf_of(client)}
        unknown_class = client.post(
            f"/api/images/{site.ids['cat1']}/label", json={"label": "birds"}, headers=headers
        )
        unknown_id = client.post(
            "/api/images/424242/label", json={"label": "dogs"}, headers=headers
        )
        no_label = client.post(f"/api/images/{site.ids['cat1']}/label", json={}, headers=headers)
        not_json = client.post(
            f"/api/images/{site.ids['cat1']}/label",
            content=b"{nope",
            headers={**headers, "Content-Type": "application/json"},
        )
        with site.db.begin() as session:
            row = session.get(Row, site.ids["dog1"])
            assert row is not None
            row.status = STATUS_FAILED
        not_filed = client.post(
            f"/api/images/{site.ids['dog1']}/label", json={"label": "cats"}, headers=headers
        )
    assert unknown_class.status_code == 400
    assert "unknown class 'birds': expected one of cats, dogs" in unknown_class.json()["error"]
    assert unknown_id.status_code == 404 and unknown_id.json()["error"] == "no image 424242"
    assert no_label.status_code == 400 and "label" in no_label.json()["error"]
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert not_filed.status_code == 409 and "is failed" in not_filed.json()["error"]
    assert _files(site.library) == before and corrections(site.db) == []


def test_read_only_mode_shows_pages_and_refuses_every_change(site: WebSite) -> None:
    before = _files(site.library)
    with site.client(read_only=True) as client:
        page = client.get("/review")
        headers = {"X-CSRF-Token": csrf_of(client)}
        label = client.post(
            f"/api/images/{site.ids['cat1']}/label", json={"label": "dogs"}, headers=headers
        )
        activate = client.post("/api/models/0/activate", json={"confirm": "yes"}, headers=headers)
    assert page.status_code == 200 and "read-only" in page.text
    assert 'action="/api/images/' not in page.text
    assert label.status_code == 403 and "read-only" in label.json()["error"]
    assert activate.status_code == 403
    assert _files(site.library) == before and corrections(site.db) == []


def test_a_token_guards_every_page_and_the_login_sets_a_cookie(site: WebSite) -> None:
    with site.client(token="s3cret-token") as client:
        page = client.get("/review")
        metrics = client.get("/metrics")
        static = client.get("/static/app.js")
        bearer = client.get("/api/stats", headers={"Authorization": "Bearer s3cret-token"})
        wrong_bearer = client.get("/api/stats", headers={"Authorization": "Bearer nope"})
        token = csrf_of(client, "/login")
        refused = client.post(
            "/login", data={"token": "guess", "csrf": token}, follow_redirects=False
        )
        accepted = client.post(
            "/login", data={"token": "s3cret-token", "csrf": token}, follow_redirects=False
        )
        assert "s3cret-token" not in accepted.headers["set-cookie"]
        after = client.get("/review")
    assert page.status_code == 401 and "/login" in page.text
    assert metrics.status_code == 401
    assert static.status_code == 200
    assert bearer.status_code == 200 and wrong_bearer.status_code == 401
    assert refused.headers["location"] == "/login?failed=1"
    assert accepted.status_code == 303 and accepted.headers["location"] == "/review"
    assert after.status_code == 200 and "cat1.jpg" in after.text


def _register(site: WebSite, *, promoted: bool | None, note: str | None = None) -> int:
    store = ModelStore(site.config.paths.models, site.db)
    folder = site.root / f"model-{promoted}"
    shutil.copytree(BUILTIN_DIR, folder)
    from inboxsort.model.artifact import read_card

    class Saved:
        def save(self, path: str) -> None:
            shutil.copyfile(folder / "model.keras", path)

    card = read_card(folder)
    info = store.register(Saved(), card, parent=0, activate=False, promoted=promoted, note=note)
    return info.version


def test_models_page_activates_with_confirmation_and_rolls_back(site: WebSite) -> None:
    good = _register(site, promoted=True)
    refused = _register(site, promoted=False, note="accuracy fell 0.05")
    gate = {
        "active": {"set": {"n": 20, "correct": 20}, "corrections": {"n": 4, "correct": 0}},
        "candidate": {"set": {"n": 20, "correct": 19}, "corrections": {"n": 4, "correct": 3}},
        "set": "held-out confirmed images in /lib",
        "tolerance": 0.01,
    }
    with site.db.begin() as session:
        from inboxsort.db import ModelVersion

        row = session.get(ModelVersion, refused)
        assert row is not None
        row.metrics = {**row.metrics, "gate": gate}
    store = ModelStore(site.config.paths.models, site.db)
    with site.client() as client:
        page = client.get("/models")
        headers = {"X-CSRF-Token": csrf_of(client, "/models")}
        unconfirmed = client.post(f"/api/models/{good}/activate", json={}, headers=headers)
        assert store.active_version() == 0
        ok = client.post(f"/api/models/{good}/activate", json={"confirm": "yes"}, headers=headers)
        assert store.active_version() == good
        gate = client.post(
            f"/api/models/{refused}/activate", json={"confirm": "yes"}, headers=headers
        )
        unknown = client.post("/api/models/77/activate", json={"confirm": "yes"}, headers=headers)
        forced = client.post(
            f"/api/models/{refused}/activate",
            json={"confirm": "yes", "force": "yes"},
            headers=headers,
        )
        assert store.active_version() == refused
        back = client.post("/api/models/rollback", json={"confirm": "yes"}, headers=headers)
        listed = client.get("/api/models").json()["versions"]
    assert page.status_code == 200 and "accuracy fell 0.05" in page.text
    assert (
        "gate set (held-out confirmed images in /lib): 20/20 right before, 19/20 after" in page.text
    )
    assert "held-out corrections: 0/4 right before, 3/4 after" in page.text
    assert unconfirmed.status_code == 400 and "confirm=yes" in unconfirmed.json()["error"]
    assert ok.json() == {"active_version": good}
    assert gate.status_code == 409 and "accuracy fell 0.05" in gate.json()["error"]
    assert unknown.status_code == 404
    assert forced.status_code == 200
    assert back.json() == {"active_version": 0} and store.active_version() == 0
    assert [v["version"] for v in listed] == [refused, good, 0]
    assert [v["active"] for v in listed] == [False, False, True]


def test_send_back_moves_a_failed_file_into_the_inbox_and_keeps_its_history(
    site: WebSite,
) -> None:
    failed_file = site.config.paths.failed / "fixed.jpg"
    shutil.copyfile(site.library / "cats" / "cat1.jpg", failed_file)
    (site.config.paths.inbox / "fixed.jpg").write_bytes(b"someone else's file")
    with site.db.begin() as session:
        row = Row(
            original_name="fixed.jpg",
            source_path=str(site.config.paths.inbox / "fixed.jpg"),
            path=str(failed_file),
            status=STATUS_FAILED,
            error="cannot decode: broken data stream",
        )
        session.add(row)
        session.flush()
        failed_id = row.id
    with site.client() as client:
        headers = {"X-CSRF-Token": csrf_of(client, "/failed")}
        sent = client.post(f"/api/failed/{failed_id}/send-back", json={}, headers=headers)
        again = client.post(f"/api/failed/{failed_id}/send-back", json={}, headers=headers)
        filed = client.post(f"/api/failed/{site.ids['cat1']}/send-back", json={}, headers=headers)
    assert sent.status_code == 200, sent.text
    # The name was taken in the inbox: nothing is replaced, the file gets a free name.
    assert sent.json()["path"] == str(site.config.paths.inbox / "fixed (1).jpg")
    assert (site.config.paths.inbox / "fixed.jpg").read_bytes() == b"someone else's file"
    assert not failed_file.exists()
    row = get_image(site.db, failed_id)
    assert row.status == STATUS_DELETED
    assert row.error is not None and "sent back to the inbox as" in row.error
    assert "cannot decode: broken data stream" in row.error
    assert again.status_code == 409 and filed.status_code == 409


def test_the_retrain_job_learns_from_a_page_correction(site: WebSite) -> None:
    from inboxsort.trainer.retrain.plan import make_plan
    from inboxsort.trainer.retrain.run import new_corrections

    with site.client() as client:
        headers = {"X-CSRF-Token": csrf_of(client)}
        client.post(
            f"/api/images/{site.ids['cat1']}/label", json={"label": "dogs"}, headers=headers
        )
    pool, new = new_corrections(site.db, 0)
    assert [(c.image_id, c.source) for c in pool] == [(site.ids["cat1"], SOURCE_REVIEW)]
    assert new == 1
    plan = make_plan(site.config, site.db, pool, active=0, classes=["cats", "dogs"])
    taught = [(i.path, i.label) for i in plan.corrections + plan.held_out]
    assert taught == [(str(site.library / "dogs" / "cat1.jpg"), 1)]
