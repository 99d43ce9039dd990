"""The daemon as a subprocess (`inboxsort --config X run`): kill -9, SIGTERM, SIGHUP, --once.

These need a process of their own: signals go to a real process, and kill -9 leaves the files and
the SQLite file exactly as a crash would. Every check reads the disk and the database afresh.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

from inboxsort.db import STATUS_DUPLICATE, STATUS_FAILED, STATUS_FILED, STATUS_PENDING
from tests.helpers.daemonkit import READY_SECONDS, Site, sha256_of
from tests.helpers.imagegen import TEXT_BYTES, random_bytes

SIGTERM_SECONDS = 10.0  # what systemd allows before it sends SIGKILL
KILLS = 3
FINAL = (STATUS_FILED, STATUS_FAILED, STATUS_DUPLICATE)


def flood(validation_jpegs: dict[str, list[Path]], count: int, *, offset: int = 0) -> list[Path]:
    half = count // 2
    return [
        *validation_jpegs["cats"][offset : offset + half],
        *validation_jpegs["dogs"][offset : offset + count - half],
    ]


def copy_in(sources: list[Path], inbox: Path) -> dict[str, str]:
    """Copy files into the inbox; returns name -> sha256 of what went in."""
    expected = {}
    for source in sources:
        shutil.copyfile(source, inbox / source.name)
        expected[source.name] = sha256_of(source)
    assert len(expected) == len(sources)
    return expected


def assert_nothing_lost(site: Site, expected: dict[str, str]) -> None:
    """With no daemon running (just killed): every input is somewhere, and no row lies.

    A move interrupted between link and unlink leaves one inode under two names (inbox and
    destination): allowed until the next start, as long as it is one file, not two.
    """
    inbox = {p.name: p for p in site.inbox_files()}
    outputs = {p.name: p for p in site.outputs()}
    assert len(outputs) == len(site.outputs()), "a name filed twice"
    assert set(inbox) | set(outputs) == set(expected), "an input vanished"
    assert set(inbox) <= set(expected) and set(outputs) <= set(expected), "a stray file appeared"
    for name in set(inbox) & set(outputs):
        a, b = os.lstat(inbox[name]), os.lstat(outputs[name])
        assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino), f"{name} copied, not moved"
    for name, path in outputs.items():
        assert sha256_of(path) == expected[name]
    for row in site.rows():
        assert row.status in FINAL or row.status == STATUS_PENDING, row
        if row.status in FINAL:
            assert outputs.get(row.original_name) == Path(row.path), row
        else:
            where = {row.source_path, row.dest_path}
            present = {str(inbox.get(row.original_name)), str(outputs.get(row.original_name))}
            assert where & present, f"pending row {row} points nowhere"


def assert_exact_accounting(site: Site, expected: dict[str, str]) -> Counter[str]:
    """Every input in exactly one place with exactly one row saying so; returns status counts.

    Classified images are in library/<label>/, bad ones in failed/ with their reason; of equal
    contents one is filed and the others (duplicates = "move") point at it from duplicates/.
    """
    assert site.inbox_files() == [], site.describe()
    outputs = site.outputs()
    assert Counter(p.name for p in outputs) == Counter(list(expected)), "lost or doubled files"
    for path in outputs:
        assert sha256_of(path) == expected[path.name]
        assert os.lstat(path).st_nlink == 1, f"{path} still has a second name"
    rows = site.rows()
    assert Counter(r.original_name for r in rows) == Counter(list(expected)), "not one row per file"
    assert sorted(Path(r.path) for r in rows) == outputs  # distinct, and each exists
    by_content: dict[str | None, list] = {}
    for row in rows:
        path = Path(row.path)
        assert row.dest_path is None and path.name == row.original_name, row
        assert row.sha256 == expected[row.original_name], row
        assert row.filed_at is not None and row.received_at <= row.filed_at, row
        if row.status == STATUS_FAILED:
            assert path.parent == site.failed and row.error and row.label is None, row
        else:
            by_content.setdefault(row.sha256, []).append(row)
    for group in by_content.values():
        originals = [r for r in group if r.duplicate_of is None]
        assert len(originals) == 1, f"not one original among {group}"
        (original,) = originals
        assert original.status == STATUS_FILED and original.error is None, original
        assert Path(original.path).parent == site.library / original.label, original
        assert original.received_at <= original.classified_at <= original.filed_at, original
        for copy in group:
            if copy is not original:
                assert copy.status == STATUS_DUPLICATE, copy
                assert copy.duplicate_of == original.id, copy
                assert Path(copy.path).parent == site.duplicates, copy
    return Counter(r.status for r in rows)


# ---------------------------------------------------------------------------------------------
# kill -9
# ---------------------------------------------------------------------------------------------


def pending_moves(site: Site) -> int:
    """Rows planned with a destination and not finished: files being moved right now.

    Plain sqlite3 on a read-only connection: cheap enough to poll every few milliseconds.
    """
    ((count,),) = site.query(
        "SELECT count(*) FROM images WHERE status = ? AND dest_path IS NOT NULL", STATUS_PENDING
    )
    return int(count)


def crash_flood(validation_jpegs: dict[str, list[Path]], staging: Path) -> list[Path]:
    """300 inputs: 180 photos, 90 bad files (filing without inference: wide crash windows) and
    30 copies of photos under other names (duplicates)."""
    photos = flood(validation_jpegs, 180, offset=100)
    staging.mkdir()
    bad = []
    for i in range(90):
        data = random_bytes(512, seed=i) if i % 2 else TEXT_BYTES + f"item {i}\n".encode()
        bad.append(staging / f"bad_{i:03d}.jpg")
        bad[-1].write_bytes(data)
    copies = [Path(shutil.copyfile(p, staging / f"copy_of_{p.name}")) for p in photos[::6]]
    return [*photos, *bad, *copies]


def test_kill_9_at_random_moments_of_a_flood_loses_and_doubles_nothing(
    new_site, spawn, validation_jpegs, tmp_path
):
    seed = int(os.environ.get("INBOXSORT_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    site = new_site(batch={"max_size": 8}, filing={"duplicates": "move"})
    daemon = spawn(site)
    daemon.wait_ready()
    sources = crash_flood(validation_jpegs, tmp_path / "staging")
    rng.shuffle(sources)
    expected = copy_in(sources, site.inbox)
    assert len(expected) == 300
    # Two kills aimed at the middle of a batch's filing (a pending row naming its destination
    # is on record: plan, move and finish are under way), one at any moment of the flood.
    moments = ["filing", "filing", "any"]
    rng.shuffle(moments)
    story = [f"seed {seed}"]
    for kill, moment in enumerate(moments, start=1):
        before = len(site.outputs())
        if moment == "filing":
            daemon.until(
                lambda: pending_moves(site) or not site.inbox_files(),
                f"a batch being filed before kill {kill} ({'; '.join(story)})",
                timeout=READY_SECONDS,
                interval=0.002,
            )
            delay = rng.uniform(0.0, 0.015)
        else:
            daemon.until(
                lambda before=before: len(site.outputs()) > before,
                f"progress before kill {kill} ({'; '.join(story)})",
                timeout=READY_SECONDS,
            )
            delay = rng.uniform(0.0, 0.6)
        time.sleep(delay)  # the random moment; nothing is asserted about time
        daemon.kill9()
        assert daemon.process.returncode == -signal.SIGKILL
        left = len(site.inbox_files())
        story.append(f"kill {kill} {delay:.3f} s into {moment}, {left} files in the inbox")
        assert left > 0, f"the flood was over before a kill: {'; '.join(story)}"
        assert_nothing_lost(site, expected)
        if kill < len(moments):
            daemon = spawn(site)
            daemon.wait_ready()  # recovery done: pending rows now are the new process's own
    story_text = "; ".join(story)

    # Finish with one pass over what is left: it must recover, file everything and exit 0.
    final = spawn(site, "--once", log_name="once")
    assert final.wait(READY_SECONDS) == 0, f"{story_text}\n{final.log()}"
    logs = sorted((site.root / "logs").iterdir())
    story_text += "".join(
        f"\n{log.name}: {line.split(': ', 1)[-1]}"
        for log in logs
        for line in log.read_text().splitlines()
        if "recovery after an unclean stop" in line
    )
    statuses = assert_exact_accounting(site, expected)
    assert statuses == {STATUS_FILED: 180, STATUS_FAILED: 90, STATUS_DUPLICATE: 30}, story_text
    beat = site.heartbeat()
    assert beat is not None and beat.state == "stopped", story_text


# ---------------------------------------------------------------------------------------------
# SIGTERM
# ---------------------------------------------------------------------------------------------


def test_sigterm_in_a_flood_drains_and_exits_0_and_a_restart_finishes(
    new_site, spawn, validation_jpegs
):
    site = new_site(batch={"max_size": 8})
    daemon = spawn(site)
    daemon.wait_ready()
    expected = copy_in(flood(validation_jpegs, 200, offset=400), site.inbox)
    daemon.until(lambda: len(site.outputs()) >= 16, "the flood under way", describe=site.describe)
    start = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.wait(SIGTERM_SECONDS + 5)
    took = time.monotonic() - start
    assert code == 0, daemon.log()
    assert took < SIGTERM_SECONDS, f"took {took:.1f} s to stop"
    log = daemon.log()
    assert "SIGTERM received: finishing the batch in flight" in log
    assert "inboxsort.service.daemon: stopped: " in log
    beat = site.heartbeat()
    assert beat is not None and beat.state == "stopped"

    # Each file is either still in the inbox (no row yet, or a pending row with no destination)
    # or filed with its row: the batch in flight was finished, nothing else was started.
    inbox = {p.name: p for p in site.inbox_files()}
    outputs = {p.name: p for p in site.outputs()}
    all_rows = site.rows()
    assert max(Counter(r.original_name for r in all_rows).values(), default=0) <= 1
    rows = {r.original_name: r for r in all_rows}
    assert not set(inbox) & set(outputs)
    assert set(inbox) | set(outputs) == set(expected)
    assert inbox, "the flood was over before SIGTERM: nothing left to check the drain on"
    for name in inbox:
        row = rows.get(name)
        assert row is None or (row.status == STATUS_PENDING and row.dest_path is None), row
    for name, path in outputs.items():
        assert rows[name].status == STATUS_FILED and Path(rows[name].path) == path

    again = spawn(site, "--once", log_name="once")
    assert again.wait(READY_SECONDS) == 0, again.log()
    assert assert_exact_accounting(site, expected) == {STATUS_FILED: 200}


# ---------------------------------------------------------------------------------------------
# SIGHUP and model versions
# ---------------------------------------------------------------------------------------------


def test_sighup_retries_a_version_that_failed_to_load(
    new_site, spawn, tiny_model, validation_jpegs
):
    """A corrupt version is refused (v1 keeps serving) and, once fixed, SIGHUP brings it in.

    Polling alone never retries a version that failed to load: only SIGHUP does, so this also
    shows the signal reached the daemon (whose default action would have killed it).
    """
    site = new_site()
    version = site.register(tiny_model, corrupt=True)
    daemon = spawn(site)
    daemon.wait_ready()
    site.activate(version)
    refused = f"cannot load model version {version}, still serving 1"
    daemon.wait_log(refused, "the corrupt version refused", timeout=60)
    shutil.copyfile(validation_jpegs["cats"][30], site.inbox / "during.jpg")
    daemon.until(lambda: site.settled(1), "during.jpg filed", describe=site.describe)
    assert site.row_by_name("during.jpg").model_version == 1

    # Repair the version in place (atomically), then ask for a reload.
    fixed = site.models / f"{version:04d}" / "model.keras"
    shutil.copyfile(tiny_model / "model.keras", fixed.with_suffix(".new"))
    fixed.with_suffix(".new").rename(fixed)
    daemon.signal(signal.SIGHUP)
    serving = f"now serving model version {version} (was 1)"
    daemon.wait_log(serving, "the repaired version served", timeout=60)
    assert daemon.alive()
    shutil.copyfile(validation_jpegs["cats"][31], site.inbox / "after.jpg")
    daemon.until(lambda: site.settled(2), "after.jpg filed", describe=site.describe)
    assert site.row_by_name("after.jpg").model_version == version

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(SIGTERM_SECONDS + 5) == 0, daemon.log()


# ---------------------------------------------------------------------------------------------
# --once
# ---------------------------------------------------------------------------------------------


def test_run_once_files_everything_present_and_exits_0(new_site, spawn, validation_jpegs, db_url):
    site = new_site(database_url=db_url)
    sources = flood(validation_jpegs, 6, offset=40)
    expected = {}
    for i, source in enumerate(sources):
        dest = site.inbox / ("nested/deeper" if i % 2 else "") / source.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        expected[source.name] = sha256_of(source)
    (site.inbox / "notes.jpg").write_bytes(TEXT_BYTES)
    (site.inbox / "half.part").write_bytes(b"still downloading")  # ignored: stays

    daemon = spawn(site, "--once", log_name="once")
    assert daemon.wait(READY_SECONDS) == 0, daemon.log()
    assert [p.name for p in site.inbox_files()] == ["half.part"]
    rows = {r.original_name: r for r in site.rows()}
    assert set(rows) == {*expected, "notes.jpg"}
    assert rows["notes.jpg"].status == STATUS_FAILED
    assert rows["notes.jpg"].error == "not an image: text"
    for name, sha256 in expected.items():
        assert rows[name].status == STATUS_FILED
        assert sha256_of(Path(rows[name].path)) == sha256
    assert "watching" in daemon.log() and "stopped: model v1; 6 filed, 1 failed" in daemon.log()
    beat = site.heartbeat()
    assert beat is not None and beat.state == "stopped"
