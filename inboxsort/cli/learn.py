"""Learning commands: retrain."""

from __future__ import annotations

import argparse
import json
from typing import Any

from inboxsort.config import Config


def add_commands(sub: Any) -> None:
    """Register the learning commands on the CLI's subparsers."""
    retrain = sub.add_parser(
        "retrain",
        help="fine-tune the active model on new corrections now (as the schedule would)",
        description="Runs even when retrain.enabled is false: that key governs the schedule. "
        "Exit status 0 when it ran or skipped, 1 when training failed.",
    )
    retrain.add_argument(
        "--force", action="store_true", help="run even below retrain.min_new_corrections"
    )
    retrain.add_argument("--json", action="store_true", help="print the outcome as JSON")
    retrain.set_defaults(handler=cmd_retrain)


def cmd_retrain(config: Config, args: argparse.Namespace) -> int:
    """Run one retrain attempt and report it."""
    from inboxsort.trainer.progress import console_sink
    from inboxsort.trainer.retrain.run import describe_outcome, retrain

    outcome = retrain(config, force=args.force, progress=console_sink(label="retrain"))
    if args.json:
        print(json.dumps(outcome.to_json(), indent=2))
    else:
        print(describe_outcome(outcome))
    return 1 if outcome.failed else 0
