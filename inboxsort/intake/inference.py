"""Inference: the worker threads. Dynamic batches → predict_on_batch → filing; model swaps."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inboxsort.db.histograms import (
    BATCH_LATENCY,
    BATCH_LATENCY_BOUNDS,
    BATCH_SIZE,
    BATCH_SIZE_BOUNDS,
    Histogram,
)
from inboxsort.errors import StoreError
from inboxsort.intake.batching import Batcher
from inboxsort.intake.claim import Intake
from inboxsort.intake.filing import Filer
from inboxsort.intake.records import Decoded
from inboxsort.model.classifier import Classifier
from inboxsort.model.live import LiveModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchReport:
    """What the last batch did, for the heartbeat and systemd's status line."""

    size: int
    millis: float
    at: float
    model_version: int


class BatchHistograms:
    """Every batch's size and seconds since the daemon started, for the heartbeat's JSON."""

    def __init__(self) -> None:
        self.size = Histogram(BATCH_SIZE_BOUNDS)
        self.latency = Histogram(BATCH_LATENCY_BOUNDS)

    def observe(self, size: int, seconds: float) -> None:
        """Count one batch of `size` images that took `seconds`."""
        self.size.observe(size)
        self.latency.observe(seconds)

    def to_json(self) -> dict[str, Any]:
        """The daemon_state.batch_histograms value (shape: inboxsort/db/histograms.py)."""
        return {BATCH_SIZE: self.size.to_json(), BATCH_LATENCY: self.latency.to_json()}


class InferencePool:
    """The inference stage; `run` is one worker thread, and several may run it side by side.

    Never dies on one batch.
    """

    def __init__(
        self,
        *,
        model: LiveModel,
        intake: Intake,
        filer: Filer,
        max_size: int,
        max_delay: float,
        ping: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.intake = intake
        self.filer = filer
        self.batcher: Batcher[Decoded] = Batcher(max_size, max_delay)
        self._ping = ping
        self._clock = clock
        self._batch_lock = threading.Lock()
        self._file_lock = threading.Lock()
        self.processed = 0
        self.failed = 0
        self.last: BatchReport | None = None
        self.histograms = BatchHistograms()

    def counters(self) -> dict[str, Any]:
        """The heartbeat's cumulative fields: processed, failed and the batch histograms."""
        with self._file_lock:
            return {
                "processed": self.processed,
                "failed": self.failed,
                "batch_histograms": self.histograms.to_json(),
            }

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
            self.filer.announcer.flush()  # a flood's last summary line, once its second ends
        self.filer.announcer.flush(force=True)
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
            classifier = self.model.swap()
            if self.batcher.due(self._clock()):
                return classifier, self.batcher.take()
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
        except StoreError as exc:  # a write refused, or not waited for as the daemon stops
            log.warning(
                "batch of %d not recorded; its images stay in the inbox to retry: %s",
                len(batch),
                exc,
            )
            self.intake.done(batch, retry=batch)
            return
        except Exception:  # the edge for one batch: the daemon keeps serving
            log.exception("batch of %d failed; its images stay in the inbox to retry", len(batch))
            self.intake.done(batch, retry=batch)
            return
        retry = {i.claim.path for i in outcome.retry} | {i.claim.path for i in stale}
        self.intake.done(batch, retry=[i for i in batch if i.claim.path in retry])
        seconds = time.perf_counter() - start
        millis = seconds * 1000
        with self._file_lock:
            self.histograms.observe(len(batch), seconds)
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
