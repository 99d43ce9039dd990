"""Run the web application under uvicorn on the configured address."""

from __future__ import annotations

import logging
import signal

from inboxsort.config import Config
from inboxsort.db import open_database
from inboxsort.errors import ConfigError
from inboxsort.model.registry import ModelStore

log = logging.getLogger(__name__)


def serve(config: Config, *, host: str | None = None, port: int | None = None) -> None:
    """Open the database (migrated) and serve until SIGINT or SIGTERM."""
    try:
        import uvicorn

        from inboxsort.web.app import create_app
    except ImportError as exc:
        raise ConfigError(
            f"inboxsort web needs the web extra: pip install 'inboxsort[web]' ({exc})"
        ) from None
    from inboxsort.config import LOOPBACK_HOSTS

    host = host or config.web.host
    port = port or config.web.port
    if host not in LOOPBACK_HOSTS and not config.web.token:
        raise ConfigError(f"web: listening on {host!r} needs web.token set in the config")
    db = open_database(config.database.url)
    try:
        app = create_app(config, db=db, store=ModelStore(config.paths.models, db))
        mode = " (read-only)" if config.web.read_only else ""
        log.info("serving http://%s:%d/%s", host, port, mode)
        # uvicorn catches SIGTERM, lets requests in flight finish, then raises the signal again
        # for the handler it found: ours ends the command with exit 0, as systemd expects.
        previous = signal.signal(signal.SIGTERM, _stopped)
        try:
            uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        except _Stopped:
            log.info("stopped")
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        db.close()


class _Stopped(Exception):
    """SIGTERM arrived and uvicorn has shut down."""


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped
