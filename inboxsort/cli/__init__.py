"""The `inboxsort` command line: parse arguments, load config once, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from inboxsort import __version__
from inboxsort.config import Config, find_config, load_config
from inboxsort.errors import InboxsortError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
log = logging.getLogger("inboxsort")


def setup_logging(config: Config, *, verbose: bool = False) -> None:
    """Log lines to stderr; journald adds its own timestamps, so systemd runs can drop ours."""
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    stamp = "%(asctime)s " if config.logging.timestamps and not under_journald else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{stamp}%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("DEBUG" if verbose else config.logging.level)
    for noisy in ("tensorflow", "absl", "h5py", "PIL", "apscheduler.executors", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _quiet_tensorflow() -> None:
    # Must be set before TensorFlow is imported; users can still override it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command."""
    from inboxsort.cli import backfill, doctor, labels, learn, models, ops, query, stats, web

    parser = argparse.ArgumentParser(
        prog="inboxsort", description="Sort images dropped into an inbox folder by class."
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="config file (default: $INBOXSORT_CONFIG, then ./config.toml, then built-in defaults)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"inboxsort {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--once", action="store_true", help="process the inbox now, then exit")
    run.set_defaults(handler=ops.cmd_run)

    models.add_commands(sub)
    learn.add_commands(sub)
    ops.add_commands(sub)
    labels.add_commands(sub)
    query.add_commands(sub)
    stats.add_commands(sub)
    doctor.add_commands(sub)
    web.add_commands(sub)
    backfill.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 failure, 2 config/usage error)."""
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(find_config(args.config))
        setup_logging(config, verbose=args.verbose)
        return int(args.handler(config, args) or EXIT_OK)
    except InboxsortError as exc:
        print(f"inboxsort: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
