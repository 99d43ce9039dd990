"""`backfill` on a real local Ray: real images, the shipped model through LiteRT, real SQLite."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inboxsort.backfill.run import Options, backfill
from inboxsort.config import Config, load_config
from inboxsort.db import STATUS_FILED, open_database, utcnow
from inboxsort.db.backfill import recorded_at
from inboxsort.db.schema import ORIGIN_BACKFILL, ORIGIN_INBOX
from inboxsort.errors import ConfigError
from inboxsort.imageio import decode_image, read_bytes
from inboxsort.intake.ledger import Entry, Ledger
from inboxsort.model.registry import ModelStore
from tests.backfill.conftest import copy_images, site_config
from tests.conftest import write_config
from tests.helpers.daemonkit import files_under, sha256_of, wait_for
from tests.helpers.imagegen import HTML_BYTES, TEXT_BYTES, noise, random_bytes, save

pytestmark = pytest.mark.slow


def run(config: Config, *paths: Path, **options: object) -> tuple[int, str]:
    """One backfill in this process (on the module's Ray); its exit code and its output."""
    out = io.StringIO()
    code = backfill(config, Options(roots=paths, **options), out=out, tty=False)  # type: ignore[arg-type]
    return code, out.getvalue()


def rows(config: Config) -> list[tuple]:
    """(path, status, label, score, error, origin, node, sha256) of every row, by id."""
    file = config.database.url.removeprefix("sqlite:///")
    with sqlite3.connect(file) as con:
        return con.execute(
            "SELECT path, status, label, score, error, origin, node, sha256 FROM images ORDER BY id"
        ).fetchall()


def daemon_labels(config: Config, files: list[Path]) -> dict[str, tuple[str, float]]:
    """Label and score of each file as the daemon classifies it: its model, loader and batches."""
    db = open_database(config.database.url)
    try:
        store = ModelStore(config.paths.models, db)
        classifier = store.load(runtime=config.serving.runtime, workers=2)
    finally:
        db.close()
    out: dict[str, tuple[str, float]] = {}
    for start in range(0, len(files), 16):  # batch.max_size
        chunk = files[start : start + 16]
        pixels = np.stack([decode_image(read_bytes(p), classifier.image_size) for p in chunk])
        for path, p in zip(chunk, classifier.predict(pixels), strict=True):
            out[str(path)] = (p.label, p.score)
    return out


def test_labels_match_the_daemon_and_a_rerun_adds_nothing(
    ray_session: None, tmp_path: Path
) -> None:
    """200 real images: one row each with the daemon's label; a rerun classifies nothing."""
    archive = tmp_path / "archive"
    files = copy_images(archive / "2019", cats=100, dogs=100)
    before = {p: sha256_of(p) for p in files}
    _, config = site_config(tmp_path)

    code, out = run(config, archive, dry_run=True)
    assert code == 0 and "would classify 200 file(s) with model version 0 (litert), leaving" in out
    assert rows(config) == []

    code, out = run(config, archive)
    assert code == 0, out
    recorded = rows(config)
    assert len(recorded) == 200 and len({r[0] for r in recorded}) == 200
    expected = daemon_labels(config, files)
    got = {r[0]: (r[2], r[3]) for r in recorded}
    assert {p: got[p][0] for p in got} == {p: expected[p][0] for p in expected}
    for path, (_, score) in got.items():
        assert score == pytest.approx(expected[path][1], abs=1e-5)
    assert {(r[1], r[5]) for r in recorded} == {("classified", "backfill")}
    assert all(r[6] and r[6].split(":")[0] == os.uname().nodename for r in recorded)
    labels = Counter(r[2] for r in recorded)
    assert "200 classified" in out and f"  cats: {labels['cats']}" in out
    # Left where they were, byte for byte.
    assert {p: sha256_of(p) for p in files} == before

    code, out = run(config, archive)
    assert code == 0 and rows(config) == recorded
    assert "0 classified" in out and "200 skipped (already on record)" in out

    # A file moved within the archive keeps its one row, found by its SHA-256.
    moved = archive / "sorted" / files[0].name
    moved.parent.mkdir()
    files[0].rename(moved)
    code, out = run(config, archive)
    assert code == 0 and "1 found moved" in out
    after = rows(config)
    assert len(after) == 200
    assert next(r for r in after if r[0] == str(moved))[7] == before[files[0]]
    assert not [r for r in after if r[0] == str(files[0])]


def test_bad_files_get_failed_rows_with_reasons_and_stay(ray_session: None, tmp_path: Path) -> None:
    """Each bad file is a failed row with its reason, beside good ones in the same block."""
    archive = tmp_path / "archive"
    good = copy_images(archive, cats=2, dogs=2)
    bad = {
        "notes.jpg": TEXT_BYTES,
        "404.jpg": HTML_BYTES,
        "empty.jpg": b"",
        "noise.jpg": random_bytes(),
    }
    for name, data in bad.items():
        (archive / name).write_bytes(data)
    whole = save(noise((64, 64), seed=3), archive / "whole.jpg")
    (archive / "truncated.jpg").write_bytes(whole.read_bytes()[:200])
    (archive / "link.jpg").symlink_to(good[0])
    os.mkfifo(archive / "pipe.jpg")
    (archive / "download.jpg.part").write_bytes(whole.read_bytes())  # ignored, as in the inbox
    (archive / ".hidden.jpg").write_bytes(whole.read_bytes())
    listing = sorted(files_under(archive))
    _, config = site_config(tmp_path)

    code, out = run(config, archive)
    assert code == 0, out
    by_name = {Path(r[0]).name: r for r in rows(config)}
    assert set(by_name) == {p.name for p in good} | set(bad) | {
        "whole.jpg",
        "truncated.jpg",
        "link.jpg",
        "pipe.jpg",
    }
    reasons = {name: r[4] for name, r in by_name.items() if r[1] == "failed"}
    assert reasons["notes.jpg"] == "not an image: text"
    assert reasons["404.jpg"] == "not an image: HTML"
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["noise.jpg"] == "not an image Pillow can read"
    assert reasons["truncated.jpg"].startswith("cannot decode")
    assert reasons["link.jpg"] == "symbolic link (not followed)"
    assert reasons["pipe.jpg"] == "not a regular file"
    assert set(reasons) == {*bad, "truncated.jpg", "link.jpg", "pipe.jpg"}
    assert {by_name[p.name][1] for p in [*good, whole]} == {"classified"}
    assert "failed: 1 × not an image: text" in out
    # Nothing moved without --file.
    assert sorted(files_under(archive)) == listing


def test_a_killed_ray_worker_leaves_one_row_per_image(ray_session: None, tmp_path: Path) -> None:
    """SIGKILL a model actor mid-run: Ray restarts it and reruns its batch; no image twice."""
    archive = tmp_path / "archive"
    files = copy_images(archive, cats=200, dogs=200)
    _, config = site_config(tmp_path)
    file = config.database.url.removeprefix("sqlite:///")
    killed: list[int] = []
    done_before: list[int] = []

    def kill_an_actor() -> None:
        def first_node() -> str | None:
            try:
                with sqlite3.connect(file) as con:
                    found = con.execute("SELECT node FROM images LIMIT 1").fetchone()
            except sqlite3.OperationalError:
                return None  # not created yet
            return found[0] if found else None

        node = wait_for(first_node, "a first row", timeout=180)
        pid = int(node.rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        with sqlite3.connect(file) as con:
            done_before.append(con.execute("SELECT count(*) FROM images").fetchone()[0])

    killer = threading.Thread(target=kill_an_actor, name="kill-an-actor")
    killer.start()
    try:
        code, out = run(config, archive)
    finally:
        killer.join()
    assert code == 0, out
    assert killed
    recorded = rows(config)
    assert sorted(r[0] for r in recorded) == sorted(str(p) for p in files)
    assert {r[1] for r in recorded} == {"classified"}
    # The kill came early: most images were classified after it, by the actors left or
    # restarted, and the batches the dead actor had in flight were run again.
    assert done_before[0] < len(files) // 2, done_before


def test_file_moves_every_file_once_and_overwrites_nothing(
    ray_session: None, tmp_path: Path
) -> None:
    """--file: each image filed into library/<label>/ once; taken names get a number."""
    archive = tmp_path / "archive"
    files = copy_images(archive, cats=20, dogs=20)
    (archive / "notes.jpg").write_bytes(TEXT_BYTES)
    shas = Counter(sha256_of(p) for p in [*files, archive / "notes.jpg"])
    _, config = site_config(tmp_path)
    library = config.paths.library
    # Names the library already holds, with other content, under both labels.
    taken = []
    for label in ("cats", "dogs"):
        for jpg in files:
            dest = library / label / jpg.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            taken.append(save(noise((16, 16), seed=len(taken)), dest))
    kept = {p: sha256_of(p) for p in taken}

    code, out = run(config, archive, file=True)
    assert code == 0, out
    assert files_under(archive) == []
    outputs = [p for p in files_under(library) + files_under(config.paths.failed) if p not in kept]
    assert Counter(sha256_of(p) for p in outputs) == shas
    assert {p: sha256_of(p) for p in taken} == kept  # nothing overwritten
    recorded = rows(config)
    assert len(recorded) == 41
    assert Counter(r[1] for r in recorded) == {"filed": 40, "failed": 1}
    assert all(Path(r[0]).exists() for r in recorded)
    assert {r[5] for r in recorded} == {"backfill"}
    assert all(" (1)" in Path(r[0]).name for r in recorded if r[1] == "filed")
    assert (config.paths.failed / "notes.jpg").read_bytes() == TEXT_BYTES

    code, out = run(config, archive, file=True)
    assert code == 0 and len(rows(config)) == 41 and "0 classified" in out


def test_file_refuses_an_archive_inside_the_library(tmp_path: Path) -> None:
    """--file from a folder inside the library: a clear error, nothing touched, no Ray."""
    _, config = site_config(tmp_path)
    inside = config.paths.library / "old"
    copy_images(inside, cats=1, dogs=0)
    with pytest.raises(ConfigError, match="overlap"):
        run(config, inside, file=True)
    assert len(files_under(inside)) == 1


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of its own on the local PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"inboxsort_backfill_{os.getpid()}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name}")
        con.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_postgresql_records_once_and_a_rerun_skips_all(
    ray_session: None, tmp_path: Path, postgres_url: str
) -> None:
    """The cluster's database: rows land in PostgreSQL; mtimes compare equal on a rerun."""
    archive = tmp_path / "archive"
    files = copy_images(archive, cats=10, dogs=10)
    (archive / "notes.jpg").write_bytes(TEXT_BYTES)
    config = load_config(write_config(tmp_path, database_url=postgres_url))

    code, out = run(config, archive)
    assert code == 0 and "20 classified" in out and "1 failed" in out, out
    code, out = run(config, archive)
    assert code == 0 and "0 classified" in out and "21 skipped (already on record)" in out, out
    db = open_database(postgres_url)
    try:
        with db.session() as session:
            found = recorded_at(session, [str(p) for p in files])
    finally:
        db.close()
    assert sorted(found) == sorted(str(p) for p in files)
    assert {r.status for r in found.values()} == {"classified"}


def test_file_finishes_the_moves_a_killed_run_left(ray_session: None, tmp_path: Path) -> None:
    """--file after kill -9: a move not begun is made, one half done is completed; the
    daemon's own pending rows are not the backfill's to touch."""
    archive = tmp_path / "archive"
    waiting, linked = copy_images(archive, cats=1, dogs=1)
    _, config = site_config(tmp_path)
    library = config.paths.library
    (library / "dogs").mkdir(parents=True)
    os.link(linked, library / "dogs" / linked.name)  # killed between link and unlink
    daemon_file = config.paths.inbox / "inbox.jpg"
    daemon_file.parent.mkdir(parents=True)
    daemon_file.write_bytes(waiting.read_bytes())
    db = open_database(config.database.url)
    try:
        entries = [
            Entry(
                p,
                dest,
                STATUS_FILED,
                sha256_of(p),
                p.stat().st_size,
                None,
                None,
                utcnow(),
                origin=origin,
            )
            for p, dest, origin in (
                (waiting, library / "cats" / waiting.name, ORIGIN_BACKFILL),
                (linked, library / "dogs" / linked.name, ORIGIN_BACKFILL),
                (daemon_file, library / "cats" / "inbox.jpg", ORIGIN_INBOX),
            )
        ]
        Ledger(db).plan(entries)
    finally:
        db.close()

    code, out = run(config, archive, file=True)
    assert code == 0, out
    assert files_under(archive) == []
    assert sorted(p.name for p in files_under(library)) == sorted([waiting.name, linked.name])
    recorded = rows(config)
    assert len(recorded) == 3
    by_path = {r[0]: r for r in recorded}
    assert by_path[str(library / "dogs" / linked.name)][1] == "filed"
    refiled = next(r for r in recorded if r[0].endswith(waiting.name))
    assert refiled[1] == "filed" and Path(refiled[0]) == library / str(refiled[2]) / waiting.name
    assert sha256_of(Path(refiled[0])) == sha256_of(daemon_file)  # the same bytes, moved
    assert by_path[str(daemon_file)][1] == "pending"  # the daemon recovers its own
    assert daemon_file.exists()
