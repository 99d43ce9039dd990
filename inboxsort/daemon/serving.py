"""Serving: the inference workers. Dynamic batches → predict_on_batch → filing; hot-swaps models."""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inboxsort.classifier import Classifier
from inboxsort.daemon.batching import Batcher
from inboxsort.daemon.filing import Filer
from inboxsort.daemon.intake import Intake
from inboxsort.daemon.records import Decoded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchReport:
    """What the last batch did, for the heartbeat and systemd's status line."""

    size: int
    millis: float
    at: float
    model_version: int


def warm_up(classifier: Classifier, *, max_batch: int) -> None:
    """Run the model once at batch 1 and at the full batch size before it serves."""
    size = classifier.image_size
    # Two batch sizes make TensorFlow trace a graph with a free batch dimension, so later
    # batches of any size do not pay for a retrace while images wait.
    for n in (1, max_batch):
        classifier.predict(np.zeros((n, size, size, 3), dtype=np.uint8))


def share_cores(workers: int) -> None:
    """Split the cores between `workers` inference workers; call before TensorFlow runs an op."""
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0))
    # Batches side by side, each on its share of the cores, beat one batch on all of them: a
    # kernel split over every core waits for its slowest shard, and on a small machine a
    # decode thread preempting one shard stalls the whole op (on 2 cores: 90 against 77
    # images/s end to end, README "Results").
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cores // workers))
        tf.config.threading.set_inter_op_parallelism_threads(max(2, workers))
    except RuntimeError:  # TensorFlow already ran here (several daemons in one test process)
        log.debug("TensorFlow is already initialised; its thread pools stay as they are")


class Server:
    """The inference stage; `run` is a worker thread (one or more). Never dies on one batch."""

    def __init__(
        self,
        *,
        classifier: Classifier,
        intake: Intake,
        filer: Filer,
        max_size: int,
        max_delay: float,
        ping: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.classifier = classifier
        self.intake = intake
        self.filer = filer
        self.batcher: Batcher[Decoded] = Batcher(max_size, max_delay)
        self._ping = ping
        self._clock = clock
        self._offer: Classifier | None = None
        self._offer_lock = threading.Lock()
        self._batch_lock = threading.Lock()
        self._file_lock = threading.Lock()
        self.processed = 0
        self.failed = 0
        self.last: BatchReport | None = None
        self.swap_pause_ms: float | None = None

    def offer(self, classifier: Classifier) -> None:
        """Serve `classifier` from the next batch on (it must already be warmed up)."""
        with self._offer_lock:
            self._offer = classifier

    def image_size(self) -> int:
        """The input size decoders should produce for the model about to serve."""
        with self._offer_lock:
            return (self._offer or self.classifier).image_size

    def queued(self) -> int:
        """Decoded images waiting for a batch."""
        return len(self.batcher) + self.intake.ready.qsize()

    def run(self, stop: threading.Event) -> None:
        """One inference worker: take batches and classify them until `stop`.

        Several workers may run this side by side. Each finishes its batch in flight first.
        """
        while not stop.is_set():
            self._ping()
            job = self._next_batch()
            if job is not None:
                self._process(*job)
        # Batched but not classified: released with no row, so they stay in the inbox and the
        # next start files them. Only the batch in flight is worth finishing in 10 s.
        with self._batch_lock:
            leftover = self.batcher.take()
            while len(self.batcher):
                leftover += self.batcher.take()
            while True:
                try:
                    leftover.append(self.intake.ready.get_nowait())
                except queue.Empty:
                    break
        self.intake.done(leftover)

    def _next_batch(self) -> tuple[Classifier, list[Decoded]] | None:
        """A due batch and the model to classify it with, or None after a short wait."""
        # One worker batches at a time; the others are predicting or filing meanwhile, so a
        # batch keeps filling while every worker is busy, as Triton's batcher does.
        with self._batch_lock:
            self._collect()
            self._swap()
            if self.batcher.due(self._clock()):
                return self.classifier, self.batcher.take()
        return None

    def _collect(self) -> None:
        wait = self.batcher.wait_time(self._clock())
        try:
            item = self.intake.ready.get(timeout=0.1 if wait is None else min(wait, 0.1))
        except queue.Empty:
            return
        self.batcher.add(item, self._clock())
        # Drain what is already there so a flood fills whole batches at once.
        while len(self.batcher) < self.batcher.max_size:
            try:
                self.batcher.add(self.intake.ready.get_nowait(), self._clock())
            except queue.Empty:
                return

    def _swap(self) -> None:
        with self._offer_lock:
            offered, self._offer = self._offer, None
        if offered is None:
            return
        start = time.perf_counter()
        old, self.classifier = self.classifier, offered
        self.swap_pause_ms = (time.perf_counter() - start) * 1000
        log.info(
            "now serving model version %d (was %d); inference paused %.2f ms for the swap",
            offered.version,
            old.version,
            self.swap_pause_ms,
        )

    def _process(self, classifier: Classifier, batch: list[Decoded]) -> None:
        start = time.perf_counter()
        size = classifier.image_size
        good = [i for i in batch if i.pixels is not None and i.pixels.shape[0] == size]
        # Decoded for a model that has just been swapped out: decode again at the new size.
        stale = [i for i in batch if i.pixels is not None and i.pixels.shape[0] != size]
        try:
            labelled = self._classify(classifier, good)
            bad = [i for i in batch if not i.ok]
            # Filing is one batch at a time: duplicate detection and free names look at what
            # the batches before filed.
            with self._file_lock:
                outcome = self.filer.file_batch(labelled + bad)
                self.processed += outcome.filed + outcome.duplicates
                self.failed += outcome.failed
        except Exception:  # the edge for one batch: the daemon keeps serving
            log.exception("batch of %d failed; its images stay in the inbox to retry", len(batch))
            self.intake.done(batch, retry=batch)
            return
        retry = {i.claim.path for i in outcome.retry} | {i.claim.path for i in stale}
        self.intake.done(batch, retry=[i for i in batch if i.claim.path in retry])
        millis = (time.perf_counter() - start) * 1000
        self.last = BatchReport(len(batch), millis, time.time(), classifier.version)
        log.info(
            "batch of %d in %.0f ms: %d filed, %d failed, %d duplicates, %d vanished, %d to retry",
            len(batch),
            millis,
            outcome.filed,
            outcome.failed,
            outcome.duplicates,
            outcome.vanished,
            len(retry),
        )

    @staticmethod
    def _classify(classifier: Classifier, items: list[Decoded]) -> list[Decoded]:
        if not items:
            return []
        pixels = np.stack([i.pixels for i in items if i.pixels is not None])
        predictions = classifier.predict(pixels)
        return [
            dataclasses.replace(i, label=p.label, score=p.score, model_version=classifier.version)
            for i, p in zip(items, predictions, strict=True)
        ]
