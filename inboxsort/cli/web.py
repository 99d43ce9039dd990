"""`inboxsort web`: serve the review page, models, dashboard and /metrics."""

from __future__ import annotations

import argparse
from typing import Any

from inboxsort.config import Config


def add_commands(sub: Any) -> None:
    """Register `web` on the CLI's subparsers."""
    web = sub.add_parser("web", help="serve the review page, dashboard and /metrics")
    web.add_argument("--host", help="address to listen on (default: web.host, 127.0.0.1)")
    web.add_argument("--port", type=_port, help="port (default: web.port)")
    web.set_defaults(handler=cmd_web)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port from 1 to 65535")
    return int(text)


def cmd_web(config: Config, args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from inboxsort.web.serve import serve

    serve(config, host=args.host, port=args.port)
    return 0
