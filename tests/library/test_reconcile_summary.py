"""The start-up reconcile line reads as a sentence, not as a dataclass repr (issue 15)."""

from __future__ import annotations

from inboxsort.library.reconcile import ReconcileReport


def test_nothing_missing():
    assert ReconcileReport(checked=120).summary() == "120 filed image(s) checked, none missing"


def test_moves_corrections_and_deletions_are_named():
    report = ReconcileReport(checked=4, missing=3, moved=2, corrected=2, deleted=1)
    assert report.summary() == (
        "4 filed image(s) checked, 3 missing since the last run: 2 found moved "
        "(2 of them into another class: corrections), 1 deleted"
    )
    assert "ReconcileReport(" not in report.summary()


def test_rows_that_changed_meanwhile_are_counted():
    report = ReconcileReport(checked=5, missing=2, moved=1)
    assert report.summary().endswith(": 1 found moved, 0 deleted, 1 changed meanwhile")
