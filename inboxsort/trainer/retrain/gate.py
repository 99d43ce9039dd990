"""The promotion gate: does a candidate beat the active model on images neither trained on?"""

from __future__ import annotations

from inboxsort.trainer.retrain.records import Judged

_FLOAT_SLACK = 1e-9  # accuracies are ratios of small integers; do not let rounding decide


def judge(active: Judged, candidate: Judged, *, tolerance: float) -> tuple[bool, str]:
    """The promotion gate; returns (promote, reason).

    Both models are scored on the same two sets: the gate set (the test split of train.data,
    or a hash-held-out share of confirmed library images) and the held-out corrections (the
    hash-held-out share of the corrections, never trained on). The candidate is promoted only if
      - its accuracy on the gate set is at most `tolerance` below the active model's, and
      - it gets strictly more held-out corrections right than the active model.
    With no held-out corrections only the first condition applies (the reason says so); with
    an empty gate set only the second; with neither there is no evidence and nothing is promoted.
    """
    parts: list[str] = []
    verdicts: list[bool] = []
    a_set, c_set = active.gate_set, candidate.gate_set
    if (
        a_set is not None
        and c_set is not None
        and a_set.n
        and a_set.accuracy is not None
        and c_set.accuracy is not None
    ):
        ok = c_set.accuracy >= a_set.accuracy - tolerance - _FLOAT_SLACK
        verdicts.append(ok)
        parts.append(
            f"gate-set accuracy {a_set.accuracy:.4f} → {c_set.accuracy:.4f} on "
            f"{a_set.n} images ({'within' if ok else 'beyond'} tolerance {tolerance:g})"
        )
    else:
        parts.append("no gate-set images")
    a_cor, c_cor = active.corrections, candidate.corrections
    if a_cor is not None and c_cor is not None and a_cor.n:
        ok = c_cor.correct > a_cor.correct
        verdicts.append(ok)
        parts.append(
            f"held-out corrections right {a_cor.correct} → {c_cor.correct} of {a_cor.n}"
            + ("" if ok else " (must improve)")
        )
    else:
        parts.append("no held-out corrections, judged on the gate set alone")
    promote = bool(verdicts) and all(verdicts)
    if not verdicts:
        parts.append("nothing to judge by")
    return promote, ("promoted: " if promote else "not promoted: ") + "; ".join(parts)
