"""`inboxsort query` and `inboxsort stats` while a real daemon runs, on rows it wrote itself."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

from tests.helpers.daemonkit import READY_SECONDS, WAIT_SECONDS
from tests.helpers.imagegen import TEXT_BYTES


def test_query_and_stats_read_a_running_daemons_database(
    new_site, spawn, run_cli, validation_jpegs, db_url
):
    site = new_site(database_url=db_url)
    daemon = spawn(site)
    daemon.wait_ready(READY_SECONDS)
    sources = validation_jpegs["cats"][20:24] + validation_jpegs["dogs"][20:22]
    for source in sources:
        shutil.copyfile(source, site.inbox / source.name)
    (site.inbox / "notes.jpg").write_bytes(TEXT_BYTES)
    daemon.until(lambda: site.settled(len(sources) + 1), "every image done", timeout=WAIT_SECONDS)

    def cli(*args: str) -> str:
        result = run_cli("--config", site.config_path, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    rows = json.loads(cli("query", "--format", "json"))
    assert len(rows) == len(sources) + 1
    (failed,) = json.loads(cli("query", "--status", "failed", "--format", "json"))
    assert failed["original_name"] == "notes.jpg" and failed["error"]
    assert Path(failed["path"]).parent == site.failed
    for label in ("cats", "dogs"):
        paths = cli("query", "--label", label, "--status", "filed", "--format", "paths").split()
        expected = [r for r in rows if r["label"] == label and r["status"] == "filed"]
        assert len(paths) == len(expected)
        assert all(Path(p).parent == site.library / label and Path(p).is_file() for p in paths)
    assert len(cli("query", "--format", "csv").splitlines()) == len(rows) + 1  # a header

    # The daemon keeps a heartbeat every 2 s; `stats` reads it without disturbing the daemon.
    def live() -> dict:
        stats = json.loads(cli("stats", "--json"))
        done = stats["daemon"]["processed"] == len(sources)
        return stats if done and stats["daemon"]["running"] else {}

    stats = daemon.until(live, "stats showing the daemon and its work", timeout=30)
    assert stats["images"]["by_status"] == {"failed": 1, "filed": len(sources)}
    state = stats["daemon"]
    assert state["pid"] == daemon.pid and state["state"] == "running"
    assert state["failed"] == 1 and state["queue_depth"] == 0 and state["in_flight"] == 0
    assert state["model_version"] == 1 and state["last_batch_size"] >= 1
    assert stats["model"]["active_version"] == 1

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(WAIT_SECONDS) == 0, daemon.log()
    stopped = json.loads(cli("stats", "--json"))["daemon"]
    assert stopped["running"] is False and stopped["state"] == "stopped", stopped
