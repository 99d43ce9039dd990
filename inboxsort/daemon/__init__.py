"""The daemon: watch the inbox, settle, decode, batch, classify, file, record; hot-swap models."""

from __future__ import annotations

from inboxsort.daemon.service import Daemon, run

__all__ = ["Daemon", "run"]
