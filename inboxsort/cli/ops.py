"""Operating commands: run, db upgrade, db copy."""

from __future__ import annotations

import argparse
from typing import Any

from inboxsort.config import Config


def add_commands(sub: Any) -> None:
    """Register the operating commands on the CLI's subparsers."""
    db = sub.add_parser("db", help="database maintenance")
    dsub = db.add_subparsers(dest="action", required=True)
    dsub.add_parser("upgrade", help="apply schema migrations")
    copy = dsub.add_parser(
        "copy",
        help="copy every row of the configured database into another, empty one",
        description="Copy every row (ids kept) of database.url into the empty database at "
        "--to, e.g. SQLite into PostgreSQL; stop the daemon first. The target's tables are "
        "created if missing; a target holding any row is refused.",
    )
    copy.add_argument(
        "--to", required=True, metavar="URL", help="postgresql+psycopg://USER@HOST/DB"
    )
    db.set_defaults(handler=cmd_db)


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    """Run the daemon (or one pass over the inbox with --once)."""
    from inboxsort.service.run import run

    return run(config, once=args.once)


def cmd_db(config: Config, args: argparse.Namespace) -> int:
    """Apply migrations up to the head revision, or copy the database (`db copy --to URL`)."""
    from inboxsort.db.session import current_revision, open_database

    if args.action == "copy":
        return _copy(config, args.to)
    with open_database(config.database.url) as db:
        print(f"database at revision {current_revision(db)}")
    return 0


def _copy(config: Config, to: str) -> int:
    """`inboxsort db copy --to URL`: the configured database into an empty one."""
    from inboxsort.db.copy import copy_database
    from inboxsort.db.session import open_database, safe_url

    # The source is only read: never migrated, never locked for writing.
    with (
        open_database(config.database.url, readonly=True, migrate=False) as source,
        open_database(to) as target,
    ):
        result = copy_database(
            source, target, progress=lambda table, n: print(f"{table}: {n} rows", flush=True)
        )
    total = sum(result.rows.values())
    print(
        f"copied {total} rows from {safe_url(config.database.url)} to {safe_url(to)} "
        f"(schema revision {result.revision}); to use it, set [database] url to it"
    )
    return 0
