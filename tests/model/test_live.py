"""The live model: one owner of what is served, read by every stage, swapped between batches."""

from __future__ import annotations

import threading

from inboxsort.model.classifier import Classifier
from inboxsort.model.live import LiveModel


def _classifier(version: int, *, size: int = 160, classes: tuple[str, ...] = ("cats", "dogs")):
    # The live model never runs the network: it only hands classifiers out.
    return Classifier(model=None, classes=classes, image_size=size, version=version)


def test_an_offer_is_seen_by_decoders_and_the_tracker_before_the_swap() -> None:
    live = LiveModel(_classifier(1))
    live.offer(_classifier(2, size=224, classes=("birds", "cats", "dogs")))
    # Decoders already produce the new size and the tracker knows the new classes...
    assert live.image_size() == 224
    assert live.classes() == ("birds", "cats", "dogs")
    # ...while the batch in flight is still classified by the old model.
    assert live.current().version == 1
    assert live.version() == 1


def test_swap_serves_the_offer_from_the_next_batch_once() -> None:
    live = LiveModel(_classifier(1))
    assert live.swap().version == 1  # nothing offered: the current one
    assert live.swap_pause_ms is None
    live.offer(_classifier(2))
    assert live.swap().version == 2
    assert live.current().version == 2
    assert live.swap_pause_ms is not None and live.swap_pause_ms >= 0
    assert live.swap().version == 2  # the offer is taken once


def test_a_later_offer_replaces_an_earlier_one_not_yet_swapped() -> None:
    live = LiveModel(_classifier(1))
    live.offer(_classifier(2))
    live.offer(_classifier(3))
    assert live.swap().version == 3
    assert live.swap().version == 3


def test_workers_swapping_at_once_all_end_on_the_offer() -> None:
    live = LiveModel(_classifier(1))
    live.offer(_classifier(2))
    seen: list[int] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        seen.append(live.swap().version)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [2] * 8
