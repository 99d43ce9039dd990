"""`inboxsort doctor`: run every environment check and print one line per check."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from inboxsort.config import Config

if TYPE_CHECKING:
    from inboxsort.service.checks import Check


def add_commands(sub: Any) -> None:
    """Register doctor on the CLI's subparsers."""
    doctor = sub.add_parser("doctor", help="check folders, inotify, CPU, database and model")
    doctor.set_defaults(handler=cmd_doctor)


def format_check(check: Check) -> str:
    """One OK/WARN/FAIL line; failures and warnings carry their fix."""
    line = f"{check.status:<4}  {check.name}: {check.detail}"
    if check.fix and not check.ok:
        line += f"; fix: {check.fix}"
    # One line per check, whatever a library put in an error message.
    return " ".join(line.splitlines())


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    """Print each check; exit 1 if any failed (warnings do not count)."""
    from inboxsort.service.checks import doctor_checks, failures

    checks = doctor_checks(config)
    for check in checks:
        print(format_check(check), flush=True)
    return 1 if failures(checks) else 0
