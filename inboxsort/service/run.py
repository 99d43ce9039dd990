"""`inboxsort run`: checks, database and model, then the daemon until a signal stops it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from inboxsort.config import Config
from inboxsort.db import Database, database_write_problem, open_database
from inboxsort.db.locks import FleetLock
from inboxsort.db.session import DAEMON_BUSY_TIMEOUT_MS
from inboxsort.errors import ConfigError, ModelError
from inboxsort.model.classifier import Classifier, warm_up
from inboxsort.model.cores import share_cores
from inboxsort.model.registry import ModelStore
from inboxsort.service.checks import check_records, failures, startup_checks
from inboxsort.service.daemon import Daemon
from inboxsort.service.lock import one_daemon
from inboxsort.service.notify import Notifier

log = logging.getLogger(__name__)


def prepare(config: Config) -> tuple[Database, ModelStore, Classifier]:
    """Start-up checks, database and model; a problem is one line and exit code 2."""
    checks = startup_checks(config)
    for check in checks:
        if check.status == "WARN":
            log.warning("%s: %s. %s", check.name, check.detail, check.fix)
    bad = failures(checks)
    if bad:
        raise ConfigError("; ".join(f"{c.name}: {c.detail}. {c.fix}".strip() for c in bad))
    # Before the model loads: a read-only database would otherwise fail at the first write.
    unwritable = database_write_problem(config.database.url)
    if unwritable:
        raise ConfigError("; ".join(unwritable))
    # A short wait inside SQLite for another writer's lock: the ledger's retries take over,
    # and those end when the daemon stops (a clean stop stays within 10 s).
    db = open_database(config.database.url, busy_timeout_ms=DAEMON_BUSY_TIMEOUT_MS)
    records = check_records(config, db)  # a deleted or emptied database beside a full library
    if records.status == "WARN":
        log.warning("%s: %s. %s", records.name, records.detail, records.fix)
    store = ModelStore(config.paths.models, db)
    workers = config.batch.inference_workers
    try:
        active = store.active_version()
        if store.serving(active, config.serving.runtime)[0] == "keras":
            # TensorFlow's pools are fixed by its first op: split them before the model loads.
            # With LiteRT, TensorFlow is never imported here at all.
            share_cores(workers)
        classifier = store.load(active, runtime=config.serving.runtime, workers=workers)
        warm_up(classifier, max_batch=config.batch.max_size)
    except ModelError as exc:
        db.close()
        raise ConfigError(str(exc)) from None
    return db, store, classifier


def run(config: Config, *, once: bool = False) -> int:
    """Run the daemon until SIGTERM/SIGINT (or, with `once`, until the inbox is empty).

    One daemon per database and per inbox: a second one (`--once` too) is refused with exit
    code 2, naming the running one's pid, before anything is loaded.
    """
    with one_daemon(config):
        notifier = Notifier.from_environ()
        notifier.status("checking folders and loading the model")
        db, store, classifier = prepare(config)
        node_lock = FleetLock(db, f"node:{config.node.name}")
        if not node_lock.acquire():
            db.close()
            raise ConfigError(
                f"another daemon runs as node {config.node.name!r} on this database; "
                "give each daemon its own [node] name"
            )
        daemon = Daemon(
            config, db=db, store=store, classifier=classifier, notifier=notifier, once=once
        )
        restore = _install_signals(daemon)
        try:
            daemon.start()
            daemon.supervise()
        finally:
            daemon.close()
            restore()
            notifier.close()
            node_lock.release()
            db.close()
    return 0


def _install_signals(daemon: Daemon) -> Callable[[], None]:
    """SIGTERM/SIGINT stop, SIGHUP reloads the model; returns a function restoring the old ones."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: finishing the batch in flight", signal.Signals(signum).name)
        daemon.stop()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        daemon.reload_event.set()

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGTERM, on_stop),
            (signal.SIGINT, on_stop),
            (signal.SIGHUP, on_hup),
        )
    }

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
