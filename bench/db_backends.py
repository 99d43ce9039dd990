"""SQLite against PostgreSQL: one daemon node's files/second on the same images, and how many
of the daemon's rows per second one PostgreSQL server takes.

Part 1 floods the real daemon (`inboxsort run`, the shipped model) with the same images on each
backend, alternating the order each round: images/s, the daemon's CPU per image and, on
PostgreSQL, the CPU of the server processes serving it. Part 2 runs the daemon's own database
code (intake.ledger.Ledger: duplicate lookup, pending rows, final status; batches of 16) with
1, 2 and 4 writer processes and no model: rows/s, client CPU per row and server CPU per row,
where the database itself would become the bottleneck.

Usage: python bench/db_backends.py --data DIR/validation [--rounds 2] [--rows 4000]
[--writers 1,2,4] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import psycopg  # noqa: E402
from sqlalchemy import make_url  # noqa: E402

from bench.baselines import images_in, stage  # noqa: E402
from bench.benchkit import Daemon, offline_env, write_site  # noqa: E402
from bench.daemon_bench import POLL_SECONDS, flood, say  # noqa: E402

BATCH = 16
APP = "inboxsort"  # the application_name inboxsort's own connections carry


def conninfo(url: str) -> str:
    """libpq connection string of a SQLAlchemy URL."""
    u = make_url(url)
    parts = {"host": u.host, "port": u.port, "user": u.username, "password": u.password}
    parts["dbname"] = u.database
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in parts.items() if v is not None})


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server for one run, dropped afterwards; yields its URL."""
    name = "inboxsort_bench_" + secrets.token_hex(4)
    with psycopg.connect(conninfo(admin_url), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo(admin_url), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (0 when it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerCpu:
    """CPU of the server's backend processes that serve inboxsort in one database (this
    machine's /proc; the server's WAL writer and checkpointer, shared by all, are left out)."""

    def __init__(self, url: str) -> None:
        self.info = conninfo(url)
        self.database = make_url(url).database
        self.start = self._now()

    def _now(self) -> dict[int, float]:
        with psycopg.connect(self.info, autocommit=True, application_name="bench") as conn:
            pids = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                (self.database, APP),
            ).fetchall()
        return {pid: _cpu_seconds(pid) for (pid,) in pids}

    def used(self) -> float:
        """CPU seconds since this object was made (call while the client is still connected)."""
        now = self._now()
        return sum(cpu - self.start.get(pid, 0.0) for pid, cpu in now.items())


class PgDaemon(Daemon):
    """benchkit's Daemon on PostgreSQL: its read-only queries go through psycopg, and times
    come back as the naive UTC text SQLite stores, so daemon_bench's measures apply as they are."""

    def __init__(self, config: Path, env: dict[str, str], url: str) -> None:
        super().__init__(config, env)
        self.info = conninfo(url)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        try:
            with psycopg.connect(self.info, autocommit=True, application_name="bench") as conn:
                rows = conn.execute(sql.replace("?", "%s"), args).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
        return [tuple(_as_sqlite(v) for v in row) for row in rows]


def _as_sqlite(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    return value


def daemon_run(root: Path, files: list[tuple[Path, str]], url: str | None) -> dict[str, Any]:
    """The images dropped at once into a fresh daemon on SQLite (url None) or PostgreSQL."""
    root.mkdir(parents=True)
    database = {"url": url or "sqlite:///inboxsort.db"}
    config = write_site(root, database=database, logging={"level": "WARNING"})
    env = offline_env()
    daemon = PgDaemon(config, env, url) if url else Daemon(config, env)
    try:
        daemon.until(
            lambda: daemon.query("select state from daemon_state") == [("running",)],
            "the daemon to start",
            180,
            interval=POLL_SECONDS,
        )
        staged = stage(files, root / "staging")
        server = ServerCpu(url) if url else None
        result = flood(daemon, staged)
        if server is not None:
            result["server_cpu_ms_per_image"] = 1000 * server.used() / result["n"]
        result.pop("labels")
    finally:
        result_code = daemon.stop()
    result["exit_code"] = result_code
    return result


def _writer(url: str, rows: int, seed: int, out: Any, done: Any) -> None:
    """One writer process: the daemon's ledger writes for `rows` images, in batches of 16."""
    from inboxsort.db import STATUS_FILED, open_database
    from inboxsort.intake.ledger import Entry, Ledger

    db = open_database(url, busy_timeout_ms=1000)
    ledger = Ledger(db)
    now = dt.datetime.now(dt.UTC)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for start in range(0, rows, BATCH):
        entries = [
            Entry(
                source=Path(f"/bench/inbox/{seed}-{i}.jpg"),
                dest=Path(f"/bench/library/cats/{seed}-{i}.jpg"),
                status=STATUS_FILED,
                sha256=f"{seed:08x}{i:056x}",
                size=40_000,
                device=2049,
                inode=seed * 10_000_000 + i,
                received_at=now,
                label="cats",
                score=0.9,
                model_version=0,
            )
            for i in range(start, min(start + BATCH, rows))
        ]
        ledger.filed_duplicates(e.sha256 for e in entries if e.sha256)
        plans = ledger.plan(entries)
        ledger.finish((plan, None) for plan in plans)
    out.put((time.process_time() - cpu0, time.perf_counter() - wall0))
    done.wait(60)  # connected until the parent has read the server's CPU
    db.close()


def rows_run(url: str, writers: int, rows: int) -> dict[str, Any]:
    """`writers` processes each recording rows/writers images: rows/s and CPU per row."""
    from inboxsort.db import open_database

    open_database(url).close()  # the schema, before the writers race for it
    ctx = multiprocessing.get_context("spawn")
    out, done = ctx.Queue(), ctx.Event()
    each = rows // writers
    procs = [ctx.Process(target=_writer, args=(url, each, w, out, done)) for w in range(writers)]
    server = ServerCpu(url) if url.startswith("postgresql") else None
    started = time.perf_counter()
    for p in procs:
        p.start()
    # Server CPU is read while the writers are still connected (they wait for `done`).
    results = [out.get(timeout=600) for _ in procs]
    server_s = server.used() if server is not None else None
    done.set()
    wall = time.perf_counter() - started
    for p in procs:
        p.join(60)
    total = each * writers
    client_s = sum(cpu for cpu, _ in results)
    return {
        "writers": writers,
        "rows": total,
        "rows_per_s": total / max(w for _, w in results),
        "wall_s_with_start": wall,
        "client_cpu_ms_per_row": 1000 * client_s / total,
        "server_cpu_ms_per_row": None if server_s is None else 1000 * server_s / total,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=4000, help="rows per part-2 run")
    parser.add_argument("--writers", default="1,2,4")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "INBOXSORT_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="the server's maintenance database; a fresh database is made for each run",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/db_backends.json")
    return parser.parse_args()


def part_daemon(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Part 1: the same images through one daemon node on each backend, order alternating."""
    files = images_in(args.data)
    runs = []
    for round_no in range(args.rounds):
        order = ["sqlite", "postgresql"] if round_no % 2 == 0 else ["postgresql", "sqlite"]
        for backend in order:
            root = work / f"daemon-{round_no}-{backend}"
            if backend == "sqlite":
                result = daemon_run(root, files, None)
            else:
                with pg_database(args.pg_url) as url:
                    result = daemon_run(root, files, url)
            result |= {"backend": backend, "round": round_no}
            cpu = sum(result["cpu_ms_per_image"].values())
            server = result.get("server_cpu_ms_per_image")
            say(
                f"daemon {backend:10s} round {round_no}: {result['images_per_s']:.1f} images/s, "
                f"{result['n']} images, daemon CPU {cpu:.2f} ms/image"
                + (f", server CPU {server:.2f} ms/image" if server is not None else "")
                + f", p50 {result['latency_p50_ms']:.0f} ms, exit {result['exit_code']}"
            )
            runs.append(result)
    return runs


def part_rows(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Part 2: the daemon's row pattern alone, 1..N writers, on each backend."""
    runs = []
    for writers in (int(w) for w in args.writers.split(",")):
        for backend in ("sqlite", "postgresql"):
            if backend == "sqlite":
                path = work / f"rows-{writers}.db"
                result = rows_run(f"sqlite:///{path}", writers, args.rows)
            else:
                with pg_database(args.pg_url) as url:
                    result = rows_run(url, writers, args.rows)
            result["backend"] = backend
            server = result["server_cpu_ms_per_row"]
            say(
                f"rows   {backend:10s} {writers} writer(s): {result['rows_per_s']:.0f} rows/s, "
                f"client CPU {result['client_cpu_ms_per_row']:.2f} ms/row"
                + (f", server CPU {server:.2f} ms/row" if server is not None else "")
            )
            runs.append(result)
    return runs


def main() -> int:
    args = parse_args()
    say(f"db_backends: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    say(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="inboxsort-dbbench-") as tmp:
        work = Path(tmp)
        daemon_runs = part_daemon(args, work)
        row_runs = part_rows(args, work)
    say(f"load average at end: {os.getloadavg()[0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"daemon": daemon_runs, "rows": row_runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
