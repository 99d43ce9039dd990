"""`inboxsort backfill`: walk, leave out what is on record, classify on Ray, record, summarise."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from inboxsort.backfill import pipeline
from inboxsort.backfill.filing import FilingWriter, check_apart, recover_moves
from inboxsort.backfill.progress import Progress, summary
from inboxsort.backfill.remote import EXIT_INTERRUPTED, backfill_through_client, is_client_address
from inboxsort.backfill.scan import Candidate, check_roots, unrecorded, walk
from inboxsort.backfill.writer import Result, Writer, unpack
from inboxsort.config import Config
from inboxsort.db import Database, open_database
from inboxsort.errors import ConfigError
from inboxsort.model.registry import ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    roots: Sequence[Path]
    address: str | None = None
    file: bool = False
    dry_run: bool = False
    every: float = 10.0  # seconds between progress lines when not on a terminal


def _unreadable(candidate: Candidate) -> Result:
    """The failed result of a file that is never read (a symlink, a FIFO, a bad name)."""
    return Result(
        path=candidate.text,
        size=candidate.size,
        mtime_ns=candidate.mtime_ns,
        device=candidate.device,
        inode=candidate.inode,
        sha256=None,
        label=None,
        score=None,
        error=candidate.problem,
        node=None,
        version=None,
    )


def _model(config: Config, db: Database) -> pipeline.Artifact:
    """The active version's artifact, as the daemon would serve it."""
    store = ModelStore(config.paths.models, db)
    version = store.active_version()
    runtime, why = store.serving(version, config.serving.runtime)
    if runtime == "none":
        raise ConfigError(f"backfill: model version {version} cannot serve: {why}")
    if why is not None:
        log.info("model version %d serves with Keras: %s", version, why)
    return pipeline.read_artifact(store.folder(version), version=version, runtime=runtime)


def _dry_run(
    out: TextIO, todo: list[Candidate], skipped: int, artifact: pipeline.Artifact, *, file: bool
) -> int:
    bad = Counter(c.problem for c in todo if c.problem)
    where = "and file them into the library" if file else "leaving them where they are"
    out.write(
        f"backfill --dry-run: would classify {len(todo) - sum(bad.values())} file(s) with model "
        f"version {artifact.version} ({artifact.runtime}), {where}; {skipped} skipped (already "
        f"on record); {sum(bad.values())} would be recorded as failed without being read\n"
    )
    for reason, n in bad.most_common():
        out.write(f"  {n} × {reason}\n")
    return 0


def _writer(config: Config, db: Database, todo: list[Candidate], options: Options) -> Writer:
    """The plain writer, or with --file the daemon's filing."""
    if not options.file:
        return Writer(db)
    return FilingWriter(db, paths=config.paths, filing=config.filing, candidates=todo)


def backfill(config: Config, options: Options, *, out: TextIO, tty: bool) -> int:
    """Run one backfill; the exit code (130 when interrupted, after committing what was done)."""
    if is_client_address(options.address):
        return backfill_through_client(config, options, out=out)
    roots = check_roots(options.roots)
    if options.file:
        check_apart(roots, config.paths)
    started = time.monotonic()
    db = open_database(config.database.url)
    try:
        artifact = _model(config, db)
        if options.file and not options.dry_run:
            recover_moves(db, roots, config.paths)
        todo, skipped = unrecorded(db, walk(roots, config.watch.ignore))
        if options.dry_run:
            return _dry_run(out, todo, skipped, artifact, file=options.file)
        writer = _writer(config, db, todo, options)
        writer.tally.skipped = skipped
        writer.write([_unreadable(c) for c in todo if c.problem])
        readable = [c for c in todo if not c.problem]
        interrupted = False
        try:
            _classify(readable, artifact, writer, options, out=out, tty=tty)
        except KeyboardInterrupt:
            interrupted = True
        out.write(
            summary(writer.tally, elapsed=time.monotonic() - started, interrupted=interrupted)
        )
        return EXIT_INTERRUPTED if interrupted else 0
    finally:
        db.close()


def _classify(
    todo: list[Candidate],
    artifact: pipeline.Artifact,
    writer: Writer,
    options: Options,
    *,
    out: TextIO,
    tty: bool,
) -> None:
    """Run the Ray pipeline over `todo`, recording each batch as it comes back."""
    if not todo:
        return
    own = pipeline.start_ray(options.address)
    import ray

    batches = None
    try:
        size = pipeline.image_size(artifact)
        progress = Progress(len(todo), out=out, tty=tty, every=options.every)
        first = writer.tally.done
        actors = min(len(todo), pipeline.actor_count())
        batches = pipeline.results(todo, artifact, size=size, actors=actors)
        for batch in batches:
            writer.write(unpack(batch))
            progress.update(writer.tally.done - first)
        progress.update(writer.tally.done - first, final=True)
    finally:
        # Closed before Ray stops: an interrupted stream's executor thread must not outlive Ray.
        if batches is not None:
            batches.close()
        if own:
            ray.shutdown()
