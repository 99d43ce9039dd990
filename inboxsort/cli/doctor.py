"""`inboxsort doctor`: run every environment check and print one line per check."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inboxsort.config import ENV_VAR, Config

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


def no_config_lines(config: Config) -> list[str]:
    """What doctor says with no config file: where it looked, and what the defaults would use."""
    where = ", ".join(
        f"{field.name} {getattr(config.paths, field.name)}"
        for field in dataclasses.fields(config.paths)
    )
    return [
        f"FAIL  config: no config file found (no --config, ${ENV_VAR} unset, no config.toml in "
        f"{Path.cwd()}); nothing was checked or created; fix: run it in the folder that holds "
        "config.toml, or pass --config FILE (an empty file means every default, under its folder)",
        f"      without a config file inboxsort uses the built-in defaults: {where}, "
        f"database {config.database.url}",
    ]


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    """Print each check; exit 1 if any failed (warnings do not count)."""
    from inboxsort.service.checks import doctor_checks, failures

    if config.source is None:
        # The checks create missing folders: outside a project that would leave a var/ tree
        # behind and report OK on a setup nobody made.
        for line in no_config_lines(config):
            print(line, flush=True)
        return 1
    checks = doctor_checks(config)
    for check in checks:
        print(format_check(check), flush=True)
    return 1 if failures(checks) else 0
