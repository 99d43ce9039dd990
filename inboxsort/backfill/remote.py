"""`--ray-address ray://HOST:PORT`: the backfill's driver runs on the cluster, as a Ray task.

Ray Data cannot stream through Ray Client (its executor needs a driver of the cluster's own),
so through a ray:// address the command starts the whole backfill as one task on the cluster:
its scan, its pool and its one writer run there, against the paths and the database as the
cluster's nodes see them. Progress lines come back through Ray's log forwarding; Ctrl-C here
cancels the task, which commits what it has and stops as a local run does.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any, TextIO

from inboxsort.config import Config
from inboxsort.errors import InboxsortError

if TYPE_CHECKING:
    from inboxsort.backfill.run import Options

EXIT_INTERRUPTED = 130


def is_client_address(address: str | None) -> bool:
    """Whether `address` is a Ray Client address (ray://HOST:PORT)."""
    return address is not None and address.startswith("ray://")


def _driver(config: Config, options: Options) -> int:
    """The backfill, run inside a Ray task on the cluster (Ray is already up there)."""
    from inboxsort.backfill.run import backfill

    return backfill(config, options, out=sys.stdout, tty=False)


def backfill_through_client(config: Config, options: Options, *, out: TextIO) -> int:
    """Connect through Ray Client and run the backfill's driver on the cluster."""
    from inboxsort.backfill.pipeline import start_ray

    own = start_ray(options.address, forward_logs=True)
    import ray

    try:
        # No CPU reserved: the driver waits on the pool and writes rows, as a local one does.
        task: Any = ray.remote(num_cpus=0, max_retries=0)(_driver)
        # Folders as given here, made absolute: the task does not run in this folder.
        roots = [root.absolute() for root in options.roots]
        ref = task.remote(config, dataclasses.replace(options, roots=roots, address=None))
        try:
            code = int(ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            # The cluster's own refusal (a missing folder, a model that cannot serve) reads as
            # it would here, without the task's traceback around it.
            if isinstance(exc.cause, InboxsortError):
                raise exc.cause from None
            raise
        except KeyboardInterrupt:
            ray.cancel(ref)
            out.write("backfill: interrupted; the cluster's run commits what it has and stops\n")
            return EXIT_INTERRUPTED
        return code
    finally:
        if own:
            ray.shutdown()
