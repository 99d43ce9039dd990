"""Fleet benchmark: one node against two nodes sharing one inbox, on one PostgreSQL database.

Each setup gets a fresh database on the local server and a fresh shared inbox and library; the
same images are renamed into the inbox at once, and the time runs from the drop to the last
row filed. CPU per image is the daemons' CPU time (utime + stime of their processes) and the
PostgreSQL server's (the backend processes serving this run's database, from pg_stat_activity)
over the flood, divided by the images. Both setups run in
one invocation, so the ratio holds where absolute speed varies.

Usage: python bench/fleet_bench.py --data DIR/validation [--images 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.baselines import images_in  # noqa: E402
from bench.benchkit import Daemon, offline_env, toml_text  # noqa: E402

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
ADMIN = "host=127.0.0.1 user=postgres dbname=postgres"
POLL_SECONDS = 0.25


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (fields 14 and 15 of /proc/PID/stat), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pids(url: str, name: str) -> list[int]:
    """The server processes serving database `name` now (pg_stat_activity)."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select pid from pg_stat_activity where datname = %s", (name,))
        return [int(row[0]) for row in rows]


def backends_cpu(url: str, name: str) -> dict[int, float]:
    """CPU seconds so far of each server process serving database `name` (this run's only)."""
    return {pid: cpu_seconds(pid) for pid in backend_pids(url, name)}


def create_database() -> str:
    import psycopg

    name = f"inboxsort_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scalar(url: str, sql: str) -> Any:
    """One value of a query on a connection of this process (None before the table exists)."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute(sql).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return None if row is None else row[0]


def filed(url: str) -> int:
    """Rows no longer pending."""
    return int(scalar(url, "select count(*) from images where status != 'pending'") or 0)


def node_site(root: Path, shared: Path, node: str, url: str) -> Path:
    """The config of one node: shared folders, its own models folder, the shared database."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {n: str(shared / n) for n in ("inbox", "library", "failed", "duplicates")}
    settings = {
        "paths": {**paths, "models": str(root / "models")},
        "database": {"url": url},
        "node": {"name": node},
        "watch": {"rescan_seconds": 0},
        "retrain": {"enabled": False},
        "logging": {"level": "WARNING"},
    }
    for folder in paths.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    config = root / "config.toml"
    config.write_text(toml_text(settings))
    return config


def run_setup(nodes: int, images: list[Path], work: Path) -> dict[str, Any]:
    """Start `nodes` daemons on a fresh database and shared inbox, flood it, measure."""
    name = create_database()
    url = f"{SERVER}/{name}"
    shared = work / f"{nodes}-nodes"
    daemons: list[Daemon] = []
    try:
        for n in range(nodes):
            config = node_site(shared / f"node-{n}", shared, f"node-{n}", url)
            daemons.append(Daemon(config, offline_env()))
        for n, daemon in enumerate(daemons):
            query = f"select state from daemon_state where node = 'node-{n}'"
            daemon.until(lambda q=query: scalar(url, q) == "running", "a start", 180, 0.5)
        staging = shared / "staging"
        staging.mkdir()
        staged = [shutil.copyfile(p, staging / f"{i:05d}-{p.name}") for i, p in enumerate(images)]
        before_cpu = [cpu_seconds(d.proc.pid) for d in daemons]
        before_pg = backends_cpu(url, name)
        start = time.monotonic()
        for path in staged:
            path.rename(shared / "inbox" / path.name)
        daemons[0].until(
            lambda: filed(url) >= len(images), "the flood to be filed", 1800, POLL_SECONDS
        )
        wall = time.monotonic() - start
        daemon_cpu = sum(
            cpu_seconds(d.proc.pid) - b for d, b in zip(daemons, before_cpu, strict=True)
        )
        after_pg = backends_cpu(url, name)
        # A backend that started during the flood counts from zero.
        pg_cpu = sum(cpu - before_pg.get(pid, 0.0) for pid, cpu in after_pg.items())
        library = sum(1 for p in (shared / "library").rglob("*") if p.is_file())
    finally:
        for daemon in daemons:
            daemon.stop()
        drop_database(name)
    count = len(images)
    return {
        "nodes": nodes,
        "images": count,
        "in_library": library,
        "seconds": round(wall, 2),
        "files_per_second": round(count / wall, 1),
        "daemon_cpu_ms_per_image": round(1000 * daemon_cpu / count, 1),
        "postgres_cpu_ms_per_image": round(1000 * pg_cpu / count, 2),
        "postgres_share": round(pg_cpu / (pg_cpu + daemon_cpu), 3) if daemon_cpu else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="class folders of JPEGs")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    images = [path for path, _label in images_in(args.data)][: args.images]
    print(f"# fleet benchmark {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    print(f"# {len(images)} images from {args.data}, shipped model, one PostgreSQL server")
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        results = [run_setup(n, images, Path(tmp)) for n in (1, 2)]
    for r in results:
        print(
            f"{r['nodes']} node(s): {r['files_per_second']} files/s ({r['seconds']} s, "
            f"{r['in_library']} in the library); CPU per image: daemons "
            f"{r['daemon_cpu_ms_per_image']} ms, PostgreSQL {r['postgres_cpu_ms_per_image']} ms "
            f"({100 * (r['postgres_share'] or 0):.1f}% of the total)"
        )
    one, two = results
    print(f"two nodes / one node: {two['files_per_second'] / one['files_per_second']:.2f}x files/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
