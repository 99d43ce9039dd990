"""Review page benchmark: 10,000 filed images, a real `inboxsort web` process, timed over HTTP.

Builds a library of 10,000 JPEG files (real photos from DIR, resized, written under numbered
names) with their rows in a fresh SQLite database, starts `python -m inboxsort web` on it and
times, in one run: the first page of the review grid (cold, then warm), other orders and
pages, its JSON twin, and the first page's thumbnails made (cold) and from the cache (warm).
Goal (issue 18): the first page under 300 ms.

Usage: python bench/web_review.py --data DIR/validation [--images 10000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image as Pillow

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from inboxsort.db import STATUS_FILED, Image, open_database  # noqa: E402

PAGE = 60


def photos(data: Path, count: int) -> list[bytes]:
    """`count` photos from DIR's class folders, resized to 320 px as JPEG bytes."""
    out = []
    for path in sorted(data.rglob("*.jpg"))[:count]:
        image = Pillow.open(path).convert("RGB")
        image.thumbnail((320, 320))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def build(root: Path, data: Path, count: int) -> Path:
    """Config, library files and rows for `count` filed images; returns the config path."""
    library = root / "library"
    for label in ("cats", "dogs", "_review"):
        (library / label).mkdir(parents=True)
    (root / "config.toml").write_text(
        '[paths]\ninbox = "inbox"\nlibrary = "library"\nfailed = "failed"\n'
        'models = "models"\nduplicates = "duplicates"\n'
        '[database]\nurl = "sqlite:///inboxsort.db"\n'
        f"[web]\nport = {free_port()}\npage_size = {PAGE}\n"
    )
    samples = photos(data, 200)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    db = open_database(f"sqlite:///{root / 'inboxsort.db'}")
    rows = []
    for n in range(count):
        label = ("cats", "dogs")[n % 2]
        folder = "_review" if n % 50 == 0 else label
        path = library / folder / f"img{n:05d}.jpg"
        path.write_bytes(samples[n % len(samples)])
        st = path.stat()
        when = start + dt.timedelta(seconds=n * 250)
        score = 0.5 + (n * 7919 % 5000) / 10000
        rows.append(
            Image(
                sha256=f"{n:064x}",
                original_name=path.name,
                source_path=f"/inbox/{path.name}",
                path=str(path),
                label=label,
                score=score,
                model_version=n // 4000,
                status=STATUS_FILED,
                size=st.st_size,
                device=st.st_dev,
                inode=st.st_ino,
                received_at=when,
                classified_at=when,
                filed_at=when,
            )
        )
    with db.begin() as session:
        session.add_all(rows)
    db.close()
    return root / "config.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> tuple[float, bytes]:
    """Seconds for one GET (connect to last byte) and the body."""
    begin = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
        assert response.status == 200, (url, response.status)
    return time.perf_counter() - begin, body


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/static/style.css", timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def timed(url: str, rounds: int) -> dict[str, float]:
    times = sorted(fetch(url)[0] * 1000 for _ in range(rounds))
    return {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "max_ms": round(times[-1], 1),
    }


def measure(base: str, rounds: int) -> dict[str, object]:
    """Every figure, in one run against one server."""
    cold, html = fetch(f"{base}/review")
    ids = [int(part.split('"')[0]) for part in html.decode().split('data-id="')[1:]]
    assert len(ids) == PAGE, f"the first page shows {len(ids)} tiles"
    out: dict[str, object] = {"first_page_cold_ms": round(cold * 1000, 1)}
    pages = {
        "first_page": "/review",
        "least_sure_first": "/review?uncertain=1",
        "label_filter": "/review?label=dogs&min_score=0.9",
        "review_folder": "/review?review=1",
        "last_page": f"/review?page={-(-10000 // PAGE)}",
        "json_first_page": "/api/images",
    }
    for name, path in pages.items():
        out[name] = timed(base + path, rounds)
    begin = time.perf_counter()
    for image_id in ids:
        fetch(f"{base}/thumb/{image_id}")
    out["first_page_thumbnails_cold_ms"] = round((time.perf_counter() - begin) * 1000, 1)
    begin = time.perf_counter()
    for image_id in ids:
        fetch(f"{base}/thumb/{image_id}")
    out["first_page_thumbnails_cached_ms"] = round((time.perf_counter() - begin) * 1000, 1)
    return out


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) so far, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "web.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inboxsort-web-bench-") as tmp:
        begin = time.perf_counter()
        config = build(Path(tmp), args.data, args.images)
        built = time.perf_counter() - begin
        port = int(config.read_text().split("port = ")[1].split("\n")[0])
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        command = [sys.executable, "-m", "inboxsort", "--config", str(config), "web"]
        server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_up(base)
            figures = measure(base, args.rounds)
            figures["server_peak_rss_mb"] = peak_rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    figures = {"images": args.images, "page_size": PAGE, "build_s": round(built, 1), **figures}
    first = figures["first_page"]
    assert isinstance(first, dict)
    figures["goal_first_page_under_300_ms"] = "met" if first["p95_ms"] < 300 else "missed"
    print(json.dumps(figures, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
