"""A fleet: several `inboxsort run` processes, node names apart, on one real PostgreSQL database.

They share one inbox and one library (as two machines watching one NAS share would; in the
flood, one node polls the inbox as on a network share). Each file
must be filed exactly once, by whichever node claims it in the database; a node killed with
SIGKILL must leave nothing stranded (another node takes its claims over once its heartbeat is
stale); a retrain runs on one node of the fleet at a time.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from inboxsort.db import (
    DAEMON_LOST,
    DAEMON_STOPPED,
    STATUS_FILED,
    Correction,
    DaemonState,
    Database,
    Image,
    InboxClaim,
    open_database,
)
from inboxsort.db.locks import FleetLock
from tests.helpers import pgdb
from tests.helpers.daemonkit import DaemonProcess, Site, files_under, sha256_of, wait_for
from tests.helpers.imagegen import write_noise_images

FLOOD = 300
STALE_SECONDS = 5.0


@pytest.fixture
def fleet_db(pg_module_url: str) -> Iterator[str]:
    """The module's database on the PostgreSQL test server, emptied after each test."""
    yield pg_module_url
    pgdb.empty_tables(pg_module_url)


@pytest.fixture
def fleet(tmp_path: Path, tiny_model: Path, config_writer, fleet_db: str) -> Callable[..., Site]:
    """fleet(node, polling=False) -> the Site of one node: shared inbox, library, failed and
    duplicates, its own models folder (tiny_model as version 1, active) and config, all on one
    database."""
    shared = tmp_path / "shared"
    for folder in ("inbox", "library", "failed", "duplicates"):
        (shared / folder).mkdir(parents=True, exist_ok=True)
    registered: list[int] = []

    def make(node: str, *, polling: bool = False) -> Site:
        root = tmp_path / node
        # Polling: how a node watches a network share, where inotify misses others' writes.
        watch = "polling = true\npoll_interval_seconds = 0.5\n" if polling else ""
        extra = (
            f'[node]\nname = "{node}"\nstale_seconds = {STALE_SECONDS}\n'
            f"[watch]\nsettle_seconds = 0.2\nrescan_seconds = 0\n{watch}"
            "[batch]\nmax_size = 16\nqueue_size = 64\n"
            "[retrain]\nenabled = false\n"
        )
        path = config_writer(
            root,
            extra,
            database_url=fleet_db,
            **{f: shared / f for f in ("inbox", "library", "failed", "duplicates")},
        )
        site = Site(root, path)
        site.models.mkdir(parents=True, exist_ok=True)
        if not registered:
            registered.append(site.register(tiny_model))
            site.activate(registered[0])
        else:
            shutil.copytree(tiny_model, site.models / f"{registered[0]:04d}")
        return site

    return make


def rows(url: str) -> list[Image]:
    with open_database(url) as db, db.session() as session:
        return list(session.scalars(select(Image).order_by(Image.id)))


def node_states(url: str) -> dict[str, str]:
    with open_database(url) as db, db.session() as session:
        return {r.node: r.state for r in session.scalars(select(DaemonState))}


def drop_flood(tmp_path: Path, inbox: Path, count: int) -> dict[str, str]:
    """Write `count` distinct images beside the inbox, then rename each in; name -> SHA-256."""
    staging = tmp_path / "staging"
    made = write_noise_images(staging, count, suffix=".png", size=(24, 24))
    expected = {p.name: sha256_of(p) for p in made}
    for path in made:
        path.rename(inbox / path.name)
    return expected


def assert_filed_exactly_once(url: str, site: Site, expected: dict[str, str]) -> list[Image]:
    """One filed row per image, each image once in the library, nothing left anywhere else."""
    found = rows(url)
    assert sorted(r.original_name for r in found) == sorted(expected)
    assert {r.status for r in found} == {STATUS_FILED}
    library = [p for p in files_under(site.library)]
    assert sorted(sha256_of(p) for p in library) == sorted(expected.values())
    assert sorted(str(p) for p in library) == sorted(r.path for r in found)
    assert files_under(site.inbox) == []
    assert files_under(site.failed) == [] and files_under(site.duplicates) == []
    with open_database(url) as db, db.session() as session:
        assert list(session.scalars(select(InboxClaim))) == []
        assert list(session.scalars(select(Correction))) == []  # no filing taken for a move
    return found


def settled(url: str, site: Site, count: int) -> bool:
    found = rows(url)
    return (
        not files_under(site.inbox)
        and len(found) == count
        and all(r.status == STATUS_FILED for r in found)
    )


def stop_all(*daemons: DaemonProcess) -> None:
    for daemon in daemons:
        if daemon.alive():
            daemon.signal(signal.SIGTERM)
    for daemon in daemons:
        assert daemon.wait(30) in (0, -signal.SIGKILL), daemon.log()


def test_a_shared_inbox_flood_is_filed_exactly_once(tmp_path, fleet, spawn) -> None:
    a, b = fleet("a"), fleet("b", polling=True)
    node_a, node_b = spawn(a, log_name="a"), spawn(b, log_name="b")
    node_a.wait_ready()
    node_b.wait_ready()
    expected = drop_flood(tmp_path, a.inbox, FLOOD)
    url = a.config.database.url
    wait_for(lambda: settled(url, a, FLOOD), "the flood to be filed", timeout=240)
    found = assert_filed_exactly_once(url, a, expected)
    by_node = Counter(r.node for r in found)
    assert set(by_node) <= {"a", "b"}, by_node
    stop_all(node_a, node_b)
    assert node_a.process.returncode == 0 and node_b.process.returncode == 0
    assert node_states(url) == {"a": DAEMON_STOPPED, "b": DAEMON_STOPPED}
    print(f"filed by node: {dict(by_node)}")


def test_kill_9_of_one_node_mid_flood_strands_nothing(tmp_path, fleet, spawn) -> None:
    a, b = fleet("a"), fleet("b")
    node_a, node_b = spawn(a, log_name="a"), spawn(b, log_name="b")
    node_a.wait_ready()
    node_b.wait_ready()
    url = a.config.database.url
    expected = drop_flood(tmp_path, a.inbox, FLOOD)

    def mid_flood(db: Database) -> bool:
        """Node a has filed some and holds claims on more (it claims ahead of filing)."""
        with db.session() as session:
            filed = session.scalar(
                select(func.count()).where(Image.node == "a", Image.status == STATUS_FILED)
            )
            held = session.scalar(select(func.count()).where(InboxClaim.node == "a"))
        return (filed or 0) >= 5 and (held or 0) >= 5

    # One connection polled fast: the flood takes seconds, and the kill must land inside it.
    with open_database(url) as db:
        node_a.until(lambda: mid_flood(db), "node a to file some and hold claims", interval=0.01)
        node_a.kill9()
        with db.session() as session:
            held = session.scalars(select(InboxClaim).where(InboxClaim.node == "a")).all()
    assert held, "node a held no claims when killed: nothing to take over"
    wait_for(lambda: settled(url, a, FLOOD), "node b to file the rest", timeout=240)
    assert_filed_exactly_once(url, a, expected)
    node_b.wait_log("node a stopped beating", "node b to take node a over")
    assert node_states(url)["a"] == DAEMON_LOST
    stop_all(node_b)
    assert node_b.process.returncode == 0


def test_a_second_daemon_under_the_same_node_name_is_refused(fleet, spawn) -> None:
    a = fleet("a")
    first = spawn(a, log_name="a")
    first.wait_ready()
    second = spawn(a, log_name="a-again")
    assert second.wait(120) == 2
    assert "another daemon runs as node 'a' on this database" in second.log()
    assert first.alive()
    stop_all(first)


def test_a_retrain_running_on_one_node_makes_the_others_skip(fleet, cli_env) -> None:
    a, b = fleet("a"), fleet("b")
    url = a.config.database.url
    with open_database(url) as db:
        training = FleetLock(db, "retrain")  # node a, training now
        assert training.acquire()
        try:
            command = ["--config", str(b.config_path), "retrain", "--force", "--json"]
            done = subprocess.run(
                [sys.executable, "-m", "inboxsort", *command],
                env=cli_env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert done.returncode == 0, done.stderr
            outcome = json.loads(done.stdout)
            assert outcome["ran"] is False
            assert outcome["reason"] == "skipped: a retrain is running elsewhere in the fleet"
            assert not FleetLock(db, "retrain").acquire()  # still held: one trainer
        finally:
            training.release()
        again = FleetLock(db, "retrain")
        assert again.acquire()  # free once the trainer lets go
        again.release()


OTHER = {"cats": "dogs", "dogs": "cats"}


def test_corrections_on_two_nodes_retrain_a_version_every_node_serves(
    fleet, spawn, run_cli, validation_jpegs
) -> None:
    a, b = fleet("a"), fleet("b")
    url = a.config.database.url
    node_a, node_b = spawn(a, log_name="a"), spawn(b, log_name="b")
    node_a.wait_ready()
    node_b.wait_ready()
    images = validation_jpegs["cats"][40:48] + validation_jpegs["dogs"][40:48]
    for source in images:
        shutil.copyfile(source, a.inbox / source.name)
    wait_for(lambda: settled(url, a, len(images)), "the images to be filed")
    # Three corrections made on each node (`inboxsort label`, each with its node's config).
    for i, row in enumerate(rows(url)[:6]):
        site = a if i % 2 else b
        done = run_cli("--config", site.config_path, "label", row.path, OTHER[row.label])
        assert done.returncode == 0, done.stderr
    with open_database(url) as db, db.session() as session:
        assert Counter(c.node for c in session.scalars(select(Correction))) == {"a": 3, "b": 3}

    # Node a trains, on the corrections of both nodes.
    done = run_cli("--config", a.config_path, "retrain", "--force", "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["ran"] is True and outcome["candidate"] == 2, outcome
    assert outcome["new_corrections"] == 6
    if not outcome["promoted"]:
        # The gate may reject a candidate trained on so little: activated by hand (on node a),
        # which reaches node b all the same.
        forced = run_cli("--config", a.config_path, "models", "activate", "2", "--force")
        assert forced.returncode == 0, forced.stderr

    # Node b never trained version 2 and shares no models folder: it fetches it and swaps.
    node_b.wait_log("model version 2 loaded", "node b to swap version 2 in", timeout=120)
    node_a.wait_log("model version 2 loaded", "node a to swap version 2 in", timeout=120)
    assert "fetching it" in node_b.log()
    assert sha256_of(b.models / "0002" / "model.keras") == sha256_of(
        a.models / "0002" / "model.keras"
    )
    late = validation_jpegs["dogs"][60]
    shutil.copyfile(late, a.inbox / late.name)
    wait_for(lambda: settled(url, a, len(images) + 1), "a later image to be filed")
    (row,) = [r for r in rows(url) if r.original_name == late.name]
    assert row.model_version == 2
    stop_all(node_a, node_b)
