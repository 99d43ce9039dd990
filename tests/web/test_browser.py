"""Every page in a real headless Chromium (Playwright driving Debian's `chromium`), over images
a real `inboxsort run` filed, served by a real `inboxsort web` process.

Playwright's own browser download needs the internet, so the system browser is used
(`.ci/install-chromium` installs it). Without it these tests skip, or fail when
INBOXSORT_REQUIRE_CHROMIUM=1 (set by .ci/run), so CI cannot pass them silently.
Screenshots go to each test's tmp folder, and to $INBOXSORT_SCREENSHOTS when set
(`INBOXSORT_SCREENSHOTS=docs/screenshots pytest tests/web/test_browser.py` refreshes the
README's).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from inboxsort.db import SOURCE_REVIEW, STATUS_DELETED, STATUS_FAILED, STATUS_FILED
from inboxsort.model.artifact import BUILTIN_DIR
from tests.helpers.daemonkit import DaemonProcess, Site, make_site, spawn_daemon, wait_for
from tests.helpers.imagegen import copy_first_images
from tests.web.test_cli_web import free_port, get

CHROMIUM = Path(os.environ.get("INBOXSORT_CHROMIUM", "/usr/bin/chromium"))
PER_CLASS = 4


def _chromium_or_skip() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    why = f"{CHROMIUM} is missing: run .ci/install-chromium (apt-get install chromium)"
    if os.environ.get("INBOXSORT_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"INBOXSORT_REQUIRE_CHROMIUM=1 but {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (the system's), one per test: Playwright's event loop starts
    executor threads, which must end with the test (the thread-leak guard)."""
    executable = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # As root (CI containers) Chromium refuses to start without --no-sandbox.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=str(executable), args=args)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Live:
    """A site with a running daemon and a running web server."""

    site: Site
    daemon: DaemonProcess
    url: str
    true_label: dict[str, str]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
    config_writer: Any,
    cli_env: dict[str, str],
    dataset_root: Path,
) -> Iterator[Live]:
    """The shipped model files 8 validation photos; then `inboxsort web` serves them."""
    root = tmp_path_factory.mktemp("browser")
    port = free_port()
    site = make_site(root / "site", BUILTIN_DIR, config_writer, web={"port": port})
    daemon = spawn_daemon(site, cli_env)
    web_log = (root / "web.log").open("wb")
    web = subprocess.Popen(
        [sys.executable, "-m", "inboxsort", "--config", str(site.config_path), "web"],
        env=cli_env,
        stdout=web_log,
        stderr=subprocess.STDOUT,
    )
    try:
        daemon.wait_ready()
        true_label = {}
        for label in ("cats", "dogs"):
            drop = root / f"drop-{label}"
            for path in copy_first_images(dataset_root / "validation" / label, drop, PER_CLASS):
                true_label[path.name] = label
                path.rename(site.inbox / path.name)
        daemon.until(lambda: site.settled(2 * PER_CLASS), "the photos to be filed")
        get(f"http://127.0.0.1:{port}/api/stats")
        yield Live(site, daemon, f"http://127.0.0.1:{port}", true_label)
    finally:
        _stop(web)
        web_log.close()
        _stop(daemon.process)


def shoot(page: Any, tmp_path: Path, name: str) -> None:
    """Screenshot the page into tmp_path, and into $INBOXSORT_SCREENSHOTS when set."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000, f"{name}: an almost empty screenshot"
    wanted = os.environ.get("INBOXSORT_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(wanted) / path.name)


def _corrections_of(site: Site, image_id: int) -> list[tuple[Any, ...]]:
    sql = "SELECT source, old_label, new_label FROM corrections WHERE image_id = ?"
    return site.query(sql, image_id)


def test_review_page_click_and_key_correct_images(browser: Any, live: Live, tmp_path: Path) -> None:
    site = live.site
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{live.url}/review")
    tiles = page.locator("li.tile")
    assert tiles.count() == 2 * PER_CLASS
    # Every thumbnail loaded (a broken image has naturalWidth 0).
    loaded = "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
    wait_for(lambda: page.evaluate(loaded), "every thumbnail to load", timeout=30)
    shoot(page, tmp_path, "review")
    rows = {r.id: r for r in site.rows()}
    # The misfiled one if the model got one wrong, otherwise any: the user says it is wrong.
    chosen = next(
        (r for r in rows.values() if r.label != live.true_label[r.original_name]),
        next(iter(rows.values())),
    )
    other = "dogs" if chosen.label == "cats" else "cats"
    tile = page.locator(f'li.tile[data-id="{chosen.id}"]')
    tile.locator(f'button[data-label="{other}"]').click()
    expect(tile.locator(".label")).to_have_text(other, timeout=30000)
    moved = next(r for r in site.rows() if r.id == chosen.id)
    assert Path(moved.path) == site.library / other / Path(chosen.path).name
    assert Path(moved.path).is_file() and not Path(chosen.path).exists()
    assert moved.label == other and moved.status == STATUS_FILED
    # The daemon's library watcher sees the move too, and must not record it a second time.
    time.sleep(1.5)
    assert _corrections_of(site, chosen.id) == [(SOURCE_REVIEW, chosen.label, other)]
    page.reload()
    assert page.locator(f'li.tile[data-id="{chosen.id}"]').get_attribute("data-label") == other

    # The keyboard: focus another tile and press x (the other class).
    second = next(r for r in rows.values() if r.id != chosen.id)
    flipped = "dogs" if second.label == "cats" else "cats"
    second_tile = page.locator(f'li.tile[data-id="{second.id}"]')
    second_tile.focus()
    page.keyboard.press("x")
    expect(second_tile).to_have_attribute("data-label", flipped, timeout=30000)
    assert _corrections_of(site, second.id) == [(SOURCE_REVIEW, second.label, flipped)]
    assert (site.library / flipped / Path(second.path).name).is_file()

    # Bulk: two of one label selected (space on one, its box on the other), then moved.
    rest = [r for r in site.rows() if r.id not in (chosen.id, second.id)]
    source = max(("cats", "dogs"), key=lambda label: sum(r.label == label for r in rest))
    target = "dogs" if source == "cats" else "cats"
    first, other_dog = [r for r in rest if r.label == source][:2]
    page.locator(f'li.tile[data-id="{first.id}"]').focus()
    page.keyboard.press(" ")
    page.locator(f'li.tile[data-id="{other_dog.id}"] input.pick').check()
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.locator(f'button.bulk-label[data-label="{target}"]').click()
    for row in (first, other_dog):
        tile = page.locator(f'li.tile[data-id="{row.id}"]')
        expect(tile).to_have_attribute("data-label", target, timeout=30000)
        assert _corrections_of(site, row.id) == [(SOURCE_REVIEW, source, target)]
        assert (site.library / target / Path(row.path).name).is_file()
    expect(page.locator("#selected-count")).to_have_text("0 selected")
    page.close()


def test_models_page_activates_a_version_and_the_daemon_swaps_to_it(
    browser: Any, live: Live, tmp_path: Path
) -> None:
    site = live.site
    version = site.register(BUILTIN_DIR)
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    page.goto(f"{live.url}/models")
    page.wait_for_selector("#accuracy-chart.drawn canvas")
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    with page.expect_navigation():
        page.locator(f'tr[data-version="{version}"] button.activate').click()
    assert dialogs == [f"Serve model version {version}?"]
    assert page.locator(f'tr[data-version="{version}"] .active-mark').count() == 1
    active = site.query("SELECT version FROM model_versions WHERE active")
    assert active == [(version,)]
    live.daemon.until(
        lambda: (site.heartbeat() or None) and site.heartbeat().model_version == version,  # type: ignore[union-attr]
        "the daemon to serve the version activated on the page",
    )
    page.wait_for_selector("#accuracy-chart.drawn canvas")
    shoot(page, tmp_path, "models")
    page.close()


def _canvas_has_ink(page: Any, selector: str) -> bool:
    script = """(sel) => {
        const canvas = document.querySelector(sel + ' canvas');
        if (!canvas || !canvas.width || !canvas.height) return false;
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return true;
        return false;
    }"""
    return bool(page.evaluate(script, selector))


def test_dashboard_draws_its_charts(browser: Any, live: Live, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    page.goto(f"{live.url}/dashboard")
    for chart in ("#hourly-chart", "#daily-chart"):
        page.wait_for_selector(f"{chart}.drawn canvas", timeout=30000)
        assert _canvas_has_ink(page, chart), f"{chart} drew nothing"
    assert int(page.locator("#hourly-chart").get_attribute("data-points") or 0) > 0
    assert "running" in page.locator("#daemon").inner_text()
    shoot(page, tmp_path, "dashboard")
    page.close()


def test_failed_page_sends_an_image_back(browser: Any, live: Live, tmp_path: Path) -> None:
    site = live.site
    bad = tmp_path / "notes.jpg"
    bad.write_text("a shopping list, not a photo\n")
    # An old mtime: the daemon fails it at once instead of waiting for a writer to finish it.
    old = time.time() - 3600
    os.utime(bad, (old, old))
    bad.rename(site.inbox / "notes.jpg")
    live.daemon.until(
        lambda: site.query("SELECT id FROM images WHERE status = ?", STATUS_FAILED),
        "the text file to fail",
    )
    [(failed_id,)] = site.query("SELECT id FROM images WHERE status = ?", STATUS_FAILED)
    page = browser.new_page(viewport={"width": 1200, "height": 500})
    page.goto(f"{live.url}/failed")
    assert "not an image: text" in page.locator(f'tr[data-id="{failed_id}"] .reason').inner_text()
    shoot(page, tmp_path, "failed")
    page.on("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.locator(f'tr[data-id="{failed_id}"] button').click()
    status, error = site.query("SELECT status, error FROM images WHERE id = ?", failed_id)[0]
    assert status == STATUS_DELETED and "sent back to the inbox" in error
    # Still a text file: the daemon takes it from the inbox again and fails it under a new row.
    wait_for(
        lambda: (
            len(site.query("SELECT id FROM images WHERE status = ?", STATUS_FAILED)) == 1
            and not site.inbox_files()
        ),
        "the file sent back to be processed again",
    )
    assert (site.failed / "notes.jpg").is_file()
    page.close()


def test_a_missing_chromium_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.web.test_browser as here

    monkeypatch.setattr(here, "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.delenv("INBOXSORT_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception):
        _chromium_or_skip()
    monkeypatch.setenv("INBOXSORT_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="INBOXSORT_REQUIRE_CHROMIUM=1"):
        _chromium_or_skip()
