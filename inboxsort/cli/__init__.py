"""The `inboxsort` command line: parse arguments, load config once, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inboxsort import __version__
from inboxsort.config import Config, find_config, load_config
from inboxsort.errors import InboxsortError
from inboxsort.model.nativelog import ExpectedRetracing

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
    # APScheduler narrates its own bookkeeping at INFO ("Adding job tentatively", "Scheduler
    # started"); the schedule module says what matters in one line.
    for noisy in ("tensorflow", "absl", "h5py", "PIL", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    tensorflow_log = logging.getLogger("tensorflow")
    if not any(isinstance(f, ExpectedRetracing) for f in tensorflow_log.filters):
        tensorflow_log.addFilter(ExpectedRetracing())


# TensorFlow's native INFO and WARNING lines, once its logging is set up: read only from the
# environment, and only before TensorFlow is imported. Errors still show. The lines printed
# before its logging is set up ignore this (model/nativelog.py drops those). A user's own
# setting wins.
QUIET_NATIVE_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def quiet_native_logs() -> None:
    """Set the environment that keeps TensorFlow's native INFO and WARNING lines off stderr."""
    for key, value in QUIET_NATIVE_ENV.items():
        os.environ.setdefault(key, value)


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: also takes --config and -v after the command name.

    SUPPRESS as default: an option not repeated after the command keeps the value given before
    it (argparse copies only what a subparser set).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--config", type=Path, default=argparse.SUPPRESS, help="config file (as before COMMAND)"
        )
        self.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )


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
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )

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
    quiet_native_logs()
    parser = build_parser()
    args_list = sys.argv[1:] if argv is None else list(argv)
    if not args_list:
        # A bare `inboxsort` is a usage error, but the list of commands is what helps.
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    args = parser.parse_args(args_list)
    try:
        config = load_config(find_config(args.config))
        setup_logging(config, verbose=args.verbose)
        return int(args.handler(config, args) or EXIT_OK)
    except InboxsortError as exc:
        print(f"inboxsort: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
