"""Moving to PostgreSQL: a daemon files into SQLite, `inboxsort db copy` moves every row to a
fresh PostgreSQL database, and the commands and the daemon carry on there."""

from __future__ import annotations

import json
import re
import shutil

from tests.helpers.daemonkit import READY_SECONDS, Site
from tests.helpers.imagegen import TEXT_BYTES


def test_a_daemon_filed_sqlite_database_copied_to_postgresql_answers_the_same(
    new_site, spawn, run_cli, validation_jpegs, fresh_pg_url
):
    site = new_site()
    for source in validation_jpegs["cats"][70:74] + validation_jpegs["dogs"][70:73]:
        shutil.copyfile(source, site.inbox / source.name)
    shutil.copyfile(validation_jpegs["cats"][70], site.inbox / "again.jpg")  # a duplicate
    (site.inbox / "notes.jpg").write_bytes(TEXT_BYTES)
    once = spawn(site, "--once", log_name="sqlite")
    assert once.wait(READY_SECONDS) == 0, once.log()
    cat = next(r for r in site.rows() if r.label == "cats" and r.status == "filed")
    relabel = run_cli("--config", site.config_path, "label", cat.path, "dogs")
    assert relabel.returncode == 0, relabel.stderr

    copied = run_cli("--config", site.config_path, "db", "copy", "--to", fresh_pg_url)
    assert copied.returncode == 0, copied.stderr
    assert "images: 9 rows" in copied.stdout and "corrections: 1 rows" in copied.stdout
    # The same folders, the database now on the server.
    pg_config = site.root / "pg.toml"
    pg_config.write_text(
        re.sub(r"(?m)^url = .*$", f"url = {json.dumps(fresh_pg_url)}", site.config_path.read_text())
    )
    pg_site = Site(site.root, pg_config)

    def out(config, *args: str) -> str:
        result = run_cli("--config", config, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    for command in (("query", "--format", "json"), ("models", "list", "--json")):
        assert json.loads(out(pg_config, *command)) == json.loads(out(site.config_path, *command))
    stats = json.loads(out(pg_config, "stats", "--json"))
    assert stats["images"]["by_status"] == {"filed": 8, "failed": 1}
    assert stats["corrections"]["total"] == 1

    # New rows on PostgreSQL take the ids after the copied ones.
    shutil.copyfile(validation_jpegs["dogs"][80], pg_site.inbox / "later.jpg")
    later = spawn(pg_site, "--once", log_name="postgresql")
    assert later.wait(READY_SECONDS) == 0, later.log()
    rows = pg_site.rows()
    assert [r.id for r in rows] == list(range(1, 11))
    assert rows[-1].original_name == "later.jpg" and rows[-1].status == "filed"
    # Models on the server: rollback and activate as on SQLite.
    assert out(pg_config, "models", "rollback") == "rolled back: version 0 is active\n"
    assert out(pg_config, "models", "activate", "1") == "version 1 is active\n"

    # A target with rows is refused, and keeps them.
    again = run_cli("--config", site.config_path, "db", "copy", "--to", fresh_pg_url)
    assert again.returncode == 1
    assert "is not empty: " in again.stderr and "images (10 rows)" in again.stderr
    assert "never merges" in again.stderr
    assert len(pg_site.rows()) == 10
