"""Two trees of inboxsort, the daemon end to end, back to back on one machine.

`python bench/compare.py --base REV --data DIR`: checks REV out in a temporary git worktree,
then runs each tree's own bench/daemon_bench.py in the shipped setup (model-only, end to end,
nothing else), alternating ABBA so that a machine drifting in speed favours neither. Prints each
run and the ratio of the medians, current tree over REV. A refactoring that claims to change no
behaviour should land near 1.00.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = "2 workers x batch 16"
# The daemon bench in the shipped setup only: no other setups, pairs, flood or long naive loop.
QUICK = ["--setups", "2x16", "--pairs", "0", "--flood", "0", "--naive", "20", "--idle", "1"]


def run_bench(tree: Path, data: Path, out: Path, *, runtime: str) -> dict[str, float]:
    """One daemon_bench run of `tree` on its own code; end-to-end and model-only figures."""
    script = tree / "bench" / "daemon_bench.py"
    command = [sys.executable, str(script), "--data", str(data), *QUICK, "--json", str(out)]
    if "--runtime" in script.read_text():
        # Like with like: trees from before LiteRT could only serve with Keras.
        command += ["--runtime", runtime]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    figures = json.loads(out.read_text())
    e2e = figures["e2e"][SHIPPED]
    return {
        "e2e": e2e["images_per_s"],
        "model_only": figures["model_only"][SHIPPED],
        "cpu_ms": sum(e2e["cpu_ms_per_image"].values()),
    }


def main() -> int:
    """Run both trees alternately and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (2 runs of each)")
    parser.add_argument(
        "--runtime",
        choices=("keras", "litert"),
        default="keras",
        help="serving runtime where a tree's bench offers the choice (default keras)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="inboxsort-compare-"))
    base = work / "base"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base],
        check=True,
        capture_output=True,
    )
    trees = {"base": base, "current": REPO}
    runs: dict[str, list[dict[str, float]]] = {"base": [], "current": []}
    try:
        for n in range(args.rounds):
            for name in ("base", "current", "current", "base"):
                out = work / f"{name}-{n}.json"
                figures = run_bench(trees[name], args.data, out, runtime=args.runtime)
                runs[name].append(figures)
                print(
                    f"{name:<8} end-to-end {figures['e2e']:6.1f} images/s, model-only "
                    f"{figures['model_only']:6.1f}, CPU {figures['cpu_ms']:5.1f} ms per image",
                    flush=True,
                )
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False
        )
    for key, what in (("e2e", "end to end"), ("model_only", "model only"), ("cpu_ms", "CPU")):
        before = statistics.median(r[key] for r in runs["base"])
        after = statistics.median(r[key] for r in runs["current"])
        print(
            f"median {what:<10} base {before:6.1f}  current {after:6.1f}  "
            f"current / base {after / before:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
