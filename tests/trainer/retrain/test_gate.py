"""The promotion gate on its own: figures in, verdict and reason out."""

from __future__ import annotations

from inboxsort.trainer.evaluate import Scores
from inboxsort.trainer.retrain.gate import judge
from inboxsort.trainer.retrain.records import Judged


def m(correct: int, n: int) -> Scores:
    """Figures with only what the gate reads: n, correct and accuracy."""
    accuracy = correct / n if n else None
    return Scores(n=n, correct=correct, accuracy=accuracy, loss=None, confusion=(), per_class={})


def both(gate_set: Scores | None, corrections: Scores | None) -> Judged:
    return Judged(gate_set=gate_set, corrections=corrections)


def test_gate_promotes_only_when_corrections_improve_and_gate_set_holds():
    assert judge(both(m(90, 100), m(2, 5)), both(m(89, 100), m(3, 5)), tolerance=0.01)[0]
    promote, reason = judge(both(m(90, 100), m(2, 5)), both(m(88, 100), m(5, 5)), tolerance=0.01)
    assert not promote and "beyond tolerance" in reason
    promote, reason = judge(both(m(90, 100), m(3, 5)), both(m(95, 100), m(3, 5)), tolerance=0.01)
    assert not promote and "must improve" in reason


def test_gate_without_held_out_corrections_says_so_and_uses_the_gate_set():
    promote, reason = judge(both(m(9, 10), None), both(m(9, 10), None), tolerance=0)
    assert promote and "no held-out corrections" in reason
    promote, reason = judge(both(None, None), both(None, None), tolerance=1)
    assert not promote and "nothing to judge by" in reason
