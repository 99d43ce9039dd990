"""Daemon benchmark: end-to-end throughput and latency against model-only and a naive loop.

All figures come from one run on one machine, so the ratios hold even where absolute speed
varies. Usage: python bench/daemon_bench.py --data DIR/validation [--setups 1x32,2x16]
[--flood 5000] [--naive 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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
from bench.baselines import (  # noqa: E402
    decode_all,
    images_in,
    model_only,
    model_only_split,
    naive,
    stage,
)
from bench.benchkit import Daemon, offline_env, write_site  # noqa: E402

Setup = tuple[int, int]  # (batch.inference_workers, batch.max_size)

# Coarse on purpose: every time comes from the rows, and polling steals CPU from the daemon on
# a 2-core machine.
POLL_SECONDS = 0.25


def start_daemon(root: Path, *, max_size: int, workers: int, runtime: str) -> Daemon:
    """`inboxsort run` on a site under root with the shipped model (the one users get)."""
    config = write_site(
        root,
        batch={"max_size": max_size, "inference_workers": workers},
        serving={"runtime": runtime},
        logging={"level": "WARNING"},
    )
    daemon = Daemon(config, offline_env())
    daemon.until(
        lambda: daemon.query("select state from daemon_state") == [("running",)],
        "the daemon to start",
        120,
        interval=POLL_SECONDS,
    )
    return daemon


def filed(daemon: Daemon) -> int:
    """Rows no longer pending."""
    rows = daemon.query("select count(*) from images where status != 'pending'")
    return rows[0][0] if rows else 0


def peak_rss_mb(daemon: Daemon) -> float:
    """The child's peak resident memory (VmHWM) so far."""
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(stat_file: Path) -> float:
    """utime + stime of a /proc stat file, in seconds (fields 14 and 15, after "(comm)")."""
    fields = stat_file.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(daemon: Daemon) -> dict[str, float]:
    """CPU seconds the child used so far: TensorFlow's own threads, and the rest."""
    # The process total counts threads that have ended too; the live ones give the split.
    total = _cpu_seconds(Path(f"/proc/{daemon.proc.pid}/stat"))
    tensorflow = 0.0
    for task in Path(f"/proc/{daemon.proc.pid}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("tf_"):
                tensorflow += _cpu_seconds(task / "stat")
        except OSError:
            continue  # a thread that ended meanwhile
    return {"tensorflow": tensorflow, "python": total - tensorflow}


def cpu_text(cpu: dict[str, float]) -> str:
    """CPU per image as the report shows it: the total, and the split when it means something."""
    total = cpu["tensorflow"] + cpu["python"]
    if cpu["tensorflow"] == 0:
        return f"{total:.1f} ms (no TensorFlow in the daemon)"
    if cpu["tensorflow"] < 0.2 * total:
        # With TensorFlow's default threads the kernels run on pool threads it leaves unnamed
        # (they inherit "python"), so the names cannot tell its work from the daemon's.
        return f"{total:.1f} ms (no split: TensorFlow's pool threads are unnamed in this setup)"
    return (
        f"{total:.1f} ms: {cpu['tensorflow']:.1f} ms in TensorFlow's threads, "
        f"{cpu['python']:.1f} ms in the daemon's own (decode, batching, filing, SQLite)"
    )


def parse_time(text: str) -> float:
    """A UTC timestamp stored by the daemon → seconds since the epoch."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def idle_latency(daemon: Daemon, files: list[tuple[Path, str]], staging: Path) -> list[float]:
    """Copy one image at a time into an idle daemon: seconds from the copy to its row filed.

    A copy (cp, a file manager) ends with a close-after-write event, so it needs no settle
    wait; a file renamed in from elsewhere on the disk shows up as created only, and waits
    watch.settle_seconds.
    """
    latencies = []
    for path in stage(files, staging, prefix="idle-"):
        dropped = time.time()
        shutil.copyfile(path, daemon.root / "inbox" / path.name)
        name = path.name
        daemon.until(
            lambda n=name: daemon.query(
                "select 1 from images where original_name = ? and status = 'filed'", n
            ),
            f"{name} filed",
            60,
            interval=POLL_SECONDS,
        )
        filed_at = daemon.query("select filed_at from images where original_name = ?", name)[0][0]
        latencies.append(parse_time(filed_at) - dropped)
        time.sleep(0.5)
    return latencies


def flood(daemon: Daemon, staged: list[Path]) -> dict[str, Any]:
    """Drop every staged file at once; measure until the last row is committed."""
    before = filed(daemon)
    inbox = daemon.root / "inbox"
    cpu = thread_cpu(daemon)
    t0 = time.time()
    for path in staged:
        path.rename(inbox / path.name)
    drop_seconds = time.time() - t0
    daemon.until(
        lambda: filed(daemon) - before >= len(staged),
        f"{len(staged)} images filed",
        1800,
        interval=POLL_SECONDS,
    )
    cpu = {k: v - cpu[k] for k, v in thread_cpu(daemon).items()}
    rows = daemon.query(
        "select original_name, label, received_at, filed_at from images "
        "where status != 'pending' order by id"
    )[before:]
    last = max(parse_time(r[3]) for r in rows)
    waits = sorted(parse_time(r[3]) - parse_time(r[2]) for r in rows)
    return {
        "n": len(rows),
        "drop_seconds": drop_seconds,
        "images_per_s": len(rows) / (last - t0),
        "latency_p50_ms": 1000 * waits[len(waits) // 2],
        "latency_p95_ms": 1000 * waits[int(len(waits) * 0.95)],
        "cpu_ms_per_image": {k: 1000 * v / len(rows) for k, v in cpu.items()},
        "labels": {r[0]: r[1] for r in rows},
    }


def say(line: str) -> None:
    """Print a report line at once (the run is long; progress matters)."""
    print(line, flush=True)


def e2e(
    root: Path, files: list[tuple[Path, str]], setup: Setup, *, idle: int, runtime: str
) -> dict[str, Any]:
    """The images dropped at once into a daemon with `setup`; then `idle` single drops."""
    workers, max_size = setup
    root.mkdir(parents=True)
    daemon = start_daemon(root, max_size=max_size, workers=workers, runtime=runtime)
    try:
        staged = stage(files, root / "staging")
        result = flood(daemon, staged)
        if idle:
            idle_files = files[:: max(1, len(files) // idle)][:idle]
            result["idle"] = idle_latency(daemon, idle_files, root / "idle-staging")
        result["rss"] = peak_rss_mb(daemon)
    finally:
        daemon.stop()
    return result


def flood_run(
    root: Path, files: list[tuple[Path, str]], count: int, setup: Setup, *, runtime: str
) -> dict[str, Any]:
    """`count` images (copies of `files`) dropped at once: rate, peak RSS, exit code."""
    root.mkdir(parents=True)
    staged = stage(files, root / "staging", copies=-(-count // len(files)))[:count]
    daemon = start_daemon(root, max_size=setup[1], workers=setup[0], runtime=runtime)
    big: dict[str, Any] = {}
    try:
        big = flood(daemon, staged)
        big["rss"] = peak_rss_mb(daemon)
    finally:
        big["code"] = daemon.stop()
    return big


def parse_setups(text: str) -> list[Setup]:
    """ "1x32,2x16" → [(1, 32), (2, 16)]: inference workers x largest batch."""
    setups = []
    for part in text.split(","):
        workers, size = part.strip().split("x")
        setups.append((int(workers), int(size)))
    return setups


def label(setup: Setup) -> str:
    """A setup as the report names it."""
    workers, size = setup
    return f"{workers} worker{'s' if workers > 1 else ''} x batch {size}"


def paired_ratios(
    data: Path,
    files: list[tuple[Path, str]],
    setup: Setup,
    work: Path,
    *,
    count: int,
    runtime: str,
) -> list[dict[str, float]]:
    """Model-only, then end to end, back to back `count` times; each pair's ratio.

    This machine's speed drifts by 10-20 % over minutes; a pair taken back to back shares the
    drift, so the spread of the pairs' ratios shows how far one ratio can be trusted.
    """
    workers, size = setup
    pairs = []
    for i in range(count):
        alone = model_only_split(data, size, workers, runtime=runtime)["images_per_s"]
        run = e2e(work / f"pair-{i}", files, setup, idle=0, runtime=runtime)["images_per_s"]
        pairs.append({"model_only": alone, "e2e": run, "ratio": run / alone})
        say(
            f"pair {i + 1}       model-only {alone:6.1f}, end-to-end {run:6.1f} images/s: "
            f"ratio {run / alone:.2f} (both {label(setup)})"
        )
    if pairs:
        ratios = sorted(p["ratio"] for p in pairs)
        say(
            f"pairs        median ratio {statistics.median(ratios):.2f} "
            f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}, {len(pairs)} pairs; to model-only in the "
            f"same setup, not to the fastest; goal >= 0.8)"
        )
    return pairs


def main() -> int:
    """Run every measurement and print a report (and JSON with --json)."""
    from inboxsort.config import BatchConfig

    shipped: Setup = (BatchConfig().inference_workers, BatchConfig().max_size)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument(
        "--setups",
        type=parse_setups,
        default=[(1, 32), (2, 8), (2, 32)],
        help="daemon setups WORKERSxBATCH to compare with the shipped one (default 1x32,2x8,2x32)",
    )
    parser.add_argument("--naive", type=int, default=100, help="images for the naive loop")
    parser.add_argument("--flood", type=int, default=5000, help="images for the memory flood")
    parser.add_argument("--idle", type=int, default=10, help="single drops into an idle daemon")
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="model-only then end-to-end, back to back, this many times (the shipped setup)",
    )
    parser.add_argument(
        "--runtime",
        choices=("litert", "keras"),
        default="litert",
        help="serving.runtime of the daemon and of model-only (default litert, as shipped)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    files = images_in(args.data)
    work = Path(tempfile.mkdtemp(prefix="inboxsort-bench-"))
    say(f"{len(files)} images from {args.data}; work folder {work}")
    setups = sorted({shipped, *args.setups})

    # Model-only in every setup the daemon runs, and one batch at a time on TensorFlow's own
    # threads. The ratios are taken against the fastest of them all, so neither a smaller
    # batch nor a split of the cores can flatter them by slowing the reference down.
    refs: dict[Setup, dict[str, Any]] = {}
    arrays = decode_all(files, runtime=args.runtime)
    for setup in sorted({(1, size) for _, size in setups} | set(setups)):
        workers, size = setup
        if workers == 1:
            refs[setup] = model_only(files, arrays, size)
        else:
            refs[setup] = model_only_split(args.data, size, workers, runtime=args.runtime)
        how = (
            "one batch at a time, TensorFlow's default threads"
            if args.runtime == "keras"
            else "one batch at a time, one interpreter on every core"
        )
        if workers > 1:
            how = f"{workers} batches side by side, the cores split between them"
        say(
            f"model-only   {refs[setup]['images_per_s']:7.1f} images/s  ({args.runtime} "
            f"predict_on_batch, batch {size}, {refs[setup]['image_size']} px, decoded arrays; "
            f"{how})"
        )
    del arrays  # 150 MB that the rest of the run does not need
    best = max(r["images_per_s"] for r in refs.values())
    ref = refs[(1, shipped[1])]
    # The same cores decode and infer: a daemon cannot beat model-only time plus decode CPU
    # time spread over every core.
    per_image = 1 / best + ref["decode_cpu_ms"] / 1000 / (os.cpu_count() or 1)
    ceiling = 1 / per_image
    say(
        f"decode       {ref['decode_cpu_ms']:7.1f} ms CPU per image (the shared loader); "
        f"the fastest model-only + decode on {os.cpu_count()} cores: at most {ceiling:.1f} "
        f"images/s ({ceiling / best:.2f} of it)"
    )
    step = max(1, len(files) // args.naive)
    slow = naive(files[::step][: args.naive], work)
    say(
        f"naive loop   {slow['images_per_s']:7.1f} images/s  (load, model.predict on one "
        f"image, move; {slow['n']} images)"
    )
    # The 10x goal has a ceiling no daemon code can lift: the model alone, with nothing
    # decoded, read or filed, is only so many times the naive loop.
    say(
        f"naive ceiling  the fastest model-only is {best / slow['images_per_s']:.1f}x the naive "
        f"loop, model-only + decode {ceiling / slow['images_per_s']:.1f}x (goal for end to "
        f"end >= 10x)"
    )

    truth = {p.name: lab for p, lab in files}
    runs: dict[Setup, dict[str, Any]] = {}
    for setup in setups:
        folder = work / f"e2e-{setup[0]}x{setup[1]}"
        idle = args.idle if setup == shipped else 0
        result = e2e(folder, files, setup, idle=idle, runtime=args.runtime)
        runs[setup] = result
        agree = sum(result["labels"].get(name) == lab for name, lab in ref["labels"].items())
        filed_acc = sum(result["labels"].get(n) == lab for n, lab in truth.items()) / len(files)
        result["agree"], result["filing_accuracy"] = agree, filed_acc
        rate = result["images_per_s"]
        say(
            f"end-to-end   {rate:7.1f} images/s  ({result['n']} images, first drop to last row "
            f"committed; {label(setup)}{', as shipped' if setup == shipped else ''})"
        )
        say(
            f"  ratio to the fastest model-only {rate / best:.2f} (goal >= 0.8), "
            f"to naive {rate / slow['images_per_s']:.1f}x (goal >= 10)"
        )
        say(
            f"  latency file ready -> filed: p50 {result['latency_p50_ms']:.0f} ms, "
            f"p95 {result['latency_p95_ms']:.0f} ms (all dropped at once)"
        )
        say(f"  CPU per image: {cpu_text(result['cpu_ms_per_image'])}")
        say(
            f"  filing accuracy {filed_acc:.4f}, model-only accuracy {ref['accuracy']:.4f}; "
            f"same label for {agree}/{len(files)} images; peak RSS {result['rss']:.0f} MB"
        )
    idle_ms = sorted(1000 * s for s in runs[shipped]["idle"])
    say(
        f"idle drop    p50 {statistics.median(idle_ms):.0f} ms, max {idle_ms[-1]:.0f} ms over "
        f"{len(idle_ms)} single images (goal p50 <= 250 ms; {label(shipped)})"
    )

    pairs = paired_ratios(args.data, files, shipped, work, count=args.pairs, runtime=args.runtime)

    big: dict[str, Any] = {}
    if args.flood:
        big = flood_run(work / "flood", files, args.flood, shipped, runtime=args.runtime)
        say(
            f"flood        {big['n']} images at once: {big['images_per_s']:.1f} images/s, "
            f"peak RSS {big['rss']:.0f} MB (goal <= 1536 MB; {label(shipped)}); exit code "
            f"after SIGTERM {big['code']}"
        )
    if args.json:
        figures = {
            "model_only": {label(k): v["images_per_s"] for k, v in refs.items()},
            "decode_cpu_ms": ref["decode_cpu_ms"],
            "ceiling_images_per_s": ceiling,
            "naive_images_per_s": slow["images_per_s"],
            "pairs": pairs,
            "model_accuracy": ref["accuracy"],
            "idle_latency_ms": idle_ms,
            "flood": {k: v for k, v in big.items() if k != "labels"},
            "e2e": {
                label(setup): {k: v for k, v in run.items() if k not in ("labels", "idle")}
                | {
                    "over_model_only": run["images_per_s"] / best,
                    "over_naive": run["images_per_s"] / slow["images_per_s"],
                }
                for setup, run in runs.items()
            },
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
