"""Progress of a training run: epoch, images/s and time left, as training goes.

A `Meter` turns Keras's batch and epoch calls into `Tick`s; a sink shows them: on a terminal a
live line rewritten in place (`LiveLine`), elsewhere (journald, a pipe) a plain log line per
epoch and every `every_seconds` between (`PeriodicLines`). The retrain child sends its ticks to
the parent as JSON lines on its output; the parent shows them with the same sinks.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

log = logging.getLogger(__name__)

# A line of the retrain child's output that carries a tick, not a message.
TICK_PREFIX = "inboxsort-progress "
PERIODIC_SECONDS = 30.0


@dataclass(frozen=True)
class Tick:
    """Where a training run is: epoch (1-based) of all, step of the epoch's, speed, time left."""

    epoch: int
    epochs: int
    step: int
    steps: int
    images_per_second: float
    eta_seconds: float | None
    epoch_done: bool = False
    metrics: dict[str, float] = field(default_factory=dict)

    def to_line(self) -> str:
        """The tick as one line of the child's output."""
        return TICK_PREFIX + json.dumps(asdict(self))

    @staticmethod
    def from_line(line: str) -> Tick | None:
        """The tick a child's output line carries, or None for any other line."""
        if not line.startswith(TICK_PREFIX):
            return None
        try:
            return Tick(**json.loads(line[len(TICK_PREFIX) :]))
        except (ValueError, TypeError):
            return None


Sink = Callable[[Tick], None]


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def describe(tick: Tick) -> str:
    """The tick as text: `epoch 3/10, step 12/63, 41.2 images/s, about 2 min 10 s left`."""
    text = f"epoch {tick.epoch}/{tick.epochs}"
    if not tick.epoch_done:
        text += f", step {tick.step}/{tick.steps}"
    text += f", {tick.images_per_second:.1f} images/s"
    if tick.epoch_done and tick.metrics:
        text += ", " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(tick.metrics.items()))
    if tick.eta_seconds is not None:
        text += ", done" if tick.eta_seconds <= 0 else f", about {duration(tick.eta_seconds)} left"
    return text


class Meter:
    """Counts steps against the clock; the epochs of several fit() calls add up to `epochs`."""

    def __init__(
        self,
        *,
        epochs: int,
        steps: int,
        batch_size: int,
        images: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.epochs, self.steps = epochs, max(1, steps)
        self.batch_size, self.images = batch_size, images
        self._clock = clock
        self._epoch = 0
        self._epoch_start = self._last_batch = clock()
        self._step = 0

    def epoch_begin(self, epoch: int) -> None:
        """Keras's epoch index (0-based, counting from initial_epoch) starts."""
        self._epoch, self._step = epoch, 0
        self._epoch_start = self._last_batch = self._clock()

    def batch_end(self, batch: int) -> Tick:
        """Batch `batch` (0-based) of the epoch is done."""
        self._step = batch + 1
        self._last_batch = self._clock()
        return self._tick(done=False, metrics={})

    def epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> Tick:
        """The epoch is done; `logs` are its metrics."""
        self._step = self.steps
        numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        return self._tick(done=True, metrics=numbers)

    def _tick(self, *, done: bool, metrics: dict[str, float]) -> Tick:
        # Up to the last batch: an epoch's end also waits for validation, which trains nothing.
        elapsed = max(self._last_batch - self._epoch_start, 1e-9)
        images = min(self._step * self.batch_size, self.images)
        left_steps = (self.steps - self._step) + (self.epochs - self._epoch - 1) * self.steps
        eta = left_steps * elapsed / self._step if self._step else None
        return Tick(
            epoch=self._epoch + 1,
            epochs=self.epochs,
            step=self._step,
            steps=self.steps,
            images_per_second=images / elapsed,
            eta_seconds=eta,
            epoch_done=done,
            metrics=metrics,
        )


class LiveLine:
    """A terminal's progress: one line rewritten in place, kept when an epoch ends."""

    def __init__(self, stream: TextIO, *, label: str = "training") -> None:
        self.stream, self.label = stream, label
        self._width = 0

    def __call__(self, tick: Tick) -> None:
        """Show the tick."""
        text = f"{self.label}: {describe(tick)}"
        pad = " " * max(0, self._width - len(text))
        self._width = 0 if tick.epoch_done else len(text)
        self.stream.write(f"\r{text}{pad}" + ("\n" if tick.epoch_done else ""))
        self.stream.flush()


class PeriodicLines:
    """Progress for a log (journald, a pipe): every epoch's end, and between every `every`."""

    def __init__(
        self,
        *,
        label: str = "training",
        every: float = PERIODIC_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.every, self._clock = label, every, clock
        self._last = clock()

    def __call__(self, tick: Tick) -> None:
        """Log the tick if an epoch ended or `every` seconds passed since the last line."""
        now = self._clock()
        if tick.epoch_done or now - self._last >= self.every:
            self._last = now
            log.info("%s: %s", self.label, describe(tick))


def console_sink(*, label: str, stream: TextIO | None = None) -> Callable[[Tick], None]:
    """A live line when `stream` (stderr) is a terminal, else periodic log lines."""
    stream = stream or sys.stderr
    return LiveLine(stream, label=label) if stream.isatty() else PeriodicLines(label=label)


def keras_callback(meter: Meter, sink: Callable[[Tick], None]) -> Any:
    """A Keras callback feeding `meter`'s ticks to `sink`."""
    import keras

    # Keras passes these by these names (batch, logs): they are part of the contract.
    def on_epoch_begin(epoch: int, logs: object = None) -> None:
        meter.epoch_begin(epoch)

    def on_train_batch_end(batch: int, logs: object = None) -> None:
        sink(meter.batch_end(batch))

    def on_epoch_end(epoch: int, logs: dict[str, Any] | None = None) -> None:
        sink(meter.epoch_end(epoch, logs))

    return keras.callbacks.LambdaCallback(
        on_epoch_begin=on_epoch_begin,
        on_train_batch_end=on_train_batch_end,
        on_epoch_end=on_epoch_end,
    )


class Throttled:
    """Passes a tick on at most every `every` seconds, and every epoch's end."""

    def __init__(
        self,
        sink: Callable[[Tick], None],
        *,
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink, self.every, self._clock = sink, every, clock
        self._last = -float("inf")

    def __call__(self, tick: Tick) -> None:
        """Forward the tick if it is due."""
        now = self._clock()
        if tick.epoch_done or now - self._last >= self.every:
            self._last = now
            self.sink(tick)
