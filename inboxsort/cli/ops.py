"""Operating commands: run, db upgrade."""

from __future__ import annotations

import argparse
from typing import Any

from inboxsort.config import Config


def add_commands(sub: Any) -> None:
    """Register the operating commands on the CLI's subparsers."""
    db = sub.add_parser("db", help="database maintenance")
    dsub = db.add_subparsers(dest="action", required=True)
    dsub.add_parser("upgrade", help="apply schema migrations")
    db.set_defaults(handler=cmd_db)


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    """Run the daemon (or one pass over the inbox with --once)."""
    from inboxsort.service.run import run

    return run(config, once=args.once)


def cmd_db(config: Config, args: argparse.Namespace) -> int:
    """Apply migrations up to the head revision."""
    from inboxsort.db.session import current_revision, open_database

    db = open_database(config.database.url)
    print(f"database at revision {current_revision(db)}")
    return 0
