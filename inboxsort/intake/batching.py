"""Dynamic batching: a batch is due when it is full or its oldest item has waited max_delay."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Collects items into batches, as Triton's and TF Serving's batchers do; no threads."""

    def __init__(self, max_size: int, max_delay: float) -> None:
        self.max_size = max_size
        self.max_delay = max_delay
        self._items: list[T] = []
        self._oldest: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> None:
        """Queue one item; its arrival time starts the batch's clock if it is the first."""
        if not self._items:
            self._oldest = now
        self._items.append(item)

    def due(self, now: float) -> bool:
        """True when a batch should go to the model now."""
        if not self._items:
            return False
        assert self._oldest is not None
        return len(self._items) >= self.max_size or now - self._oldest >= self.max_delay

    def wait_time(self, now: float) -> float | None:
        """Seconds until the current batch falls due by age; None when empty."""
        if self._oldest is None or not self._items:
            return None
        return max(0.0, self._oldest + self.max_delay - now)

    def take(self) -> list[T]:
        """Remove and return up to max_size items (the oldest first)."""
        batch, self._items = self._items[: self.max_size], self._items[self.max_size :]
        self._oldest = None if not self._items else self._oldest
        return batch
