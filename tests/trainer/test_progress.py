"""Training progress: ticks from a real Keras fit; a live line on a terminal, else log lines."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest

from inboxsort.trainer.progress import (
    LiveLine,
    Meter,
    PeriodicLines,
    Throttled,
    Tick,
    console_sink,
    describe,
    keras_callback,
)
from inboxsort.trainer.retrain.child import TickReader


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_real_fit_reports_every_batch_and_every_epoch_across_two_fits():
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((10, 3), np.float32), np.zeros((10,), np.float32)
    ticks: list[Tick] = []
    # The recipe's two phases are two fit() calls whose epochs add up: 1 + 2 of 3.
    meter = Meter(epochs=3, steps=3, batch_size=4, images=10)
    callback = keras_callback(meter, ticks.append)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[callback])
    model.fit(x, y, batch_size=4, epochs=3, initial_epoch=1, verbose=0, callbacks=[callback])

    ends = [t for t in ticks if t.epoch_done]
    assert [(t.epoch, t.epochs) for t in ends] == [(1, 3), (2, 3), (3, 3)]
    assert [(t.epoch, t.step) for t in ticks if not t.epoch_done][:3] == [(1, 1), (1, 2), (1, 3)]
    assert "loss" in ends[0].metrics
    assert ends[-1].eta_seconds == 0
    assert all(t.images_per_second > 0 for t in ticks)


def test_the_meter_counts_images_per_second_and_time_left():
    clock = Clock()
    meter = Meter(epochs=2, steps=4, batch_size=8, images=30, clock=clock)
    meter.epoch_begin(0)
    clock.now += 2.0
    tick = meter.batch_end(0)  # 8 images in 2 s; 7 steps left at 2 s each
    assert (tick.images_per_second, tick.eta_seconds) == (4.0, 14.0)
    for batch in (1, 2, 3):
        clock.now += 2.0
        meter.batch_end(batch)
    clock.now += 5.0  # validation: not training, not counted
    end = meter.epoch_end(0, {"loss": 0.5, "note": "text is left out"})
    assert (end.images_per_second, end.eta_seconds, end.metrics) == (30 / 8, 8.0, {"loss": 0.5})
    assert describe(end) == "epoch 1/2, 3.8 images/s, loss 0.5000, about 8 s left"


def test_a_terminal_gets_one_live_line_kept_at_each_epoch_end():
    screen = Terminal()
    sink = console_sink(label="train", stream=screen)
    assert isinstance(sink, LiveLine)
    sink(Tick(1, 2, 1, 4, 10.0, 75.0))
    sink(Tick(1, 2, 2, 4, 10.0, 61.0))
    sink(Tick(1, 2, 4, 4, 10.0, 45.0, epoch_done=True))
    text = screen.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.split("\r")[1].rstrip() == (
        "train: epoch 1/2, step 1/4, 10.0 images/s, about 1 min 15 s left"
    )
    # Padded over the longer line before it, which would otherwise show through.
    last = text.split("\r")[-1]
    assert last.rstrip(" \n") == "train: epoch 1/2, 10.0 images/s, about 45 s left"
    assert len(last) > len(last.rstrip(" \n")) + 1


def test_a_log_gets_a_line_per_epoch_and_one_every_period_between(caplog):
    assert isinstance(console_sink(label="x", stream=io.StringIO()), PeriodicLines)
    clock = Clock()
    sink = PeriodicLines(label="retrain", every=30, clock=clock)
    caplog.set_level(logging.INFO, logger="inboxsort.trainer.progress")
    for step in range(1, 61):
        clock.now += 1.0
        sink(Tick(1, 1, step, 60, 5.0, 60.0 - step))
    sink(Tick(1, 1, 60, 60, 5.0, 0.0, epoch_done=True))
    assert [r.getMessage() for r in caplog.records] == [
        "retrain: epoch 1/1, step 30/60, 5.0 images/s, about 30 s left",
        "retrain: epoch 1/1, step 60/60, 5.0 images/s, done",
        "retrain: epoch 1/1, 5.0 images/s, done",
    ]


def test_the_retrain_child_ticks_reach_the_parent_through_its_output(tmp_path: Path):
    log = tmp_path / "worker.log"
    got: list[Tick] = []
    reader = TickReader(log, got.append)
    first = Tick(1, 3, 2, 5, 12.5, 40.0)
    with open(log, "w") as out:
        out.write("a line of the child's own\n" + first.to_line() + "\n")
        out.write(Tick(1, 3, 5, 5, 12.0, 30.0, epoch_done=True, metrics={"loss": 0.25}).to_line())
        out.flush()
        reader.read()
        assert got == [first]  # the second is not whole yet: no newline
        out.write("\n")
    reader.read()
    assert got[1].metrics == {"loss": 0.25} and got[1].epoch_done


@pytest.mark.parametrize("seconds", [0.4, 2.0])
def test_throttled_passes_epoch_ends_always_and_steps_at_its_rate(seconds: float):
    clock = Clock()
    got: list[Tick] = []
    throttled = Throttled(got.append, every=1.0, clock=clock)
    for step in range(1, 6):
        clock.now += seconds
        throttled(Tick(1, 1, step, 5, 1.0, None))
    throttled(Tick(1, 1, 5, 5, 1.0, 0.0, epoch_done=True))
    steps = [t.step for t in got if not t.epoch_done]
    assert steps == ([1, 4] if seconds < 1 else [1, 2, 3, 4, 5])
    assert got[-1].epoch_done
