"""The model being served now: one owner, read by every stage through methods, swapped safely."""

from __future__ import annotations

import logging
import threading
import time

from inboxsort.model.classifier import Classifier

log = logging.getLogger(__name__)


class LiveModel:
    """Holds the serving classifier and the one offered to replace it; thread-safe.

    The service offers a loaded, warmed-up classifier; an inference worker swaps it in between
    two batches, so no batch ever sees two models. Until then, decoders already produce the
    offered model's input size and the library tracker already knows its classes.
    """

    def __init__(self, classifier: Classifier) -> None:
        self._lock = threading.Lock()
        self._current = classifier
        self._offered: Classifier | None = None
        self.swap_pause_ms: float | None = None

    def current(self) -> Classifier:
        """The classifier serving now."""
        with self._lock:
            return self._current

    def version(self) -> int:
        """The version serving now."""
        return self.current().version

    def _upcoming(self) -> Classifier:
        with self._lock:
            return self._offered or self._current

    def image_size(self) -> int:
        """The input size decoders should produce: the offered model's, else the current one's."""
        return self._upcoming().image_size

    def classes(self) -> tuple[str, ...]:
        """The classes of the offered model, else of the current one."""
        return self._upcoming().classes

    def offer(self, classifier: Classifier) -> None:
        """Serve `classifier` from the next batch on (it must already be warmed up)."""
        with self._lock:
            self._offered = classifier

    def swap(self) -> Classifier:
        """Swap in an offered classifier, if any; returns the one to classify the next batch."""
        with self._lock:
            offered, self._offered = self._offered, None
            if offered is None:
                return self._current
            start = time.perf_counter()
            old, self._current = self._current, offered
            self.swap_pause_ms = (time.perf_counter() - start) * 1000
        log.info(
            "now serving model version %d (was %d); inference paused %.2f ms for the swap",
            offered.version,
            old.version,
            self.swap_pause_ms,
        )
        return offered
