"""Backfill through Ray against the daemon end to end, on the same images, in one run.

Usage: python bench/backfill.py --data DIR/validation [--rounds 2] [--out FILE]. Both serve the
shipped model through LiteRT. Rounds alternate daemon, backfill, daemon, backfill..., so that
load from other work falls on both alike. Figures:
- daemon: the images dropped at once into a running daemon, first drop to last row committed
  (bench/daemon_bench.py's flood; the daemon's own start-up is not counted);
- backfill: `backfill()` over the same images copied into an archive, with Ray already
  running, from its call to its last row committed (scan, actor start-up and model loading
  counted), and whole (Ray's start-up counted too);
- Ray's start-up: ray.init on this machine's cores, then the first backfill's actor start-up;
- the writer: rows per second one driver records, on SQLite and, if one is reachable, on
  PostgreSQL (the ceiling of a cluster's rate, whatever its size).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.baselines import images_in  # noqa: E402
from bench.benchkit import write_results, write_site  # noqa: E402
from bench.daemon_bench import e2e, flood_run  # noqa: E402

SHIPPED = (2, 16)  # the daemon as shipped: batch.inference_workers x batch.max_size
POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
WRITER_ROWS = 5000


def say(line: str, out: list[str]) -> None:
    """Print a report line at once and keep it for the results file."""
    print(line, flush=True)
    out.append(line)


def archive_of(files: list[tuple[Path, str]], root: Path, *, count: int = 0) -> Path:
    """The images copied (mtime kept) into root/archive/<class>/, or `count` of them in as
    many copies of the set as that takes (root/archive/copy<N>/<class>/)."""
    archive = root / "archive"
    copies = -(-count // len(files)) if count else 1
    done = 0
    for copy in range(copies):
        for path, label in files:
            if count and done == count:
                return archive
            folder = archive / (f"copy{copy}" if count else "") / label
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, folder / path.name)
            done += 1
    return archive


def backfill_round(
    files: list[tuple[Path, str]], root: Path, ray_seconds: float, *, count: int = 0
) -> dict[str, Any]:
    """One backfill over a fresh archive and database, Ray already running."""
    from inboxsort.backfill.run import Options, backfill
    from inboxsort.config import load_config

    root.mkdir(parents=True)
    archive = archive_of(files, root, count=count)
    config = load_config(write_site(root, logging={"level": "WARNING"}))
    out = io.StringIO()
    start = time.time()
    code = backfill(config, Options(roots=[archive]), out=out, tty=False)
    url = config.database.url
    n = _query(url, "SELECT count(*) FROM images WHERE status = 'classified'")[0][0]
    times = sorted(_moments(url))
    seconds = times[-1] - start
    # Steady: from the first batch committed (the actors up, the model loaded) to the last.
    first = [s for s in times if s <= times[0] + 0.05]
    return {
        "code": code,
        "n": n,
        "images_per_s": n / seconds,
        "steady_images_per_s": (n - len(first)) / (times[-1] - times[0]),
        "first_batch_s": times[0] - start,
        "with_ray_start_images_per_s": n / (seconds + ray_seconds),
        "actors": len(_nodes(url)),
        "labels": _labels(url),
        "summary": next(x for x in out.getvalue().splitlines() if x.startswith("backfill done")),
    }


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    with sqlite3.connect(url.removeprefix("sqlite:///")) as con:
        return con.execute(sql).fetchall()


def _moments(url: str) -> list[float]:
    """When each row was recorded (classified_at: the writer's commit of its batch)."""
    from datetime import UTC, datetime

    rows = _query(url, "SELECT classified_at FROM images WHERE classified_at IS NOT NULL")
    return [datetime.fromisoformat(r[0]).replace(tzinfo=UTC).timestamp() for r in rows]


def _nodes(url: str) -> set[str]:
    return {r[0] for r in _query(url, "SELECT DISTINCT node FROM images")}


def _labels(url: str) -> dict[str, str]:
    return {r[0]: r[1] for r in _query(url, "SELECT original_name, label FROM images")}


def ray_start_seconds() -> float:
    """ray.init on this machine's cores, as `backfill` starts it."""
    from inboxsort.backfill.pipeline import start_ray

    start = time.perf_counter()
    start_ray(None)
    return time.perf_counter() - start


def writer_rate(url: str) -> float:
    """Rows per second the one writer records, in batches of 32 as results come back."""
    from inboxsort.backfill.writer import Result, Writer
    from inboxsort.db import open_database

    db = open_database(url)
    writer = Writer(db)
    results = [
        Result(
            f"/archive/{i:07d}.jpg",
            30000 + i,
            1_700_000_000_000_000_000 + i,
            1,
            i,
            f"{i:064x}",
            "cats",
            0.9,
            None,
            "bench:1",
            0,
        )
        for i in range(WRITER_ROWS)
    ]
    start = time.perf_counter()
    for i in range(0, len(results), 32):
        writer.write(results[i : i + 32])
    seconds = time.perf_counter() - start
    db.close()
    return WRITER_ROWS / seconds


def postgres_writer_rate() -> float | None:
    """writer_rate on a scratch database of the local PostgreSQL server, if there is one."""
    try:
        import psycopg
    except ImportError:
        return None
    name = f"inboxsort_bench_{os.getpid()}"
    try:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
    except psycopg.Error:
        return None
    try:
        return writer_rate(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def measure(args: argparse.Namespace, work: Path, out: list[str]) -> dict[str, Any]:
    """Every figure, in the order the report prints them."""
    import ray

    files = images_in(args.data)
    ray_seconds = ray_start_seconds()
    say(f"ray start    ray.init on {os.cpu_count()} cores: {ray_seconds:.1f} s", out)
    daemon, back = [], []
    try:
        for i in range(args.rounds):
            run = e2e(work / f"daemon-{i}", files, SHIPPED, idle=0, runtime="litert")
            daemon.append(run)
            say(
                f"daemon       round {i + 1}: {run['images_per_s']:6.1f} images/s "
                f"({run['n']} images, litert, {SHIPPED[0]} x {SHIPPED[1]})",
                out,
            )
            run = backfill_round(files, work / f"backfill-{i}", ray_seconds)
            back.append(run)
            say(
                f"backfill     round {i + 1}: {run['images_per_s']:6.1f} images/s ({run['n']} "
                f"images, {run['actors']} actors; first batch after {run['first_batch_s']:.1f} "
                f"s, then {run['steady_images_per_s']:.1f} images/s; with Ray's start-up "
                f"{run['with_ray_start_images_per_s']:.1f})",
                out,
            )
    finally:
        ray.shutdown()
    same = sum(back[0]["labels"].get(name) == label for name, label in daemon[0]["labels"].items())
    d = statistics.median(r["images_per_s"] for r in daemon)
    b = statistics.median(r["images_per_s"] for r in back)
    ratios = [bk["images_per_s"] / dm["images_per_s"] for dm, bk in zip(daemon, back, strict=True)]
    steady = statistics.median(r["steady_images_per_s"] for r in back)
    say(f"labels       {same}/{len(daemon[0]['labels'])} equal between daemon and backfill", out)
    say(
        f"ratio        backfill / daemon end to end: median {b:.1f} / {d:.1f} = {b / d:.2f} "
        f"(goal >= 0.7); per round {', '.join(f'{r:.2f}' for r in ratios)}; once the actors "
        f"are up {steady:.1f} / {d:.1f} = {steady / d:.2f}",
        out,
    )
    large: dict[str, Any] = {}
    if args.large:
        large = large_round(args, files, work, out)
    sqlite_rate = writer_rate(f"sqlite:///{work / 'writer.db'}")
    pg_rate = postgres_writer_rate()
    pg_text = f"{pg_rate:.0f} rows/s" if pg_rate else "not reachable"
    say(
        f"writer       SQLite {sqlite_rate:.0f} rows/s; PostgreSQL {pg_text} "
        f"({WRITER_ROWS} rows in batches of 32)",
        out,
    )
    return {
        "ray_start_s": ray_seconds,
        "daemon": [{k: v for k, v in r.items() if k != "labels"} for r in daemon],
        "backfill": [{k: v for k, v in r.items() if k != "labels"} for r in back],
        "labels_equal": same,
        "ratio_median": b / d,
        "large": large,
        "writer_rows_per_s": {"sqlite": sqlite_rate, "postgresql": pg_rate},
    }


def large_round(
    args: argparse.Namespace, files: list[tuple[Path, str]], work: Path, out: list[str]
) -> dict[str, Any]:
    """`--large N` images (copies of the set): the daemon's flood, then the backfill command as
    a user runs it, Ray's start-up included."""
    import ray

    daemon = flood_run(work / "daemon-large", files, args.large, SHIPPED, runtime="litert")
    ray_seconds = ray_start_seconds()
    try:
        back = backfill_round(files, work / "backfill-large", ray_seconds, count=args.large)
    finally:
        ray.shutdown()
    whole = back["with_ray_start_images_per_s"]
    say(
        f"large        {args.large} images: daemon {daemon['images_per_s']:.1f} images/s; "
        f"backfill {whole:.1f} images/s with Ray's start-up ({ray_seconds:.1f} s) and the "
        f"actors' ({back['first_batch_s']:.1f} s), then {back['steady_images_per_s']:.1f}; "
        f"ratio {whole / daemon['images_per_s']:.2f} (goal >= 0.7)",
        out,
    )
    return {
        "n": args.large,
        "daemon": {k: v for k, v in daemon.items() if k != "labels"},
        "backfill": {k: v for k, v in back.items() if k != "labels"},
        "ratio": whole / daemon["images_per_s"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="validation/ with class folders")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--large", type=int, default=0, help="then one round at this many images (copies)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "backfill.txt")
    args = parser.parse_args()
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="inboxsort-bench-backfill-") as tmp:
        figures = measure(args, Path(tmp), out)
    write_results(args.out, out, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
