"""`inboxsort backfill PATH...`: classify an existing archive with Ray Data, exactly once."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from inboxsort.config import Config


def add_commands(sub: Any) -> None:
    """Register `backfill` on the CLI's subparsers."""
    cmd = sub.add_parser(
        "backfill",
        help="classify an existing archive where it lies (Ray Data, locally or on a cluster)",
    )
    cmd.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders to classify")
    cmd.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="join a Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a local Ray)",
    )
    cmd.add_argument(
        "--file",
        action="store_true",
        help="file each image into the library (or failed/) as the daemon does",
    )
    cmd.add_argument(
        "--dry-run", action="store_true", help="say what would be done; change nothing"
    )
    cmd.set_defaults(handler=cmd_backfill)


def cmd_backfill(config: Config, args: argparse.Namespace) -> int:
    """Run one backfill over the given folders."""
    from inboxsort.backfill.remote import EXIT_INTERRUPTED
    from inboxsort.backfill.run import Options, backfill

    options = Options(
        roots=args.paths, address=args.ray_address, file=args.file, dry_run=args.dry_run
    )
    code = backfill(config, options, out=sys.stdout, tty=sys.stdout.isatty())
    if code == EXIT_INTERRUPTED:
        # Everything is committed and the summary printed; Ray's own threads may still be
        # winding down after Ctrl-C, and a command the user interrupted must not hang on them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
